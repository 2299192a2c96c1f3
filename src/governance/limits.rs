//! Per-key rate limits: requests per minute and tokens per minute.
//!
//! A sliding-window estimate over fixed one-minute windows (the current window's count plus
//! the previous one's, weighted by how much of it still overlaps the last 60 s): two
//! counters per key, no timestamps kept per request. Counters are in memory, in a sharded
//! map, by default; with `limits.redis` they are shared by every replica in Redis (one
//! pipelined round trip per request, 50 ms timeout), and a replica falls back to its local
//! counters while Redis is unreachable (retrying it every few seconds).
//!
//! Requests are counted when admitted; tokens when the request's actual usage is known
//! (after the answer), so a key over its tokens-per-minute is refused from its next request.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::keys::KeyPolicy;

const WINDOW_MS: i64 = 60_000;
const SHARDS: usize = 16;
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
const REDIS_RETRY_MS: i64 = 5_000;

/// The `x-ratelimit-*` figures for one class (requests or tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub limit: u64,
    pub remaining: u64,
    /// Until the current window ends.
    pub reset_ms: u64,
}

/// What the headers of a response to a limited key say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateInfo {
    pub requests: Option<Figures>,
    pub tokens: Option<Figures>,
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

impl RateInfo {
    /// Appends the `x-ratelimit-*` headers OpenAI clients read. These go on every response
    /// of a limited key, so: names prebuilt, reset durations from a table, the four numbers
    /// written into one buffer that the values share (one allocation instead of six), and
    /// straight into the map (no iterator of pairs in between).
    pub fn append_to(&self, map: &mut http::HeaderMap) {
        let mut buf = bytes::BytesMut::with_capacity(4 * 20);
        let mut fmt = itoa::Buffer::new();
        let mut cut = |n: u64| {
            buf.extend_from_slice(fmt.format(n).as_bytes());
            HeaderValue::from_maybe_shared(buf.split().freeze()).expect("digits")
        };
        if let Some(f) = self.requests {
            map.append(LIMIT_REQUESTS, cut(f.limit));
            map.append(REMAINING_REQUESTS, cut(f.remaining));
            map.append(RESET_REQUESTS, reset(f.reset_ms));
        }
        if let Some(f) = self.tokens {
            map.append(LIMIT_TOKENS, cut(f.limit));
            map.append(REMAINING_TOKENS, cut(f.remaining));
            map.append(RESET_TOKENS, reset(f.reset_ms));
        }
    }

    /// The same headers as pairs (refusals, passthrough answers).
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        let mut map = http::HeaderMap::new();
        self.append_to(&mut map);
        map.into_iter().filter_map(|(k, v)| Some((k?, v)))
    }
}

/// OpenAI's reset format: `1s`, `6m0s`, `120ms`.
fn reset_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", ms.div_ceil(1000))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// [`reset_text`] as a header value. A window is a minute, so nearly every value is one of
/// 0–999 ms or 1–60 s: those come from a table made once (static values: cloning one
/// copies two words), the rest are formatted.
fn reset(ms: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..1000)
            .map(reset_text)
            .chain((1..=60).map(|s| format!("{s}s")))
            .map(|text| HeaderValue::from_static(String::leak(text)))
            .collect()
    });
    let slot = if ms < 1000 {
        Some(ms as usize)
    } else if ms < 60_000 {
        Some(999 + ms.div_ceil(1000) as usize)
    } else {
        None
    };
    match slot {
        Some(i) => table[i].clone(),
        None => HeaderValue::from_str(&reset_text(ms)).expect("digits and letters"),
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `requests` or `tokens`.
    pub class: &'static str,
    pub retry_after_secs: u64,
    pub info: RateInfo,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    index: i64,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
}

impl Window {
    fn roll(&mut self, index: i64) {
        if index == self.index {
            return;
        }
        if index == self.index + 1 {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.requests = 0;
        self.tokens = 0;
        self.index = index;
    }
}

/// Sliding estimate: current + previous weighted by the part of it still in the last minute.
fn estimate(cur: u64, prev: u64, elapsed_ms: i64) -> u64 {
    let weight = (WINDOW_MS - elapsed_ms) as f64 / WINDOW_MS as f64;
    cur + (prev as f64 * weight).ceil() as u64
}

/// Checks the counts against the key's limits and builds the figures.
fn judge(
    policy: &KeyPolicy,
    requests: u64,
    tokens: u64,
    elapsed_ms: i64,
) -> Result<RateInfo, Refusal> {
    let reset_ms = (WINDOW_MS - elapsed_ms).max(1) as u64;
    let info = RateInfo {
        requests: policy.rpm.map(|limit| Figures {
            limit,
            remaining: limit.saturating_sub(requests + 1),
            reset_ms,
        }),
        tokens: policy.tpm.map(|limit| Figures {
            limit,
            remaining: limit.saturating_sub(tokens),
            reset_ms,
        }),
    };
    let retry_after_secs = reset_ms.div_ceil(1000).max(1);
    if policy.rpm.is_some_and(|l| requests + 1 > l) {
        return Err(Refusal {
            class: "requests",
            retry_after_secs,
            info,
        });
    }
    if policy.tpm.is_some_and(|l| tokens >= l) {
        return Err(Refusal {
            class: "tokens",
            retry_after_secs,
            info,
        });
    }
    Ok(info)
}

/// In-process counters, sharded by key id.
#[derive(Default)]
pub struct LocalLimiter {
    shards: [Mutex<Windows>; SHARDS],
}

/// Windows by key id. FxHash, not SipHash: the ids are the gateway's own (`key_…`, from the
/// store or the config), never chosen by a caller, so there is no hash flooding to resist,
/// and the hash runs on every request of a limited key.
type Windows = HashMap<Arc<str>, Window, rustc_hash::FxBuildHasher>;

fn shard_of(id: &str) -> usize {
    (rustc_hash::FxBuildHasher.hash_one(id) >> 32) as usize % SHARDS
}

/// The key's window, created on first use (the id is cloned only then).
fn window<'a>(windows: &'a mut Windows, id: &Arc<str>) -> &'a mut Window {
    if !windows.contains_key(&**id) {
        windows.insert(id.clone(), Window::default());
    }
    windows.get_mut(&**id).expect("just inserted")
}

impl LocalLimiter {
    pub fn admit(&self, policy: &KeyPolicy, now_ms: i64) -> Result<RateInfo, Refusal> {
        let (index, elapsed) = (now_ms.div_euclid(WINDOW_MS), now_ms.rem_euclid(WINDOW_MS));
        let mut shard = self.shards[shard_of(&policy.id)]
            .lock()
            .expect("not poisoned");
        let w = window(&mut shard, &policy.id);
        w.roll(index);
        let requests = estimate(w.requests, w.prev_requests, elapsed);
        let tokens = estimate(w.tokens, w.prev_tokens, elapsed);
        let info = judge(policy, requests, tokens, elapsed)?;
        w.requests += 1;
        Ok(info)
    }

    pub fn add_tokens(&self, id: &Arc<str>, tokens: u64, now_ms: i64) {
        let mut shard = self.shards[shard_of(id)].lock().expect("not poisoned");
        let w = window(&mut shard, id);
        w.roll(now_ms.div_euclid(WINDOW_MS));
        w.tokens += tokens;
    }

    /// Forgets keys idle for two windows (their counts no longer matter).
    pub fn prune(&self, now_ms: i64) {
        let index = now_ms.div_euclid(WINDOW_MS);
        for s in &self.shards {
            s.lock()
                .expect("not poisoned")
                .retain(|_, w| w.index + 1 >= index);
        }
    }
}

/// Shared counters in Redis, with the local ones as fallback.
pub struct Limiter {
    local: LocalLimiter,
    redis: arc_swap::ArcSwapOption<redis::aio::ConnectionManager>,
    /// While Redis is failing: the time (ms) before which it is not tried again.
    redis_down_until: AtomicI64,
}

impl Limiter {
    pub fn local() -> Limiter {
        Limiter {
            local: LocalLimiter::default(),
            redis: arc_swap::ArcSwapOption::empty(),
            redis_down_until: AtomicI64::new(0),
        }
    }

    /// Starts sharing counters through Redis (once connected).
    pub fn set_redis(&self, manager: redis::aio::ConnectionManager) {
        self.redis.store(Some(Arc::new(manager)));
    }

    pub fn uses_redis(&self) -> bool {
        self.redis.load().is_some()
    }

    fn redis_now(&self, now_ms: i64) -> Option<redis::aio::ConnectionManager> {
        let m = self.redis.load_full()?;
        (self.redis_down_until.load(Ordering::Relaxed) <= now_ms).then(|| (*m).clone())
    }

    fn redis_failed(&self, now_ms: i64, e: &str) {
        let prev = self
            .redis_down_until
            .swap(now_ms + REDIS_RETRY_MS, Ordering::Relaxed);
        if prev <= now_ms {
            log::warn!("rate limits: Redis unavailable ({e}); using local counters for {REDIS_RETRY_MS} ms");
        }
    }

    pub async fn admit(&self, policy: &KeyPolicy, now_ms: i64) -> Result<RateInfo, Refusal> {
        if let Some(mut conn) = self.redis_now(now_ms) {
            let (index, elapsed) = (now_ms.div_euclid(WINDOW_MS), now_ms.rem_euclid(WINDOW_MS));
            let (rc, rp, tc, tp) = (
                format!("sy:rl:{}:{index}:r", policy.id),
                format!("sy:rl:{}:{}:r", policy.id, index - 1),
                format!("sy:rl:{}:{index}:t", policy.id),
                format!("sy:rl:{}:{}:t", policy.id, index - 1),
            );
            let mut pipe = redis::pipe();
            pipe.incr(&rc, 1u64)
                .expire(&rc, 120)
                .ignore()
                .get(&rp)
                .get(&tc)
                .get(&tp);
            let res = tokio::time::timeout(
                REDIS_TIMEOUT,
                pipe.query_async::<(u64, Option<u64>, Option<u64>, Option<u64>)>(&mut conn),
            )
            .await;
            match res {
                Ok(Ok((cur, prev, tcur, tprev))) => {
                    let requests = estimate(cur - 1, prev.unwrap_or(0), elapsed);
                    let tokens = estimate(tcur.unwrap_or(0), tprev.unwrap_or(0), elapsed);
                    let verdict = judge(policy, requests, tokens, elapsed);
                    if verdict.is_err() {
                        // A refused request does not use up the allowance.
                        let _ = tokio::time::timeout(
                            REDIS_TIMEOUT,
                            redis::cmd("DECR").arg(&rc).query_async::<i64>(&mut conn),
                        )
                        .await;
                    }
                    return verdict;
                }
                Ok(Err(e)) => self.redis_failed(now_ms, &e.to_string()),
                Err(_) => self.redis_failed(now_ms, "timeout"),
            }
        }
        self.local.admit(policy, now_ms)
    }

    pub async fn add_tokens(&self, id: &Arc<str>, tokens: u64, now_ms: i64) {
        if tokens == 0 {
            return;
        }
        if let Some(mut conn) = self.redis_now(now_ms) {
            let key = format!("sy:rl:{id}:{}:t", now_ms.div_euclid(WINDOW_MS));
            let mut pipe = redis::pipe();
            pipe.incr(&key, tokens).ignore().expire(&key, 120).ignore();
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => self.redis_failed(now_ms, &e.to_string()),
                Err(_) => self.redis_failed(now_ms, "timeout"),
            }
        }
        self.local.add_tokens(id, tokens, now_ms);
    }

    pub fn prune(&self, now_ms: i64) {
        self.local.prune(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::scopes::Scope;

    fn policy(rpm: Option<u64>, tpm: Option<u64>) -> KeyPolicy {
        KeyPolicy {
            id: Arc::from("key_test"),
            user: Arc::from("alice"),
            scope: Scope::default(),
            budget: None,
            rpm,
            tpm,
            concurrency: Default::default(),
            expires_at: None,
        }
    }

    #[test]
    fn requests_per_minute() {
        let l = LocalLimiter::default();
        let p = policy(Some(3), None);
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS; // a window start
        for i in 0..3 {
            let info = l.admit(&p, t0 + i).unwrap();
            assert_eq!(info.requests.unwrap().remaining, 2 - i as u64);
        }
        let r = l.admit(&p, t0 + 10_000).unwrap_err();
        assert_eq!(r.class, "requests");
        assert_eq!(r.retry_after_secs, 50);
        assert_eq!(r.info.requests.unwrap().remaining, 0);
        // Half-way through the next window half of the previous one still counts.
        assert!(l.admit(&p, t0 + WINDOW_MS + 1_000).is_err());
        assert!(l.admit(&p, t0 + WINDOW_MS + 40_000).is_ok());
        // Much later everything is forgotten.
        for i in 0..3 {
            assert!(l.admit(&p, t0 + 10 * WINDOW_MS + i).is_ok());
        }
    }

    #[test]
    fn tokens_per_minute() {
        let l = LocalLimiter::default();
        let p = policy(None, Some(100));
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS;
        assert!(l.admit(&p, t0).is_ok());
        l.add_tokens(&p.id, 60, t0 + 1);
        let info = l.admit(&p, t0 + 2).unwrap();
        assert_eq!(info.tokens.unwrap().remaining, 40);
        l.add_tokens(&p.id, 60, t0 + 3);
        let r = l.admit(&p, t0 + 4).unwrap_err();
        assert_eq!(r.class, "tokens");
        assert!(l.admit(&p, t0 + 3 * WINDOW_MS).is_ok());
    }

    #[test]
    fn reset_table_matches_the_format() {
        for ms in (0..70_000)
            .step_by(7)
            .chain([999, 1000, 1001, 59_999, 60_000, 3_600_000])
        {
            assert_eq!(reset(ms).to_str().unwrap(), reset_text(ms), "{ms} ms");
        }
    }

    #[test]
    fn header_format() {
        let info = RateInfo {
            requests: Some(Figures {
                limit: 60,
                remaining: 59,
                reset_ms: 1500,
            }),
            tokens: Some(Figures {
                limit: 1000,
                remaining: 0,
                reset_ms: 61_000,
            }),
        };
        let text =
            |(k, v): (HeaderName, HeaderValue)| (k.to_string(), v.to_str().unwrap().to_owned());
        let h: Vec<_> = info.headers().map(text).collect();
        let has = |k: &str, v: &str| h.contains(&(k.to_owned(), v.to_owned()));
        assert_eq!(h.len(), 6);
        assert!(has("x-ratelimit-limit-requests", "60"));
        assert!(has("x-ratelimit-remaining-requests", "59"));
        assert!(has("x-ratelimit-reset-requests", "2s"));
        assert!(has("x-ratelimit-limit-tokens", "1000"));
        assert!(has("x-ratelimit-reset-tokens", "1m1s"));
        assert!(has("x-ratelimit-remaining-tokens", "0"));
        let h: Vec<_> = RateInfo {
            requests: Some(Figures {
                limit: 1,
                remaining: 0,
                reset_ms: 120,
            }),
            tokens: None,
        }
        .headers()
        .map(text)
        .collect();
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[2],
            ("x-ratelimit-reset-requests".to_owned(), "120ms".to_owned())
        );
    }
}
