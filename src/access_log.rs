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
    pub method: String,
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
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(rec) => {
                    if serde_json::to_writer(&mut out, &rec).is_ok() {
                        let _ = out.write_all(b"\n");
                    }
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
