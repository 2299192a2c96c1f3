//! Passive health per provider: a circuit breaker over consecutive failures, plus the
//! figures balancing and `/health/providers` need (in-flight count, EWMA time to first byte,
//! EWMA error rate).
//!
//! Everything is atomics: the request path never takes a lock here. State survives config
//! reloads (it is keyed by provider name in [`HealthRegistry`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;

/// Circuit-breaker settings (`routing.health`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed circuit: go ahead.
    Allowed,
    /// Half-open: this request is the one probe; its outcome closes or reopens the circuit.
    Probe,
    /// Open circuit: skip this provider.
    Rejected,
}

pub struct ProviderHealth {
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 when closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    in_flight: AtomicUsize,
    ewma_ttfb_us: AtomicU64,
    ewma_error: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// Decrements the provider's in-flight count when an attempt ends.
pub struct InFlightGuard(Arc<ProviderHealth>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HealthReport {
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub in_flight: usize,
    /// Moving average of the time to the first response byte, milliseconds.
    pub latency_ms: Option<f64>,
    /// Moving average of the share of failed attempts (0..1).
    pub error_rate: f64,
    pub requests: u64,
    pub failures: u64,
}

impl Default for ProviderHealth {
    fn default() -> Self {
        ProviderHealth {
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            ewma_ttfb_us: AtomicU64::new(0),
            ewma_error: AtomicU64::new(0f64.to_bits()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl ProviderHealth {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a request may go to this provider now.
    pub fn admit(&self) -> Admission {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Allowed;
        }
        if self.now_ms() < until {
            return Admission::Rejected;
        }
        // Cool-down over: exactly one probe at a time.
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Admission::Probe
        } else {
            Admission::Rejected
        }
    }

    /// Counts an attempt in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    pub fn record_success(&self, time_to_first_byte: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
        ewma(&self.ewma_error, 0.0);
        let sample = time_to_first_byte.as_micros() as f64;
        let prev = self.ewma_ttfb_us.load(Ordering::Relaxed);
        let next = if prev == 0 {
            sample
        } else {
            f64::from_bits(prev) * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA
        };
        self.ewma_ttfb_us
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn record_failure(&self, settings: &BreakerSettings) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        ewma(&self.ewma_error, 1.0);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        if probe_failed || n >= settings.failure_threshold {
            let until = self.now_ms() + settings.cooldown.as_millis() as u64;
            self.open_until_ms.store(until.max(1), Ordering::Release);
        }
    }

    /// A probe that ended without a verdict (e.g. the client left) must not wedge the breaker.
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// EWMA of time to first byte in microseconds; 0 when never measured.
    pub fn latency_us(&self) -> f64 {
        f64::from_bits(self.ewma_ttfb_us.load(Ordering::Relaxed))
    }

    pub fn report(&self) -> HealthReport {
        let until = self.open_until_ms.load(Ordering::Acquire);
        let state = match until {
            0 => "closed",
            u if self.now_ms() < u => "open",
            _ => "half_open",
        };
        let lat = self.ewma_ttfb_us.load(Ordering::Relaxed);
        HealthReport {
            state,
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            latency_ms: (lat != 0).then(|| (f64::from_bits(lat) / 1000.0 * 100.0).round() / 100.0),
            error_rate: (f64::from_bits(self.ewma_error.load(Ordering::Relaxed)) * 1000.0).round()
                / 1000.0,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

fn ewma(cell: &AtomicU64, sample: f64) {
    let prev = f64::from_bits(cell.load(Ordering::Relaxed));
    cell.store(
        (prev * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA).to_bits(),
        Ordering::Relaxed,
    );
}

/// Health state of every provider by name, kept across config reloads.
#[derive(Default)]
pub struct HealthRegistry {
    map: ArcSwap<HashMap<String, Arc<ProviderHealth>>>,
    grow: Mutex<()>,
}

impl HealthRegistry {
    /// The provider's health; created on first use (after a reload adds a provider).
    pub fn get(&self, name: &str) -> Arc<ProviderHealth> {
        if let Some(h) = self.map.load().get(name) {
            return h.clone();
        }
        let _g = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load();
        if let Some(h) = current.get(name) {
            return h.clone();
        }
        let mut next = HashMap::clone(&current);
        let h = Arc::new(ProviderHealth::default());
        next.insert(name.to_owned(), h.clone());
        self.map.store(Arc::new(next));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BreakerSettings = BreakerSettings {
        failure_threshold: 3,
        cooldown: Duration::from_millis(50),
    };

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let h = ProviderHealth::default();
        h.record_failure(&S);
        h.record_success(Duration::from_millis(5));
        h.record_failure(&S);
        h.record_failure(&S);
        assert_eq!(h.admit(), Admission::Allowed, "a success resets the count");
        h.record_failure(&S);
        assert_eq!(h.admit(), Admission::Rejected);
        assert_eq!(h.report().state, "open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.admit(), Admission::Probe);
        assert_eq!(h.admit(), Admission::Rejected, "only one probe at a time");
        h.record_success(Duration::from_millis(5));
        assert_eq!(h.admit(), Admission::Allowed);
        assert_eq!(h.report().state, "closed");
    }

    #[test]
    fn a_failed_probe_reopens_at_once() {
        let h = ProviderHealth::default();
        for _ in 0..3 {
            h.record_failure(&S);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.admit(), Admission::Probe);
        h.record_failure(&S);
        assert_eq!(h.admit(), Admission::Rejected);
    }

    #[test]
    fn registry_keeps_state_per_name() {
        let r = HealthRegistry::default();
        r.get("a").record_failure(&S);
        assert_eq!(r.get("a").report().failures, 1);
        assert_eq!(r.get("b").report().failures, 0);
    }
}
