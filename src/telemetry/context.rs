//! W3C Trace Context (`traceparent`, `tracestate`): parsing the caller's, writing ours, and
//! the head sampling decision. Pure functions: no allocation except the header we write.

/// A `traceparent` as a caller sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Parses a `traceparent` value (W3C Trace Context §3.2): `version-traceid-parentid-flags`,
/// lowercase hex; version `ff` and all-zero ids are invalid. A higher version is read by its
/// first four fields when the next character is a `-` (§4.3, forward compatibility).
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_u64(&v[0..2])?;
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version != 0 && v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    let trace_id = hex_u128(&v[3..35])?;
    let span_id = hex_u64(&v[36..52])?;
    let flags = hex_u64(&v[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    s.iter()
        .try_fold(0u64, |acc, &b| Some(acc << 4 | u64::from(hex_digit(b)?)))
}

fn hex_u128(s: &[u8]) -> Option<u128> {
    s.iter()
        .try_fold(0u128, |acc, &b| Some(acc << 4 | u128::from(hex_digit(b)?)))
}

/// A `tracestate` worth relaying: at most 512 bytes of printable ASCII (§3.3.1.1: a longer
/// one may be truncated; we drop it rather than cut an entry in half).
pub fn usable_tracestate(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 512 && v.iter().all(|b| (0x20..0x7f).contains(b))
}

/// The `traceparent` for a span of ours: `00-{trace}-{span}-{flags}`.
pub fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> String {
    format!(
        "00-{trace_id:032x}-{span_id:016x}-{}",
        if sampled { "01" } else { "00" }
    )
}

/// The trace id as the access log and the response header show it.
pub fn trace_id_hex(trace_id: u128) -> String {
    format!("{trace_id:032x}")
}

/// A new non-zero trace id.
pub fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A new non-zero span id.
pub fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// The ratio sampler's decision for `trace_id`, by its low 63 bits as OpenTelemetry's
/// `TraceIdRatioBased` does, so every service with the same ratio agrees on a trace.
pub fn ratio_sampled(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let p =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        let back = traceparent(p.trace_id, p.span_id, true);
        assert_eq!(
            back,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn refuses_bad_ones() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01".as_bytes(),
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version with more fields is read by its first four.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz")
                .is_some()
        );
    }

    #[test]
    fn ratio_sampling_is_about_right() {
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| ratio_sampled(new_trace_id(), 0.25))
            .count();
        assert!((4_000..6_000).contains(&hits), "{hits}");
        assert!(ratio_sampled(new_trace_id(), 1.0));
        assert!(!ratio_sampled(new_trace_id(), 0.0));
    }
}
