//! The response cache: complete successful answers kept by an exact-match key (memory,
//! bounded by bytes, or Redis shared by replicas; compressed where it pays), and request
//! coalescing (identical requests in flight share one upstream call, see [`flight`]).
//!
//! The key's canonical request form is pure and lives in `switchyard_filters::cache_key`;
//! the request path's use of all this is `crate::pipeline::cache`.

pub mod flight;
mod policy;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};
use switchyard_filters::Usage;

pub use flight::{Flight, FlightEnd, FlightGuard};
pub use policy::{Backend, CachePolicy, CacheSettings, Scope, MAX_TTL_SECS};

/// A cache key: SHA-256 of the request's canonical form and context.
pub type Key = [u8; 32];

/// The cache's metrics (registered in the gateway's registry).
#[derive(Clone)]
pub struct CacheMetrics {
    /// `ai_proxy_cache_requests_total{result}`: hit, miss, bypass.
    pub requests: IntCounterVec,
    /// `ai_proxy_cache_bytes`: bytes held by the memory backend.
    pub bytes: IntGauge,
    /// `ai_proxy_cache_evictions_total`: entries the memory bound pushed out.
    pub evictions: IntCounter,
    /// `ai_proxy_cost_saved_usd_total`: the provider cost hits avoided.
    pub cost_saved: Counter,
}

impl CacheMetrics {
    pub fn new(metrics: &crate::metrics::Metrics) -> CacheMetrics {
        let m = CacheMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "ai_proxy_cache_requests_total",
                    "Cacheable requests by result (hit: answered from the cache or a coalesced call; miss; bypass: Cache-Control no-cache).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            bytes: IntGauge::new(
                "ai_proxy_cache_bytes",
                "Bytes held by the in-memory response cache.",
            )
            .expect("valid metric"),
            evictions: IntCounter::new(
                "ai_proxy_cache_evictions_total",
                "Response cache entries evicted by the memory bound.",
            )
            .expect("valid metric"),
            cost_saved: Counter::new(
                "ai_proxy_cost_saved_usd_total",
                "Provider cost (USD, price table) that cache hits avoided.",
            )
            .expect("valid metric"),
        };
        metrics.register(Box::new(m.requests.clone()));
        metrics.register(Box::new(m.bytes.clone()));
        metrics.register(Box::new(m.evictions.clone()));
        metrics.register(Box::new(m.cost_saved.clone()));
        m
    }
}

/// A cached answer as the request path uses it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: bool,
    /// The client-facing bytes as first sent (JSON body, or the whole SSE stream).
    pub body: Bytes,
    /// The answer's usage, priced on a hit as the cost it saved.
    pub usage: Option<Usage>,
    /// The provider and upstream model that produced it.
    pub provider: String,
    pub upstream_model: String,
}

/// The stored form (postcard); `VERSION` changes when it does.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    version: u8,
    stream: bool,
    compressed: bool,
    /// prompt, completion, total, cached, cache_write, cache_write_1h, reasoning.
    usage: Option<[u64; 7]>,
    provider: &'a str,
    upstream_model: &'a str,
    #[serde(borrow)]
    body: &'a [u8],
}

const VERSION: u8 = 1;

impl Entry {
    /// The stored bytes: body compressed with zstd when at least `compress_min` long and
    /// smaller that way.
    pub fn encode(&self, compress_min: usize) -> Vec<u8> {
        let compressed = (self.body.len() >= compress_min)
            .then(|| zstd::bulk::compress(&self.body, 3).ok())
            .flatten()
            .filter(|c| c.len() < self.body.len());
        let usage = self.usage.map(|u| {
            [
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.cache_write_1h_tokens,
                u.reasoning_tokens,
            ]
        });
        let stored = Stored {
            version: VERSION,
            stream: self.stream,
            compressed: compressed.is_some(),
            usage,
            provider: &self.provider,
            upstream_model: &self.upstream_model,
            body: compressed.as_deref().unwrap_or(&self.body),
        };
        postcard::to_allocvec(&stored).unwrap_or_default()
    }

    /// Decodes stored bytes; `None` for anything damaged or of another version (a miss).
    pub fn decode(bytes: &[u8], max_body: usize) -> Option<Entry> {
        let s: Stored<'_> = postcard::from_bytes(bytes).ok()?;
        if s.version != VERSION {
            return None;
        }
        let body = if s.compressed {
            Bytes::from(zstd::bulk::decompress(s.body, max_body).ok()?)
        } else {
            Bytes::copy_from_slice(s.body)
        };
        let usage = s.usage.map(|u| Usage {
            prompt_tokens: u[0],
            completion_tokens: u[1],
            total_tokens: u[2],
            cached_tokens: u[3],
            cache_write_tokens: u[4],
            cache_write_1h_tokens: u[5],
            reasoning_tokens: u[6],
        });
        Some(Entry {
            stream: s.stream,
            body,
            usage,
            provider: s.provider.to_owned(),
            upstream_model: s.upstream_model.to_owned(),
        })
    }
}

/// The response cache of one gateway: a backend and the calls in flight.
pub struct ResponseCache {
    pub settings: CacheSettings,
    pub metrics: CacheMetrics,
    backend: store::Store,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// What a request does about a call in flight with its key.
pub enum Role {
    /// No identical call in flight: this request makes it (and records it for followers).
    Leader(FlightGuard),
    /// An identical call is in flight: follow it.
    Follower(Arc<Flight>),
}

impl ResponseCache {
    pub fn new(settings: CacheSettings, metrics: CacheMetrics) -> Arc<ResponseCache> {
        let backend = store::Store::new(&settings, &metrics);
        Arc::new(ResponseCache {
            settings,
            metrics,
            backend,
            flights: Mutex::default(),
        })
    }

    /// The entry under `key`, if any (a backend failure is a miss).
    pub async fn get(&self, key: &Key) -> Option<Entry> {
        let bytes = self.backend.get(key).await?;
        Entry::decode(&bytes, self.settings.max_entry_bytes)
    }

    /// Stores `entry` for `ttl` (Redis: in the background; a failure is logged, not raised).
    pub fn put(self: &Arc<Self>, key: Key, entry: &Entry, ttl: Duration) {
        if entry.body.len() > self.settings.max_entry_bytes {
            return;
        }
        let bytes = entry.encode(self.settings.compress_min_bytes);
        self.backend.put(key, bytes, ttl);
    }

    /// Joins the call in flight under `key`, or becomes its leader.
    pub fn join_or_lead(self: &Arc<Self>, key: Key) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = flights.get(&key) {
            if f.joinable() {
                return Role::Follower(f.clone());
            }
        }
        let flight = Arc::new(Flight::default());
        flights.insert(key, flight.clone());
        Role::Leader(FlightGuard::new(flight, Some((self.clone(), key))))
    }

    /// A private recording (no followers can join): for a request that bypasses lookup but
    /// may still be stored.
    pub fn record_alone() -> FlightGuard {
        FlightGuard::new(Arc::new(Flight::default()), None)
    }

    /// Forgets the flight under `key` if it is still `flight`.
    pub(crate) fn land(&self, key: &Key, flight: &Arc<Flight>) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    /// Calls in flight now (for tests and diagnostics).
    pub fn flights_in_progress(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_compressed_or_not() {
        let e = Entry {
            stream: true,
            body: Bytes::from("data: {\"x\":1}\n\n".repeat(200)),
            usage: Some(Usage {
                cache_write_tokens: 5,
                ..Usage::new(10, 20)
            }),
            provider: "p".into(),
            upstream_model: "m".into(),
        };
        for min in [0, usize::MAX] {
            let bytes = e.encode(min);
            if min == 0 {
                assert!(
                    bytes.len() < e.body.len() / 4,
                    "compressed: {}",
                    bytes.len()
                );
            }
            let back = Entry::decode(&bytes, 1 << 20).unwrap();
            assert_eq!(back.body, e.body);
            assert_eq!(back.usage, e.usage);
            assert!(back.stream);
            assert_eq!(back.provider, "p");
        }
        assert!(Entry::decode(b"\x07garbage", 1 << 20).is_none());
        assert!(
            Entry::decode(&e.encode(0), 10).is_none(),
            "decompression is bounded"
        );
    }
}
