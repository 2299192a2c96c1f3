//! One JSON line per request on stdout, written by a dedicated thread.
//!
//! Request handlers only push a small record into a bounded queue (never blocking, never
//! waking anyone); the writer thread drains it every few milliseconds, formats and writes. If the queue is full the record is dropped and counted
//! rather than stalling a Pingora worker. Records never carry prompts, completions or keys.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// tokio's bounded channel, used from plain threads (no runtime needed for `try_send` /
// `try_recv`): it allocates its slots in blocks of 32 as records queue up, where
// `std::sync::mpsc::sync_channel` allocated and touched all 16 Ki slots (5.4 MiB of RSS) at
// start (issue 17, docs/BENCHMARKS.md "Memory per connection").
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{channel, Receiver, Sender};

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct AccessRecord {
    pub ts: String,
    pub request_id: String,
    /// The OpenTelemetry trace id, when tracing is on (`telemetry:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub user: Option<Arc<str>>,
    /// The id of the key used (store keys: `key_...`; config keys: `cfg:` + digest prefix).
    pub key_id: Option<Arc<str>>,
    pub method: std::borrow::Cow<'static, str>,
    pub route: &'static str,
    pub path: String,
    pub provider: Option<Arc<str>>,
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    pub status: u16,
    pub latency_ms: f64,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// The tokens are the gateway's estimate: a passthrough stream reported no usage
    /// (written only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// What the response cache did (`hit`, `miss`, `bypass`; written only for cacheable
    /// requests). A hit's `cost_usd` is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
}

pub struct AccessLog {
    tx: Option<Sender<AccessRecord>>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread (when `enabled`).
    pub fn start(enabled: bool) -> Arc<AccessLog> {
        let tx = enabled.then(|| {
            let (tx, rx) = channel(16 * 1024);
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_loop(rx))
                .expect("spawning the access-log thread");
            tx
        });
        Arc::new(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether records are written (`server.access_log`); when not, callers need not build one.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, record: AccessRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How often the writer drains the queue. The writer never blocks in `recv`, so request
/// handlers never pay for waking it (a futex wake per request showed up as a fifth of the
/// CPU time of a saturated gateway).
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

fn write_loop(mut rx: Receiver<AccessRecord>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = Vec::with_capacity(1024);
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(rec) => {
                    line.clear();
                    write_record(&mut line, &rec);
                    let _ = out.write_all(&line);
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        std::thread::sleep(DRAIN_INTERVAL);
    }
}

/// Appends `rec` as one JSON line (newline included) to `out`: the bytes `serde_json` writes
/// for the record (same field order, escapes and number formats; a test holds them equal),
/// without going through `serde`'s per-field machinery (≈ 4,400 instructions a line).
pub fn write_record(out: &mut Vec<u8>, rec: &AccessRecord) {
    out.extend_from_slice(b"{\"ts\":");
    json_str(out, &rec.ts);
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, &rec.request_id);
    if let Some(t) = &rec.trace_id {
        out.extend_from_slice(b",\"trace_id\":");
        json_str(out, t);
    }
    out.extend_from_slice(b",\"user\":");
    json_opt_str(out, rec.user.as_deref());
    out.extend_from_slice(b",\"key_id\":");
    json_opt_str(out, rec.key_id.as_deref());
    out.extend_from_slice(b",\"method\":");
    json_str(out, &rec.method);
    out.extend_from_slice(b",\"route\":");
    json_str(out, rec.route);
    out.extend_from_slice(b",\"path\":");
    json_str(out, &rec.path);
    out.extend_from_slice(b",\"provider\":");
    json_opt_str(out, rec.provider.as_deref());
    out.extend_from_slice(b",\"model\":");
    json_opt_str(out, rec.model.as_deref());
    out.extend_from_slice(b",\"upstream_model\":");
    json_opt_str(out, rec.upstream_model.as_deref());
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(rec.status).as_bytes());
    out.extend_from_slice(b",\"latency_ms\":");
    json_f64(out, rec.latency_ms);
    out.extend_from_slice(b",\"input_tokens\":");
    json_opt_u64(out, rec.input_tokens);
    out.extend_from_slice(b",\"output_tokens\":");
    json_opt_u64(out, rec.output_tokens);
    if rec.usage_estimated {
        out.extend_from_slice(b",\"usage_estimated\":true");
    }
    if let Some(c) = rec.cache {
        out.extend_from_slice(b",\"cache\":");
        json_str(out, c);
    }
    out.extend_from_slice(b",\"cost_usd\":");
    match rec.cost_usd {
        Some(c) => json_f64(out, c),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":");
    json_opt_str(out, rec.error.as_deref());
    out.extend_from_slice(b"}\n");
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A float as `serde_json` writes it (its own formatter; `null` when not finite).
fn json_f64(out: &mut Vec<u8>, x: f64) {
    if serde_json::to_writer(&mut *out, &x).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string with `serde_json`'s escapes: `\"`, `\\`, the short forms of backspace, tab,
/// newline, form feed and carriage return, `\u00xx` for the other control characters;
/// everything else (non-ASCII included) as is. Clean text is skipped eight bytes at a time.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut unicode = *b"\\u0000";
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            if !word_needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` is a control character, `"` or `\\` (it may also
/// say so for a clean word after a control character: the caller then checks byte by byte).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\')))
        != 0
}

/// A request method's name, without an allocation for the standard ones.
pub fn method_name(m: &http::Method) -> std::borrow::Cow<'static, str> {
    use http::Method;
    std::borrow::Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return std::borrow::Cow::Owned(m.as_str().to_owned()),
    })
}

/// At most the first `max` characters of `s` (the access log's `path`).
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s; // no more characters than bytes
    }
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date library.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now_rfc3339_at(now.as_millis() as i64)
}

/// RFC 3339 UTC timestamp with milliseconds for `ms` since the epoch.
pub fn now_rfc3339_at(ms: i64) -> String {
    let now = std::time::Duration::from_millis(ms.max(0) as u64);
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    // Written digit by digit: `format!` cost ≈ 3,000 instructions per access-log line.
    let mut out = [0u8; 24];
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(now.subsec_millis()));
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> AccessRecord {
        AccessRecord {
            ts: now_rfc3339_at(1_764_000_123_456),
            request_id: text.to_owned(),
            trace_id: Some(format!("t{text}")),
            user: Some(Arc::from(text)),
            key_id: None,
            method: method_name(&http::Method::POST),
            route: "passthrough",
            path: format!("/p/{text}"),
            provider: Some(Arc::from("openai")),
            model: Some(text.to_owned()),
            upstream_model: None,
            status: 200,
            latency_ms: 1.234_567,
            input_tokens: Some(212),
            output_tokens: None,
            usage_estimated: false,
            cache: None,
            cost_usd: Some(0.000_21),
            error: Some(text.to_owned()),
        }
    }

    fn both(rec: &AccessRecord) -> (String, String) {
        let mut ours = Vec::new();
        write_record(&mut ours, rec);
        let mut theirs = serde_json::to_string(rec).unwrap();
        theirs.push('\n');
        (String::from_utf8(ours).unwrap(), theirs)
    }

    #[test]
    fn method_names_are_static_for_standard_methods() {
        use std::borrow::Cow;
        for m in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ] {
            let name = method_name(&http::Method::from_bytes(m.as_bytes()).unwrap());
            assert!(matches!(name, Cow::Borrowed(n) if n == m), "{m}");
        }
        let ext = method_name(&http::Method::from_bytes(b"PROPFIND").unwrap());
        assert!(matches!(ext, Cow::Owned(ref n) if n == "PROPFIND"));
    }

    #[test]
    fn lines_are_serde_jsons_byte_for_byte() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let texts = [
            "",
            "plain",
            "quote \" backslash \\ slash / tab \t",
            every_ascii.as_str(),
            "ünïcødé ✓ 😀 \u{2028}\u{7f}",
        ];
        for text in texts {
            let (ours, theirs) = both(&record(text));
            assert_eq!(ours, theirs);
        }
        // Every special character at every offset of the eight-byte steps.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}', 'é'] {
            for at in 0..20 {
                let text: String = (0..20)
                    .map(|i| if i == at { special } else { 'a' })
                    .collect();
                let (ours, theirs) = both(&record(&text));
                assert_eq!(ours, theirs, "{text:?}");
            }
        }
        let mut rec = record("x");
        rec.trace_id = None;
        rec.usage_estimated = true;
        rec.cache = Some("hit");
        rec.key_id = Some(Arc::from("cfg:abc"));
        rec.output_tokens = Some(u64::MAX);
        rec.status = 0;
        for (latency, cost) in [
            (0.0, None),
            (1e-9, Some(0.0)),
            (123_456_789.5, Some(1e21)),
            (f64::NAN, Some(f64::INFINITY)),
            (0.1 + 0.2, Some(-0.0)),
        ] {
            rec.latency_ms = latency;
            rec.cost_usd = cost;
            let (ours, theirs) = both(&rec);
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn truncates_by_characters() {
        assert_eq!(truncated("/v1/chat", 256), "/v1/chat");
        assert_eq!(truncated("abcdef", 3), "abc");
        assert_eq!(truncated("ééé", 2), "éé");
        assert_eq!(truncated("ééé", 3), "ééé");
        let long = "é".repeat(300);
        assert_eq!(truncated(&long, 256).chars().count(), 256);
        assert_eq!(
            truncated(&long, 256),
            long.chars().take(256).collect::<String>()
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(super::now_rfc3339_at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::now_rfc3339_at(1_764_000_123_456),
            "2025-11-24T16:02:03.456Z"
        );
        assert_eq!(
            super::now_rfc3339_at(951_782_400_007),
            "2000-02-29T00:00:00.007Z"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
