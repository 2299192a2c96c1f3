//! Store keys: creation (the key is shown once; only its SHA-256 is stored), rotation,
//! revocation, and the compiled form the request path checks ([`KeyPolicy`]).
//!
//! A key is `sk-sy-` followed by 32 random bytes from the operating system (base64url, 43
//! characters). Its id (`key_` + 12 hex characters) is public: it names the key in listings,
//! usage records and audit events.

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::budgets::{format_time, parse_date, Budget, Period};
use super::scopes::Scope;
use crate::store::{KeyRecord, Store};

pub const KEY_PREFIX: &str = "sk-sy-";

/// What `keys create` (CLI or admin API) asks for.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub user: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Most streams open at once (overrides `server.max_streams_per_key`).
    #[serde(default)]
    pub max_streams: Option<u64>,
    /// Most requests in flight at once (overrides `server.max_requests_in_flight_per_key`).
    #[serde(default)]
    pub max_requests_in_flight: Option<u64>,
    /// `YYYY-MM-DD` (UTC) or `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Splits `gpt-*,claude-*` into patterns.
pub fn split_patterns(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl KeySpec {
    /// Checks the request and turns it into a record (without the secret's digest).
    fn validate(&self, now: i64) -> Result<KeyRecord, String> {
        let user = self.user.trim();
        if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
            return Err("`user` must be 1 to 128 printable characters".into());
        }
        for p in self.models.iter().chain(&self.providers) {
            if p.is_empty() || p.contains(',') || p.len() > 200 {
                return Err(format!("invalid scope pattern `{p}`"));
            }
        }
        let period = match (&self.budget_usd, &self.period) {
            (Some(b), p) => {
                if !(b.is_finite() && *b >= 0.0) {
                    return Err("`budget_usd` must be a non-negative number".into());
                }
                let p = p.as_deref().unwrap_or("month");
                Some(
                    Period::parse(p)
                        .ok_or_else(|| {
                            format!("`period` must be day, week, month or total, not `{p}`")
                        })?
                        .as_str()
                        .to_owned(),
                )
            }
            (None, Some(_)) => return Err("`period` needs `budget_usd`".into()),
            (None, None) => None,
        };
        for (name, v) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if v == Some(0) || v.is_some_and(|v| v > i64::MAX as u64) {
                return Err(format!("`{name}` must be a positive integer"));
            }
        }
        for (name, v) in [
            ("max_streams", self.max_streams),
            ("max_requests_in_flight", self.max_requests_in_flight),
        ] {
            if v.is_some_and(|v| v == 0 || v > 1_000_000) {
                return Err(format!("`{name}` must be between 1 and 1000000"));
            }
        }
        let expires_at = match &self.expires {
            None => None,
            Some(s) => {
                let t = parse_date(s).ok_or_else(|| {
                    format!("`expires` must be a date like 2027-01-01, not `{s}`")
                })?;
                if t <= now {
                    return Err("`expires` is in the past".into());
                }
                Some(t)
            }
        };
        Ok(KeyRecord {
            id: format!("key_{}", hex::encode(random::<6>())),
            user: user.to_owned(),
            key_sha256: String::new(),
            prefix: String::new(),
            models: self.models.clone(),
            providers: self.providers.clone(),
            budget_usd: self.budget_usd,
            period,
            rpm: self.rpm.map(|v| v as i64),
            tpm: self.tpm.map(|v| v as i64),
            max_streams: self.max_streams.map(|v| v as i64),
            max_requests_in_flight: self.max_requests_in_flight.map(|v| v as i64),
            expires_at,
            created_at: now,
            revoked_at: None,
            updated_at: now,
        })
    }
}

/// Random bytes from the operating system's CSPRNG.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system's random source");
    b
}

/// A new secret and its SHA-256 (hex) and display prefix.
fn new_secret() -> (String, String, String) {
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
    );
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    let prefix = secret[..KEY_PREFIX.len() + 4].to_owned();
    (secret, digest, prefix)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A new key: the record as stored and the key itself, which exists nowhere else.
pub struct Created {
    pub record: KeyRecord,
    pub secret: String,
}

pub async fn create(store: &Store, spec: &KeySpec) -> Result<Created, String> {
    let mut record = spec.validate(now_secs())?;
    let (secret, digest, prefix) = new_secret();
    record.key_sha256 = digest;
    record.prefix = prefix;
    store
        .insert_key(&record)
        .await
        .map_err(|e| format!("store: {e}"))?;
    Ok(Created { record, secret })
}

/// Gives a live key a new secret (same id, scopes, budget and limits); the old secret stops
/// working as soon as the replicas' caches refresh.
pub async fn rotate(store: &Store, id: &str) -> Result<Option<Created>, String> {
    let (secret, digest, prefix) = new_secret();
    let ok = store
        .rotate_key(id, &digest, &prefix, now_secs())
        .await
        .map_err(|e| format!("store: {e}"))?;
    if !ok {
        return Ok(None);
    }
    let record = store
        .get_key(id)
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or("the key vanished")?;
    Ok(Some(Created { record, secret }))
}

/// A key as the request path sees it.
#[derive(Debug)]
pub struct KeyPolicy {
    pub id: Arc<str>,
    pub user: Arc<str>,
    pub scope: Scope,
    pub budget: Option<Budget>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// The key's own caps on open streams and requests in flight.
    pub concurrency: crate::limits::Concurrency,
    pub expires_at: Option<i64>,
}

impl KeyPolicy {
    pub fn from_record(r: &KeyRecord) -> KeyPolicy {
        KeyPolicy {
            id: Arc::from(r.id.as_str()),
            user: Arc::from(r.user.as_str()),
            scope: Scope {
                models: r.models.clone(),
                providers: r.providers.clone(),
            },
            budget: r.budget_usd.map(|limit_usd| Budget {
                limit_usd,
                period: r
                    .period
                    .as_deref()
                    .and_then(Period::parse)
                    .unwrap_or(Period::Month),
            }),
            rpm: r.rpm.map(|v| v as u64),
            tpm: r.tpm.map(|v| v as u64),
            concurrency: crate::limits::Concurrency {
                streams: r.max_streams.map(|v| crate::limits::cap(v.max(1) as u64)),
                requests: r
                    .max_requests_in_flight
                    .map(|v| crate::limits::cap(v.max(1) as u64)),
            },
            expires_at: r.expires_at,
        }
    }

    pub fn has_limits(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// A key record for people and JSON: never the secret or its digest.
pub fn describe(r: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "user": r.user,
        "prefix": format!("{}…", r.prefix),
        "models": r.models,
        "providers": r.providers,
        "budget_usd": r.budget_usd,
        "period": r.period,
        "rpm": r.rpm,
        "tpm": r.tpm,
        "max_streams": r.max_streams,
        "max_requests_in_flight": r.max_requests_in_flight,
        "expires_at": r.expires_at.map(format_time),
        "created_at": format_time(r.created_at),
        "revoked_at": r.revoked_at.map(format_time),
        "status": status(r, now_secs()),
    })
}

pub fn status(r: &KeyRecord, now: i64) -> &'static str {
    if r.revoked_at.is_some() {
        "revoked"
    } else if r.expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else {
        "active"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_only_hashed() {
        let (a, da, pa) = new_secret();
        let (b, _, _) = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_eq!(da, hex::encode(Sha256::digest(a.as_bytes())));
        assert!(a.starts_with(&pa) && pa.len() == 10);
    }

    #[test]
    fn specs_are_validated() {
        let now = 1_800_000_000;
        let ok = KeySpec {
            user: "alice".into(),
            models: split_patterns("gpt-*, claude-*"),
            budget_usd: Some(100.0),
            rpm: Some(60),
            ..Default::default()
        };
        let r = ok.validate(now).unwrap();
        assert_eq!(r.models, ["gpt-*", "claude-*"]);
        assert_eq!(r.period.as_deref(), Some("month"));
        assert!(r.id.starts_with("key_") && r.id.len() == 16);
        for bad in [
            KeySpec {
                user: " ".into(),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                budget_usd: Some(-1.0),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                period: Some("month".into()),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                budget_usd: Some(1.0),
                period: Some("year".into()),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                rpm: Some(0),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                max_streams: Some(0),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                expires: Some("2020-01-01".into()),
                ..Default::default()
            },
            KeySpec {
                user: "a".into(),
                expires: Some("tomorrow".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.validate(now).is_err(), "{bad:?}");
        }
    }
}
