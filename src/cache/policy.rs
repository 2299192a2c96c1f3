//! What is cached and for whom: a mapping's or key's `cache: {ttl_seconds, scope}`, and the
//! top-level `cache:` backend settings, validated.

use std::time::Duration;

use crate::config::raw::{RawCache, RawCachePolicy};
use crate::config::Problem;

/// Who shares a cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only requests made with the same gateway key (the default).
    Key,
    /// Every key of the same user.
    User,
    /// Every caller.
    Shared,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::User => "user",
            Scope::Shared => "shared",
        }
    }
}

/// A mapping's or key's `cache:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ttl: Duration,
    pub scope: Scope,
}

/// The longest TTL accepted (a year).
pub const MAX_TTL_SECS: u64 = 365 * 86_400;

impl CachePolicy {
    /// Validates `raw` at `path` (e.g. `model_mappings.gpt.cache`).
    pub fn from_raw(
        raw: &RawCachePolicy,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<CachePolicy> {
        let scope = match raw.scope.as_deref() {
            None | Some("key") => Scope::Key,
            Some("user") => Scope::User,
            Some("shared") => Scope::Shared,
            Some(_) => {
                problems.push(Problem::new(
                    format!("{path}.scope"),
                    "must be key, user or shared",
                ));
                return None;
            }
        };
        if raw.ttl_seconds == 0 || raw.ttl_seconds > MAX_TTL_SECS {
            problems.push(Problem::new(
                format!("{path}.ttl_seconds"),
                format!("must be between 1 and {MAX_TTL_SECS}"),
            ));
            return None;
        }
        Some(CachePolicy {
            ttl: Duration::from_secs(raw.ttl_seconds),
            scope,
        })
    }
}

/// Which store holds the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis(String),
}

/// The top-level `cache:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    pub backend: Backend,
    pub max_bytes: u64,
    pub compress_min_bytes: usize,
    pub max_entry_bytes: usize,
}

impl CacheSettings {
    pub fn from_raw(raw: &RawCache, problems: &mut Vec<Problem>) -> CacheSettings {
        let backend = match (raw.backend.as_str(), &raw.redis_url) {
            ("memory", None) => Backend::Memory,
            ("memory", Some(_)) => {
                problems.push(Problem::new(
                    "cache.redis_url",
                    "is only used with backend: redis",
                ));
                Backend::Memory
            }
            ("redis", Some(url)) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Backend::Redis(url.clone())
            }
            ("redis", _) => {
                problems.push(Problem::new(
                    "cache.redis_url",
                    "backend redis needs redis_url: redis://host:port",
                ));
                Backend::Memory
            }
            _ => {
                problems.push(Problem::new("cache.backend", "must be memory or redis"));
                Backend::Memory
            }
        };
        if raw.max_bytes < 1024 {
            problems.push(Problem::new("cache.max_bytes", "must be at least 1024"));
        }
        if raw.max_entry_bytes == 0 || raw.max_entry_bytes > 512 << 20 {
            problems.push(Problem::new(
                "cache.max_entry_bytes",
                "must be between 1 and 536870912",
            ));
        }
        CacheSettings {
            backend,
            max_bytes: raw.max_bytes.max(1024),
            compress_min_bytes: usize::try_from(raw.compress_min_bytes).unwrap_or(usize::MAX),
            max_entry_bytes: usize::try_from(raw.max_entry_bytes.min(512 << 20))
                .unwrap_or(usize::MAX),
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings::from_raw(&RawCache::default(), &mut Vec::new())
    }
}
