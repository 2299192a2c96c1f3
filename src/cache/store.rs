//! The cache's backends: memory (moka, bounded by bytes, a TTL per entry) or Redis (shared
//! by replicas). A Redis that fails or is slow is a miss and a skipped store, never an error;
//! after a failure it is left alone for a second.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;

use super::{Backend, CacheMetrics, CacheSettings, Key};

/// How long a Redis command may take before it counts as a miss.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, it is not tried again for this long.
const REDIS_RETRY_MS: i64 = 1000;
/// Bytes an entry costs beyond its data (key, moka's bookkeeping), for the memory bound.
const ENTRY_OVERHEAD: usize = 96;

pub(super) enum Store {
    Memory(Memory),
    Redis(Arc<Redis>),
}

#[derive(Clone)]
struct Value {
    data: Arc<[u8]>,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<Key, Value> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, v: &Value, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub(super) struct Memory {
    cache: moka::sync::Cache<Key, Value>,
    bytes: prometheus::IntGauge,
}

pub(super) struct Redis {
    client: Option<redis::Client>,
    conn: arc_swap::ArcSwapOption<redis::aio::ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    down_until: AtomicI64,
}

impl Store {
    pub(super) fn new(settings: &CacheSettings, metrics: &CacheMetrics) -> Store {
        match &settings.backend {
            Backend::Memory => {
                let evictions = metrics.evictions.clone();
                let cache = moka::sync::Cache::builder()
                    .max_capacity(settings.max_bytes)
                    .weigher(|_: &Key, v: &Value| {
                        u32::try_from(v.data.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                    })
                    .expire_after(PerEntryTtl)
                    .eviction_listener(move |_, _, cause| {
                        if cause == RemovalCause::Size {
                            evictions.inc();
                        }
                    })
                    .build();
                Store::Memory(Memory {
                    cache,
                    bytes: metrics.bytes.clone(),
                })
            }
            Backend::Redis(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| log::error!("cache.redis_url: {e}; the cache is off"))
                    .ok();
                Store::Redis(Arc::new(Redis {
                    client,
                    conn: arc_swap::ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                    down_until: AtomicI64::new(0),
                }))
            }
        }
    }

    pub(super) async fn get(&self, key: &Key) -> Option<Arc<[u8]>> {
        match self {
            Store::Memory(m) => m.cache.get(key).map(|v| v.data),
            Store::Redis(r) => r.get(key).await.map(Arc::from),
        }
    }

    pub(super) fn put(&self, key: Key, bytes: Vec<u8>, ttl: Duration) {
        match self {
            Store::Memory(m) => {
                m.cache.insert(
                    key,
                    Value {
                        data: Arc::from(bytes),
                        ttl,
                    },
                );
                // Inserts are once per miss: keeping the gauge (and evictions) current is
                // worth moka's housekeeping here.
                m.cache.run_pending_tasks();
                m.bytes
                    .set(i64::try_from(m.cache.weighted_size()).unwrap_or(i64::MAX));
            }
            Store::Redis(r) => {
                let r = r.clone();
                tokio::spawn(async move { r.put(&key, &bytes, ttl).await });
            }
        }
    }
}

fn redis_key(key: &Key) -> String {
    format!("sy:cache:{}", hex::encode(key))
}

fn now_ms() -> i64 {
    crate::governance::audit::now_ms()
}

impl Redis {
    /// The connection, when there is one and Redis is not resting after a failure;
    /// connects on first use (one request at a time, at most a second).
    async fn conn(&self) -> Option<redis::aio::ConnectionManager> {
        if self.down_until.load(Ordering::Relaxed) > now_ms() {
            return None;
        }
        if let Some(c) = self.conn.load_full() {
            return Some((*c).clone());
        }
        let client = self.client.clone()?;
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Some((*c).clone());
        }
        if self.down_until.load(Ordering::Relaxed) > now_ms() {
            return None;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let connect = redis::aio::ConnectionManager::new_with_config(client, config);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(m)) => {
                log::info!("response cache: Redis connected");
                self.conn.store(Some(Arc::new(m.clone())));
                Some(m)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("connecting timed out");
                None
            }
        }
    }

    fn failed(&self, e: &str) {
        let now = now_ms();
        let prev = self
            .down_until
            .swap(now + REDIS_RETRY_MS, Ordering::Relaxed);
        if prev <= now {
            log::warn!("response cache: Redis unavailable ({e}); misses for {REDIS_RETRY_MS} ms");
        }
    }

    async fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let mut conn = self.conn().await?;
        let cmd = redis::cmd("GET").arg(redis_key(key)).clone();
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<Vec<u8>>>(&mut conn))
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("timed out");
                None
            }
        }
    }

    async fn put(&self, key: &Key, bytes: &[u8], ttl: Duration) {
        let Some(mut conn) = self.conn().await else {
            return;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let cmd = redis::cmd("SET")
            .arg(redis_key(key))
            .arg(bytes)
            .arg("PX")
            .arg(ms)
            .clone();
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }
}
