//! Throttling of wrong admin TOTP codes, per source IP and over all sources: a 6-digit code
//! falls to a brute force (three of a million codes are valid at any time) unless the
//! failures are bounded.
//!
//! In one 30 s time step a source may fail [`PER_SOURCE`] times and all sources together
//! [`GLOBAL`] times; reaching that locks the source (or everyone) out for a backoff that
//! starts at [`FIRST_BACKOFF_SECS`] and doubles with each further lockout up to
//! [`MAX_BACKOFF_SECS`]. While locked out every code is refused, the right one too, with 429
//! and `Retry-After`. A success resets the source; an hour without failures forgets the
//! lockouts. Only callers that presented the right admin key get this far, so the global
//! lockout is not a way for strangers to lock the admin out.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{IntCounterVec, Opts};

use super::totp::STEP_SECS;

/// Failures per source in one time step before a lockout.
pub const PER_SOURCE: u32 = 5;
/// Failures over all sources in one time step before everyone is locked out.
pub const GLOBAL: u32 = 10;
pub const FIRST_BACKOFF_SECS: u64 = 30;
pub const MAX_BACKOFF_SECS: u64 = 900;
/// Lockouts are forgotten after this long without a failure.
const FORGET_AFTER_SECS: u64 = 3600;
/// Sources tracked at most; beyond this only the global counter protects.
const MAX_SOURCES: usize = 10_000;

#[derive(Default, Clone, Copy)]
struct Counter {
    step: u64,
    failures: u32,
    locked_until: u64,
    lockouts: u32,
    last_failure: u64,
}

impl Counter {
    /// Seconds until the lockout ends, or None.
    fn locked(&self, now: u64) -> Option<u64> {
        (self.locked_until > now).then(|| self.locked_until - now)
    }

    /// Counts a failure; Some(backoff) when it starts a lockout.
    fn fail(&mut self, limit: u32, now: u64) -> Option<u64> {
        if now.saturating_sub(self.last_failure) > FORGET_AFTER_SECS {
            self.lockouts = 0;
        }
        if self.step != now / STEP_SECS {
            self.step = now / STEP_SECS;
            self.failures = 0;
        }
        self.last_failure = now;
        self.failures += 1;
        if self.failures < limit {
            return None;
        }
        self.failures = 0;
        self.lockouts = self.lockouts.saturating_add(1);
        let backoff = FIRST_BACKOFF_SECS
            .saturating_mul(1 << (self.lockouts - 1).min(20))
            .min(MAX_BACKOFF_SECS);
        self.locked_until = now + backoff;
        Some(backoff)
    }
}

#[derive(Default)]
struct State {
    sources: HashMap<String, Counter>,
    global: Counter,
}

/// What [`TotpThrottle::judge`] found.
#[derive(Debug)]
pub enum Judged<T> {
    /// Refused unchecked: locked out for this many more seconds.
    Locked(u64),
    Valid(T),
    /// Wrong; the lockouts this failure started.
    Invalid(Vec<Lockout>),
}

/// A lockout that a failure just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// `source` or `global`.
    pub scope: &'static str,
    pub seconds: u64,
}

pub struct TotpThrottle {
    state: Mutex<State>,
    /// `ai_proxy_admin_totp_failures_total{reason}`: invalid, replayed, throttled.
    pub failures: IntCounterVec,
    /// `ai_proxy_admin_totp_lockouts_total{scope}`: source, global.
    pub lockouts: IntCounterVec,
}

impl Default for TotpThrottle {
    fn default() -> Self {
        let failures = IntCounterVec::new(
            Opts::new(
                "ai_proxy_admin_totp_failures_total",
                "Admin TOTP codes refused, by reason (invalid, replayed, throttled: refused unchecked during a lockout).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let lockouts = IntCounterVec::new(
            Opts::new(
                "ai_proxy_admin_totp_lockouts_total",
                "Admin TOTP lockouts after too many wrong codes, by scope (source, global).",
            ),
            &["scope"],
        )
        .expect("valid metric");
        // Every series exists from the start (alerts on rate() see the first increase).
        for r in ["invalid", "replayed", "throttled"] {
            failures.with_label_values(&[r]);
        }
        for s in ["source", "global"] {
            lockouts.with_label_values(&[s]);
        }
        TotpThrottle {
            state: Mutex::default(),
            failures,
            lockouts,
        }
    }
}

impl TotpThrottle {
    /// Err(seconds to wait) while `source` or everyone is locked out.
    pub fn check(&self, source: &str, now: u64) -> Result<(), u64> {
        let s = self.state.lock().expect("not poisoned");
        let wait = [
            s.global.locked(now),
            s.sources.get(source).and_then(|c| c.locked(now)),
        ]
        .into_iter()
        .flatten()
        .max();
        wait.map_or(Ok(()), Err)
    }

    /// Checks a code with `verify` unless `source` or everyone is locked out, counting a
    /// failure or resetting the source on success, all under one lock: parallel guesses
    /// cannot slip past the limit between the check and the count.
    pub fn judge<T>(
        &self,
        source: &str,
        now: u64,
        verify: impl FnOnce() -> Option<T>,
    ) -> Judged<T> {
        let mut s = self.state.lock().expect("not poisoned");
        let wait = [
            s.global.locked(now),
            s.sources.get(source).and_then(|c| c.locked(now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            drop(s);
            self.failures.with_label_values(&["throttled"]).inc();
            return Judged::Locked(wait);
        }
        match verify() {
            Some(v) => {
                s.sources.remove(source);
                Judged::Valid(v)
            }
            None => {
                let started = self.count_failure(&mut s, source, now);
                drop(s);
                self.failures.with_label_values(&["invalid"]).inc();
                self.count_lockouts(&started);
                Judged::Invalid(started)
            }
        }
    }

    /// Counts a wrong (or replayed) code; returns the lockouts it started.
    pub fn failure(&self, source: &str, now: u64) -> Vec<Lockout> {
        let mut s = self.state.lock().expect("not poisoned");
        let started = self.count_failure(&mut s, source, now);
        drop(s);
        self.count_lockouts(&started);
        started
    }

    fn count_lockouts(&self, started: &[Lockout]) {
        for l in started {
            self.lockouts.with_label_values(&[l.scope]).inc();
        }
    }

    fn count_failure(&self, s: &mut State, source: &str, now: u64) -> Vec<Lockout> {
        let mut started = Vec::with_capacity(2);
        if let Some(seconds) = s.global.fail(GLOBAL, now) {
            started.push(Lockout {
                scope: "global",
                seconds,
            });
        }
        if s.sources.len() >= MAX_SOURCES && !s.sources.contains_key(source) {
            s.sources.retain(|_, c| {
                c.locked(now).is_some() || now.saturating_sub(c.last_failure) <= FORGET_AFTER_SECS
            });
        }
        if s.sources.len() < MAX_SOURCES || s.sources.contains_key(source) {
            let c = s.sources.entry(source.to_owned()).or_default();
            if let Some(seconds) = c.fail(PER_SOURCE, now) {
                started.push(Lockout {
                    scope: "source",
                    seconds,
                });
            }
        }
        started
    }

    /// A right code: the source starts afresh.
    pub fn success(&self, source: &str) {
        self.state
            .lock()
            .expect("not poisoned")
            .sources
            .remove(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_locked_out_with_a_growing_backoff() {
        let t = TotpThrottle::default();
        let now = 1_800_000_010; // early in a step
        for i in 1..PER_SOURCE {
            assert!(t.failure("a", now).is_empty(), "failure {i}");
            assert_eq!(t.check("a", now), Ok(()));
        }
        assert_eq!(
            t.failure("a", now),
            [Lockout {
                scope: "source",
                seconds: FIRST_BACKOFF_SECS
            }]
        );
        assert_eq!(t.check("a", now), Err(FIRST_BACKOFF_SECS));
        assert_eq!(t.check("b", now), Ok(()), "another source is not locked");
        // After the backoff, the next lockout lasts twice as long.
        let later = now + FIRST_BACKOFF_SECS;
        assert_eq!(t.check("a", later), Ok(()));
        for _ in 1..PER_SOURCE {
            t.failure("a", later);
        }
        assert_eq!(t.failure("a", later)[0].seconds, 2 * FIRST_BACKOFF_SECS);
        // The backoff is capped.
        let mut at = later;
        for _ in 0..20 {
            at += MAX_BACKOFF_SECS;
            for _ in 0..PER_SOURCE {
                t.failure("a", at);
            }
        }
        assert_eq!(t.check("a", at), Err(MAX_BACKOFF_SECS));
        // A success resets the source.
        t.success("a");
        assert_eq!(t.check("a", at), Ok(()));
    }

    #[test]
    fn many_sources_together_lock_everyone_out() {
        let t = TotpThrottle::default();
        let now = 1_800_000_010;
        let mut global = None;
        for i in 0..GLOBAL {
            for l in t.failure(&format!("10.0.0.{i}"), now) {
                global = Some(l);
            }
        }
        assert_eq!(global.map(|l| l.scope), Some("global"));
        assert!(t.check("10.9.9.9", now).is_err());
    }
}
