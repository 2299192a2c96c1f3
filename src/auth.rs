//! Caller authentication with gateway API keys.
//!
//! Keys come from the config as `key` (plain, usually `${ENV}`) or `key_sha256`; only SHA-256
//! digests are kept in memory. A presented key is hashed and looked up by digest, then the
//! digests are compared in constant time, so timing reveals nothing about stored keys.
//! The key may arrive in any header an SDK uses for its own provider, so each provider's SDK
//! works against the gateway with only its base URL and key changed.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::raw::RawKey;
use crate::config::Problem;
use crate::errors::GatewayError;
use crate::limits::Concurrency;

/// Headers a gateway key may arrive in, in the order they are consulted. All of them are
/// removed before a request goes upstream.
pub const KEY_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<str>,
    /// The key's id: `key_...` for store keys, `cfg:` and the first 8 hex digits of the
    /// digest for config keys.
    pub key_id: Arc<str>,
    /// Scopes, budget and limits of a store key (config keys have none).
    pub policy: Option<Arc<crate::governance::keys::KeyPolicy>>,
    /// The key's own caps on open streams and requests in flight (None: the server's).
    pub concurrency: Concurrency,
    /// A config key's `cache:` (store keys have none).
    pub cache: Option<crate::cache::CachePolicy>,
}

/// The gateway keys, by SHA-256 digest.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], ConfigKey>,
}

/// A config key as the request path sees it.
#[derive(Debug)]
struct ConfigKey {
    user: Arc<str>,
    key_id: Arc<str>,
    concurrency: Concurrency,
    cache: Option<crate::cache::CachePolicy>,
}

impl KeyTable {
    pub fn from_raw(keys: &[RawKey], problems: &mut Vec<Problem>) -> KeyTable {
        let mut by_digest = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let path = format!("auth.keys[{i}]");
            if k.user.trim().is_empty() {
                problems.push(Problem::new(format!("{path}.user"), "must not be empty"));
            }
            let digest = match (&k.key, &k.key_sha256) {
                (Some(_), Some(_)) => {
                    problems.push(Problem::new(
                        &path,
                        "give either `key` or `key_sha256`, not both",
                    ));
                    continue;
                }
                (None, None) => {
                    problems.push(Problem::new(&path, "needs `key` or `key_sha256`"));
                    continue;
                }
                (Some(key), None) => {
                    if key.len() < 8 {
                        problems.push(Problem::new(
                            format!("{path}.key"),
                            "is too short (at least 8 characters)",
                        ));
                        continue;
                    }
                    sha256(key.as_bytes())
                }
                (None, Some(hex_digest)) => {
                    let mut d = [0u8; 32];
                    if hex::decode_to_slice(hex_digest.trim(), &mut d).is_err() {
                        problems.push(Problem::new(
                            format!("{path}.key_sha256"),
                            "must be 64 hexadecimal characters (the SHA-256 of the key)",
                        ));
                        continue;
                    }
                    d
                }
            };
            for (field, v) in [
                ("max_streams", k.max_streams),
                ("max_requests_in_flight", k.max_requests_in_flight),
            ] {
                if v.is_some_and(|v| v == 0 || v > 1_000_000) {
                    problems.push(Problem::new(
                        format!("{path}.{field}"),
                        "must be between 1 and 1000000",
                    ));
                }
            }
            let entry = ConfigKey {
                user: Arc::from(k.user.as_str()),
                key_id: Arc::from(format!("cfg:{}", hex::encode(&digest[..4]))),
                concurrency: Concurrency {
                    streams: k.max_streams.map(crate::limits::cap),
                    requests: k.max_requests_in_flight.map(crate::limits::cap),
                },
                cache: k.cache.as_ref().and_then(|c| {
                    crate::cache::CachePolicy::from_raw(c, &format!("{path}.cache"), problems)
                }),
            };
            if by_digest.insert(digest, entry).is_some() {
                problems.push(Problem::new(&path, "the same key is configured twice"));
            }
        }
        KeyTable { by_digest }
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Authenticates the caller from the request headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
        let presented =
            presented_key(headers).ok_or(GatewayError::Unauthenticated { missing: true })?;
        self.lookup(&sha256(presented))
            .ok_or(GatewayError::Unauthenticated { missing: false })
    }

    /// The caller whose key has this digest (constant-time comparison of the digests).
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<Caller> {
        match self.by_digest.get_key_value(digest) {
            Some((stored, k)) if bool::from(stored.ct_eq(digest)) => Some(Caller {
                user: k.user.clone(),
                key_id: k.key_id.clone(),
                policy: None,
                concurrency: k.concurrency,
                cache: k.cache,
            }),
            _ => None,
        }
    }
}

/// The key the caller presented, from the first key header that carries one.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    for name in KEY_HEADERS {
        let Some(v) = headers.get(name) else { continue };
        let v = v.as_bytes();
        let key = if name == "authorization" {
            match v.get(..7) {
                Some(p) if p.eq_ignore_ascii_case(b"bearer ") => &v[7..],
                _ => continue,
            }
        } else {
            v
        };
        let key = key.trim_ascii();
        if !key.is_empty() {
            return Some(key);
        }
    }
    None
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KeyTable {
        let keys = vec![
            RawKey {
                user: "alice".into(),
                key: Some("sk-alice-123".into()),
                key_sha256: None,
                max_streams: None,
                max_requests_in_flight: None,
                cache: None,
            },
            RawKey {
                user: "bob".into(),
                key: None,
                key_sha256: Some(hex::encode(sha256(b"sk-bob-4567"))),
                max_streams: Some(2),
                max_requests_in_flight: None,
                cache: None,
            },
        ];
        let mut problems = Vec::new();
        let t = KeyTable::from_raw(&keys, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        t
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn accepts_every_sdk_header() {
        let t = table();
        for (name, value) in [
            ("authorization", "Bearer sk-alice-123"),
            ("authorization", "bearer sk-alice-123"),
            ("x-api-key", "sk-alice-123"),
            ("api-key", "sk-alice-123"),
            ("x-goog-api-key", "sk-alice-123"),
        ] {
            assert_eq!(
                &*t.authenticate(&headers(name, value)).unwrap().user,
                "alice",
                "{name}"
            );
        }
        let bob = t
            .authenticate(&headers("x-api-key", "sk-bob-4567"))
            .unwrap();
        assert_eq!(&*bob.user, "bob");
        // A config key's own concurrency caps travel with its caller.
        assert_eq!(bob.concurrency.streams, Some(2));
        assert_eq!(bob.concurrency.requests, None);
    }

    #[test]
    fn a_keys_own_caps_must_be_positive() {
        let keys = vec![RawKey {
            user: "carol".into(),
            key: Some("sk-carol-123".into()),
            key_sha256: None,
            max_streams: Some(0),
            max_requests_in_flight: Some(2_000_000),
            cache: None,
        }];
        let mut problems = Vec::new();
        KeyTable::from_raw(&keys, &mut problems);
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "auth.keys[0].max_streams",
                "auth.keys[0].max_requests_in_flight"
            ]
        );
    }

    #[test]
    fn refuses_missing_and_unknown_keys() {
        let t = table();
        assert_eq!(
            t.authenticate(&HeaderMap::new()).unwrap_err(),
            GatewayError::Unauthenticated { missing: true }
        );
        assert_eq!(
            t.authenticate(&headers("authorization", "Basic abc"))
                .unwrap_err(),
            GatewayError::Unauthenticated { missing: true }
        );
        assert_eq!(
            t.authenticate(&headers("authorization", "Bearer sk-alice-124"))
                .unwrap_err(),
            GatewayError::Unauthenticated { missing: false }
        );
    }
}
