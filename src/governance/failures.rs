//! Authentication failures in the audit trail, aggregated per source and interval, so that
//! a flood of wrong keys cannot flood the store and the audit file.
//!
//! The first failure of a kind (`auth_failure`, `admin_auth_failure`) from a source (client
//! IP) in an interval ([`INTERVAL_MS`]) is written at once, as before; the following ones
//! are only counted, and when the interval ends one more event of the same kind is written
//! with `"count"` (how many were counted) and `"reasons"` (how many of each reason). A flood
//! of N wrong keys from one address thus writes two events a minute, not N.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are tracked per interval; failures
//! from further sources are counted under the source `*`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::AuditEvent;

/// The aggregation interval.
pub const INTERVAL_MS: i64 = 60_000;
/// Sources tracked at once; beyond this, failures count under `*`.
const MAX_SOURCES: usize = 4096;
const OVERFLOW: &str = "*";

struct Window {
    started_ms: i64,
    subject: String,
    counted: u64,
    reasons: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub struct FailureAudit {
    windows: Mutex<HashMap<(&'static str, String), Window>>,
    /// Summaries of windows that a new failure replaced before [`FailureAudit::due`] ran.
    late: Mutex<Vec<AuditEvent>>,
}

impl FailureAudit {
    /// A failure of `kind` from `source`: the event to write now (the first of its
    /// interval), or None when it was counted for the interval's summary.
    pub fn record(
        &self,
        kind: &'static str,
        source: &str,
        subject: &str,
        reason: &'static str,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Option<AuditEvent> {
        let mut windows = self.windows.lock().expect("not poisoned");
        let source =
            if windows.len() >= MAX_SOURCES && !windows.contains_key(&(kind, source.to_owned())) {
                OVERFLOW
            } else {
                source
            };
        match windows.get_mut(&(kind, source.to_owned())) {
            Some(w) if now_ms < w.started_ms + INTERVAL_MS => {
                w.counted += 1;
                match w.reasons.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => w.reasons.push((reason, 1)),
                }
                None
            }
            // No window, or one that ended and was not summarised yet: `due` writes its
            // summary; this failure opens the next window.
            _ => {
                let ended = windows.insert(
                    (kind, source.to_owned()),
                    Window {
                        started_ms: now_ms,
                        subject: subject.chars().take(200).collect(),
                        counted: 0,
                        reasons: Vec::new(),
                    },
                );
                drop(windows);
                if let Some(w) = ended.filter(|w| w.counted > 0) {
                    // Rare (the writer summarises ended windows every second); keep it.
                    self.pending_summary(kind, source, w, now_ms);
                }
                Some(AuditEvent {
                    ts_ms: now_ms,
                    event: kind.to_owned(),
                    actor: source.chars().take(200).collect(),
                    subject: subject.chars().take(200).collect(),
                    detail: detail.to_string(),
                })
            }
        }
    }

    fn pending_summary(&self, kind: &'static str, source: &str, w: Window, now_ms: i64) {
        self.late
            .lock()
            .expect("not poisoned")
            .push(summary(kind, source, &w, now_ms));
    }

    /// Summaries of the windows that ended by `now_ms` (every window when `all`, e.g. at
    /// shutdown); those windows are forgotten.
    pub fn due(&self, now_ms: i64, all: bool) -> Vec<AuditEvent> {
        let mut out = std::mem::take(&mut *self.late.lock().expect("not poisoned"));
        let mut windows = self.windows.lock().expect("not poisoned");
        if windows.is_empty() {
            return out;
        }
        windows.retain(|(kind, source), w| {
            if !all && now_ms < w.started_ms + INTERVAL_MS {
                return true;
            }
            if w.counted > 0 {
                out.push(summary(kind, source, w, now_ms));
            }
            false
        });
        out
    }
}

fn summary(kind: &str, source: &str, w: &Window, now_ms: i64) -> AuditEvent {
    let reasons: serde_json::Map<String, serde_json::Value> = w
        .reasons
        .iter()
        .map(|(r, n)| ((*r).to_owned(), (*n).into()))
        .collect();
    AuditEvent {
        ts_ms: now_ms,
        event: kind.to_owned(),
        actor: source.to_owned(),
        subject: w.subject.clone(),
        detail: serde_json::json!({
            "count": w.counted,
            "reasons": reasons,
            "since": crate::access_log::now_rfc3339_at(w.started_ms),
            "note": "further failures from this source, counted since the first one",
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_written_the_rest_summarised() {
        let f = FailureAudit::default();
        let t = 1_800_000_000_000;
        let d = || serde_json::json!({"reason": "unknown_key"});
        assert!(f
            .record("auth_failure", "10.0.0.1", "/v1/x", "unknown_key", d(), t)
            .is_some());
        for i in 1..1000 {
            assert!(f
                .record(
                    "auth_failure",
                    "10.0.0.1",
                    "/v1/x",
                    "unknown_key",
                    d(),
                    t + i
                )
                .is_none());
        }
        f.record(
            "auth_failure",
            "10.0.0.1",
            "/v1/x",
            "missing_key",
            d(),
            t + 5,
        );
        // Another source has its own window.
        assert!(f
            .record("auth_failure", "10.0.0.2", "/v1/x", "unknown_key", d(), t)
            .is_some());
        assert!(f.due(t + 1000, false).is_empty());
        let s = f.due(t + INTERVAL_MS, false);
        assert_eq!(s.len(), 1, "{s:?}");
        let detail: serde_json::Value = serde_json::from_str(&s[0].detail).unwrap();
        assert_eq!(detail["count"], 1000);
        assert_eq!(detail["reasons"]["unknown_key"], 999);
        assert_eq!(detail["reasons"]["missing_key"], 1);
        assert_eq!(s[0].actor, "10.0.0.1");
        // The window is gone: the next failure is written at once again.
        assert!(f
            .record(
                "auth_failure",
                "10.0.0.1",
                "/v1/x",
                "unknown_key",
                d(),
                t + INTERVAL_MS
            )
            .is_some());
    }

    #[test]
    fn sources_are_bounded() {
        let f = FailureAudit::default();
        let d = || serde_json::json!({});
        for i in 0..MAX_SOURCES + 100 {
            f.record(
                "auth_failure",
                &format!("ip{i}"),
                "/",
                "unknown_key",
                d(),
                0,
            );
        }
        assert_eq!(f.windows.lock().unwrap().len(), MAX_SOURCES + 1);
        let s = f.due(0, true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].actor, OVERFLOW);
    }
}
