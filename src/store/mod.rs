//! The governance store: keys, users (budgets), usage records, daily spend, audit events and
//! the admin second factor, in SQLite (embedded, one WAL-mode file) or PostgreSQL (shared by
//! a fleet of replicas).
//!
//! One implementation over sqlx's `Any` driver (except the usage batch on SQLite, written
//! through the raw connection handle for speed: [`sqlite_batch`]): the SQL is portable (numbered `$N`
//! placeholders, which both drivers accept; `ON CONFLICT ... DO UPDATE`; integer epoch
//! times), so SQLite and PostgreSQL run the very same statements and the same migration
//! files (`migrations/`, compiled in and applied at start; PostgreSQL takes an advisory lock
//! so replicas starting together apply them once).
//!
//! Nothing here runs on a request path: the gateway reads keys and spend from in-memory
//! snapshots that a background task refreshes, and writes usage in batches
//! (see [`crate::governance`]).

pub mod responses;
pub mod secret_key;
mod sqlite_batch;
pub mod usage_block;

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

/// The schema migrations, oldest first. Never edit one that shipped: add a new file.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "governance",
        include_str!("../../migrations/0001_governance.sql"),
    ),
    (
        2,
        "usage_blocks",
        include_str!("../../migrations/0002_usage_blocks.sql"),
    ),
    (
        3,
        "key_concurrency",
        include_str!("../../migrations/0003_key_concurrency.sql"),
    ),
    (
        4,
        "responses",
        include_str!("../../migrations/0004_responses.sql"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the store lives, from `auth.store` (`sqlite:PATH` or `postgres://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub backend: Backend,
    url: String,
}

impl StoreUrl {
    pub fn parse(s: &str) -> std::result::Result<StoreUrl, String> {
        let s = s.trim();
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(
                    "`sqlite:` needs a file path, e.g. sqlite:/var/lib/switchyard/switchyard.db"
                        .into(),
                );
            }
            return Ok(StoreUrl {
                backend: Backend::Sqlite,
                url: format!("sqlite://{path}?mode=rwc"),
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreUrl {
                backend: Backend::Postgres,
                url: s.to_owned(),
            });
        }
        Err("must be `sqlite:PATH` or a `postgres://` URL".into())
    }

    /// For messages: the URL without a password.
    pub fn redacted(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.url.trim_end_matches("?mode=rwc").to_owned(),
            Backend::Postgres => match (self.url.find("://"), self.url.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &self.url[s + 3..at];
                    let user = creds.split(':').next().unwrap_or("");
                    format!("{}://{user}:***@{}", &self.url[..s], &self.url[at + 1..])
                }
                _ => self.url.clone(),
            },
        }
    }

    fn sqlite_path(&self) -> Option<&str> {
        (self.backend == Backend::Sqlite).then(|| {
            self.url
                .trim_start_matches("sqlite://")
                .trim_end_matches("?mode=rwc")
        })
    }
}

/// Creates the SQLite file readable by its owner only (0600) when it does not exist yet:
/// it holds key digests, usage and the admin second factor. SQLite gives its `-wal` and
/// `-shm` files the database file's permissions, so they are 0600 too. An existing file
/// keeps its mode (an operator may have chosen a group), with a warning when others can
/// read it.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o007 != 0 {
                    log::warn!(
                        "the store {} is readable by other users (mode {:o}); chmod 600 it",
                        path.display(),
                        m.permissions().mode() & 0o777
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub type StoreError = sqlx::Error;

/// A record's cost as stored: a NaN would fail a NOT NULL column (PostgreSQL roll-up) and the
/// whole batch again at every retry, and would poison every report sum.
fn stored_cost(u: &UsageRecord) -> f64 {
    if u.cost_usd.is_finite() {
        u.cost_usd
    } else {
        0.0
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A key as stored: never the key itself, only its SHA-256 (hex) and a display prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub user: String,
    pub key_sha256: String,
    /// The first characters of the key, to recognise it in listings (`sk-sy-AbCd`).
    pub prefix: String,
    pub models: Vec<String>,
    pub providers: Vec<String>,
    pub budget_usd: Option<f64>,
    pub period: Option<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// Most open streams / requests in flight for this key (None: the server's setting).
    pub max_streams: Option<i64>,
    pub max_requests_in_flight: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub updated_at: i64,
}

/// A user's budget (`switchyard users budget`).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub name: String,
    pub budget_usd: Option<f64>,
    pub period: Option<String>,
    pub updated_at: i64,
}

/// One request, as recorded for cost tracking: never content, never a key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageRecord {
    pub ts_ms: i64,
    pub request_id: String,
    pub user: Arc<str>,
    pub key_id: Arc<str>,
    pub provider: Arc<str>,
    pub model: String,
    pub route: &'static str,
    pub status: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Answered by the response cache (no provider call; `cost_usd` 0).
    pub cached: bool,
    /// The request's W3C trace id when it had a trace context (tracing on, sampled or not).
    pub trace_id: Option<u128>,
}

/// An audit event: authentication failures, key lifecycle, admin actions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEvent {
    pub ts_ms: i64,
    pub event: String,
    pub actor: String,
    pub subject: String,
    /// A small JSON object with the event's particulars (never secrets).
    pub detail: String,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReportRow {
    pub group: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Key,
    Model,
    Provider,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "user" => GroupBy::User,
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
    /// SQLite only: the batch writer's own connection (see [`sqlite_batch`]).
    sqlite_writer: Option<Arc<tokio::sync::Mutex<sqlx::SqliteConnection>>>,
    /// Seals the TOTP secret at rest (see [`secret_key`]); None: plain text.
    secret_key: Option<Arc<secret_key::SecretKey>>,
}

const KEY_COLUMNS: &str = "id, user_name, key_sha256, prefix, models, providers, budget_micro_usd, period, rpm, tpm, expires_at, created_at, revoked_at, updated_at, max_streams, max_requests_in_flight";

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Budgets are stored as integer micro-dollars.
fn to_micros(usd: Option<f64>) -> Option<i64> {
    usd.map(|v| (v * 1e6).round() as i64)
}

fn from_micros(m: Option<i64>) -> Option<f64> {
    m.map(|v| v as f64 / 1e6)
}

fn key_from_row(r: &AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        key_sha256: r.try_get(2)?,
        prefix: r.try_get(3)?,
        models: split_list(&r.try_get::<String, _>(4)?),
        providers: split_list(&r.try_get::<String, _>(5)?),
        budget_usd: from_micros(r.try_get(6)?),
        period: r.try_get(7)?,
        rpm: r.try_get(8)?,
        tpm: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
        revoked_at: r.try_get(12)?,
        updated_at: r.try_get(13)?,
        max_streams: r.try_get(14)?,
        max_requests_in_flight: r.try_get(15)?,
    })
}

impl Store {
    /// Connects (creating the SQLite file and its directory when missing) and applies the
    /// migrations.
    pub async fn open(url: &StoreUrl) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let secret_key = secret_key::SecretKey::load()
            .map_err(|e| sqlx::Error::Configuration(e.into()))?
            .map(Arc::new);
        if let Some(path) = url.sqlite_path() {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
            create_private(std::path::Path::new(path)).map_err(sqlx::Error::Io)?;
        }
        let max = match url.backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let sqlite = url.backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // In WAL mode NORMAL syncs at checkpoints, not at every commit:
                        // SQLite's recommended setting with WAL; a crash of the process
                        // loses nothing committed (only a power loss may lose the last
                        // batches), and the batch writer does not wait on fsync 5×/s.
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url.url)
            .await?;
        let mut store = Store {
            pool,
            backend: url.backend,
            sqlite_writer: None,
            secret_key,
        };
        if store.backend == Backend::Sqlite {
            // WAL: readers never wait for the batch writer. Persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        if sqlite {
            use sqlx::{sqlite::SqliteConnectOptions, sqlite::SqliteSynchronous, ConnectOptions};
            // No automatic checkpoint on the batch writer's connection: its fsync would
            // stall the writes; the governance task checkpoints on a pool connection
            // instead (`checkpoint`).
            let writer = SqliteConnectOptions::from_str(&url.url)?
                .synchronous(SqliteSynchronous::Normal)
                .pragma("wal_autocheckpoint", "0")
                .connect()
                .await?;
            store.sqlite_writer = Some(Arc::new(tokio::sync::Mutex::new(writer)));
        }
        Ok(store)
    }

    /// SQLite: copies what the write-ahead log holds into the database file (PASSIVE: never
    /// waits for the writer, which goes on appending meanwhile). PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        let migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ------------------------------------------------------------------ keys

    pub async fn insert_key(&self, k: &KeyRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO sy_keys ({KEY_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"
        ))
        .bind(&k.id)
        .bind(&k.user)
        .bind(&k.key_sha256)
        .bind(&k.prefix)
        .bind(k.models.join(","))
        .bind(k.providers.join(","))
        .bind(to_micros(k.budget_usd))
        .bind(k.period.clone())
        .bind(k.rpm)
        .bind(k.tpm)
        .bind(k.expires_at)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .bind(k.updated_at)
        .bind(k.max_streams)
        .bind(k.max_requests_in_flight)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await
    }

    /// Every key (revoked ones too when `all`), newest first.
    pub async fn list_keys(&self, all: bool) -> Result<Vec<KeyRecord>> {
        let filter = if all { "" } else { "WHERE revoked_at IS NULL" };
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM sy_keys {filter} ORDER BY created_at DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM sy_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Revokes a key; false when there is no such (unrevoked) key.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE sy_keys SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces a live key's secret (same id, scopes and limits); false when there is no
    /// such live key.
    pub async fn rotate_key(&self, id: &str, sha256: &str, prefix: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE sy_keys SET key_sha256 = $1, prefix = $2, updated_at = $3 WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(sha256)
        .bind(prefix)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// The version of the key and user tables (bumped by every change): the cache reloads
    /// only when it moved.
    pub async fn keys_version(&self) -> Result<i64> {
        sqlx::query("SELECT version FROM sy_meta WHERE name = 'keys'")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)
    }

    // ------------------------------------------------------------------ users

    pub async fn set_user_budget(
        &self,
        name: &str,
        budget_usd: Option<f64>,
        period: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sy_users (name, budget_micro_usd, period, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET budget_micro_usd = excluded.budget_micro_usd, period = excluded.period, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(to_micros(budget_usd))
        .bind(period.map(str::to_owned))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(
            "SELECT name, budget_micro_usd, period, updated_at FROM sy_users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRecord {
                    name: r.try_get(0)?,
                    budget_usd: from_micros(r.try_get(1)?),
                    period: r.try_get(2)?,
                    updated_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ usage and audit

    /// Writes usage records (encoded into blocks here) and audit events: [`Store::write_blocks`].
    pub async fn write_batch(&self, usage: &[UsageRecord], audit: &[AuditEvent]) -> Result<()> {
        let blocks = usage
            .chunks(usage_block::MAX_RECORDS)
            .map(usage_block::encode)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        self.write_blocks(&blocks, audit).await
    }

    /// Writes usage blocks, their daily spend roll-up and audit events in one transaction:
    /// all of it, or (on any error) none of it, so a retried batch is never counted twice.
    pub async fn write_blocks(
        &self,
        blocks: &[usage_block::Encoded],
        audit: &[AuditEvent],
    ) -> Result<()> {
        if blocks.is_empty() && audit.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.sqlite_writer {
            let mut conn = writer.lock().await;
            let mut handle = conn.lock_handle().await?;
            return sqlite_batch::write_batch(handle.as_raw_handle(), blocks, audit);
        }
        let mut tx = self.pool.begin().await?;
        for block in blocks {
            sqlx::query(
                "INSERT INTO sy_usage_blocks (first_ts, last_ts, records, data) VALUES ($1,$2,$3,$4)",
            )
            .bind(block.first_ts_ms)
            .bind(block.last_ts_ms)
            .bind(block.records)
            .bind(&block.data)
            .execute(&mut *tx)
            .await?;
            for d in &block.daily {
                sqlx::query(
                    "INSERT INTO sy_spend_daily (day, key_id, user_name, cost_usd, tokens, requests) VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (day, key_id) DO UPDATE SET cost_usd = sy_spend_daily.cost_usd + excluded.cost_usd, \
                     tokens = sy_spend_daily.tokens + excluded.tokens, requests = sy_spend_daily.requests + excluded.requests",
                )
                .bind(d.day)
                .bind(&*d.key_id)
                .bind(&*d.user)
                .bind(d.cost_usd)
                .bind(d.tokens)
                .bind(d.requests)
                .execute(&mut *tx)
                .await?;
            }
        }
        for a in audit {
            sqlx::query(
                "INSERT INTO sy_audit (ts, event, actor, subject, detail) VALUES ($1,$2,$3,$4,$5)",
            )
            .bind(a.ts_ms)
            .bind(&a.event)
            .bind(&a.actor)
            .bind(&a.subject)
            .bind(&a.detail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Spend since `day` (UTC days since the epoch, inclusive), per key and per user.
    pub async fn spend_since(
        &self,
        day: i64,
    ) -> Result<(HashMap<String, f64>, HashMap<String, f64>)> {
        let rows = sqlx::query(
            "SELECT key_id, user_name, CAST(SUM(cost_usd) AS DOUBLE PRECISION) FROM sy_spend_daily WHERE day >= $1 GROUP BY key_id, user_name",
        )
        .bind(day)
        .fetch_all(&self.pool)
        .await?;
        let (mut keys, mut users) = (HashMap::new(), HashMap::new());
        for r in rows {
            let key: String = r.try_get(0)?;
            let user: String = r.try_get(1)?;
            let cost: f64 = r.try_get::<Option<f64>, _>(2)?.unwrap_or(0.0);
            *keys.entry(key).or_insert(0.0) += cost;
            *users.entry(user).or_insert(0.0) += cost;
        }
        Ok((keys, users))
    }

    /// Requests, tokens and spend since `since_ms`, grouped, most expensive first.
    pub async fn usage_report(&self, by: GroupBy, since_ms: i64) -> Result<Vec<ReportRow>> {
        let mut groups: HashMap<String, ReportRow> = HashMap::new();
        self.each_usage_since(since_ms, |u| {
            let group = match by {
                GroupBy::User => u.user,
                GroupBy::Key => u.key_id,
                GroupBy::Model => u.model,
                GroupBy::Provider => u.provider,
            };
            let row = groups.entry(group).or_insert_with_key(|g| ReportRow {
                group: g.clone(),
                requests: 0,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
            });
            row.requests += 1;
            row.input_tokens += u.input_tokens;
            row.output_tokens += u.output_tokens;
            row.cost_usd += u.cost_usd;
        })
        .await?;
        let mut rows: Vec<ReportRow> = groups.into_values().collect();
        rows.sort_by(|a, b| {
            b.cost_usd
                .total_cmp(&a.cost_usd)
                .then_with(|| a.group.cmp(&b.group))
        });
        Ok(rows)
    }

    /// Calls `each` for every usage record at or after `since_ms`: first the rows written
    /// before usage blocks existed (`sy_usage`, migration 1), then the blocks, oldest
    /// first, decoded one at a time (never all in memory).
    pub async fn each_usage_since(
        &self,
        since_ms: i64,
        mut each: impl FnMut(usage_block::StoredUsage),
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut legacy = sqlx::query(
            "SELECT ts, request_id, user_name, key_id, provider, model, route, status, \
             input_tokens, output_tokens, cost_usd FROM sy_usage WHERE ts >= $1 ORDER BY ts",
        )
        .bind(since_ms)
        .fetch(&self.pool);
        while let Some(r) = legacy.try_next().await? {
            each(usage_block::StoredUsage {
                ts_ms: r.try_get(0)?,
                request_id: r.try_get(1)?,
                user: r.try_get(2)?,
                key_id: r.try_get(3)?,
                provider: r.try_get(4)?,
                model: r.try_get(5)?,
                route: r.try_get(6)?,
                status: r.try_get(7)?,
                input_tokens: r.try_get(8)?,
                output_tokens: r.try_get(9)?,
                cost_usd: r.try_get(10)?,
                cached: false,
                trace_id: None,
            });
        }
        drop(legacy);
        let mut blocks =
            sqlx::query("SELECT data FROM sy_usage_blocks WHERE last_ts >= $1 ORDER BY first_ts")
                .bind(since_ms)
                .fetch(&self.pool);
        while let Some(row) = blocks.try_next().await? {
            let data: Vec<u8> = row.try_get(0)?;
            usage_block::decode(&data, |u| {
                if u.ts_ms >= since_ms {
                    each(u);
                }
            })
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        }
        Ok(())
    }

    /// Usage records held: in blocks, plus rows from before blocks.
    pub async fn count_usage(&self) -> Result<i64> {
        sqlx::query(
            "SELECT (SELECT COUNT(*) FROM sy_usage) + \
             (SELECT CAST(COALESCE(SUM(records), 0) AS BIGINT) FROM sy_usage_blocks)",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get(0)
    }

    /// Audit events since `since_ms`, oldest first, at most `limit`.
    pub async fn audit_since(&self, since_ms: i64, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT ts, event, actor, subject, detail FROM sy_audit WHERE ts >= $1 ORDER BY ts LIMIT $2",
        )
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    ts_ms: r.try_get(0)?,
                    event: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    detail: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Deletes the audit events older than `before_ms` (`audit.retention_days`); returns
    /// how many.
    pub async fn delete_audit_before(&self, before_ms: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sy_audit WHERE ts < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    // ------------------------------------------------------------------ admin TOTP

    /// Replaces the key that seals secrets at rest (tests; [`Store::open`] loads it from
    /// the environment).
    pub fn with_secret_key(mut self, key: Option<secret_key::SecretKey>) -> Store {
        self.secret_key = key.map(Arc::new);
        self
    }

    /// Secrets are sealed at rest (a key is configured).
    pub fn seals_secrets(&self) -> bool {
        self.secret_key.is_some()
    }

    /// Stores a new TOTP secret (base32), replacing any previous one: sealed when a key is
    /// configured, else in plain text.
    pub async fn set_totp_secret(&self, secret_b32: &str) -> Result<()> {
        let stored = match &self.secret_key {
            Some(k) => k.seal(secret_b32),
            None => secret_b32.to_owned(),
        };
        sqlx::query(
            "INSERT INTO sy_admin_totp (id, secret, last_step) VALUES ('admin', $1, 0) \
             ON CONFLICT (id) DO UPDATE SET secret = excluded.secret, last_step = 0",
        )
        .bind(stored)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The TOTP secret (base32). A plain one from before encryption is sealed in place when
    /// a key is configured; a sealed one without the right key is an error.
    pub async fn totp_secret(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret FROM sy_admin_totp WHERE id = 'admin'")
            .fetch_optional(&self.pool)
            .await?;
        let Some(stored) = row.map(|r| r.try_get::<String, _>(0)).transpose()? else {
            return Ok(None);
        };
        let config = |why: String| sqlx::Error::Configuration(why.into());
        match (&self.secret_key, secret_key::is_sealed(&stored)) {
            (Some(k), true) => k.open(&stored).map(Some).map_err(config),
            (None, true) => Err(config(format!(
                "the admin TOTP secret is encrypted; set {} (or the credential {}) to the key it was sealed with",
                secret_key::ENV,
                secret_key::CREDENTIAL
            ))),
            (Some(k), false) => {
                sqlx::query("UPDATE sy_admin_totp SET secret = $1 WHERE id = 'admin' AND secret = $2")
                    .bind(k.seal(&stored))
                    .bind(&stored)
                    .execute(&self.pool)
                    .await?;
                log::info!("the admin TOTP secret is now encrypted in the store");
                Ok(Some(stored))
            }
            (None, false) => Ok(Some(stored)),
        }
    }

    /// Marks time step `step` used; false when it (or a later one) was already used, which
    /// makes a code valid once across every replica sharing the store.
    pub async fn consume_totp_step(&self, step: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE sy_admin_totp SET last_step = $1 WHERE id = 'admin' AND last_step < $1",
        )
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query("UPDATE sy_meta SET version = version + 1 WHERE name = 'keys'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store upgraded from migration 1 keeps its per-request rows: reports and record
    /// reads see them beside the blocks written since.
    #[tokio::test]
    async fn rows_from_before_blocks_are_still_reported() {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-store-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = StoreUrl::parse(&format!("sqlite:{}/s.db", dir.display())).unwrap();
        let store = Store::open(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO sy_usage (ts, request_id, user_name, key_id, provider, model, route, \
             status, input_tokens, output_tokens, cost_usd) VALUES (5000, 'old', 'alice', 'key_a', \
             'openai', 'gpt-4', 'chat_completions', 200, 10, 20, 0.5)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let new = UsageRecord {
            ts_ms: 6000,
            request_id: "new".into(),
            user: Arc::from("alice"),
            key_id: Arc::from("key_a"),
            provider: Arc::from("openai"),
            model: "gpt-4".into(),
            route: "chat_completions",
            status: 200,
            input_tokens: 1,
            output_tokens: 2,
            cost_usd: 0.25,
            cached: true,
            trace_id: Some(0xabc),
        };
        store.write_batch(&[new], &[]).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 2);
        let report = store.usage_report(GroupBy::User, 0).await.unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(
            (
                report[0].requests,
                report[0].input_tokens,
                report[0].output_tokens
            ),
            (2, 11, 22)
        );
        assert!((report[0].cost_usd - 0.75).abs() < 1e-12);
        let mut ids = Vec::new();
        store
            .each_usage_since(5500, |u| ids.push(u.request_id))
            .await
            .unwrap();
        assert_eq!(ids, ["new"]);
        // Legacy rows have no trace id; block records keep theirs.
        let mut traces = Vec::new();
        store
            .each_usage_since(0, |u| traces.push((u.request_id, u.trace_id)))
            .await
            .unwrap();
        assert_eq!(
            traces,
            [
                ("old".to_owned(), None),
                (
                    "new".to_owned(),
                    Some("00000000000000000000000000000abc".to_owned())
                )
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The store file and its write-ahead log files are created readable by the owner
    /// only, whatever the umask.
    #[tokio::test]
    async fn a_new_sqlite_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "switchyard-mode-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = StoreUrl::parse(&format!("sqlite:{}/s.db", dir.display())).unwrap();
        let store = Store::open(&url).await.unwrap();
        store.set_totp_secret("JBSWY3DPEHPK3PXP").await.unwrap();
        for name in ["s.db", "s.db-wal", "s.db-shm"] {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With a key, the TOTP secret is stored sealed and read back; a plain secret from
    /// before is still read, and sealed on that read; without the key a sealed one is an
    /// error, never garbage.
    #[tokio::test]
    async fn the_totp_secret_is_sealed_at_rest() {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-seal-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = StoreUrl::parse(&format!("sqlite:{}/s.db", dir.display())).unwrap();
        let key = || Some(secret_key::SecretKey::parse(hex::encode([9u8; 32]).as_bytes()).unwrap());
        let raw = |store: &Store| {
            let pool = store.pool.clone();
            async move {
                sqlx::query("SELECT secret FROM sy_admin_totp")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .try_get::<String, _>(0)
                    .unwrap()
            }
        };
        const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        // Plain, as written by an earlier version (or without a key).
        let plain = Store::open(&url).await.unwrap().with_secret_key(None);
        plain.set_totp_secret(SECRET).await.unwrap();
        assert_eq!(raw(&plain).await, SECRET);
        // A key now: the plain secret is still read, and sealed in place.
        let sealed = Store::open(&url).await.unwrap().with_secret_key(key());
        assert_eq!(sealed.totp_secret().await.unwrap().as_deref(), Some(SECRET));
        let stored = raw(&sealed).await;
        assert!(secret_key::is_sealed(&stored), "{stored}");
        assert!(!stored.contains(SECRET));
        assert_eq!(sealed.totp_secret().await.unwrap().as_deref(), Some(SECRET));
        // A new secret is written sealed.
        sealed.set_totp_secret("KRSXG5CTMVRXEZLU").await.unwrap();
        assert!(!raw(&sealed).await.contains("KRSXG5CTMVRXEZLU"));
        assert_eq!(
            sealed.totp_secret().await.unwrap().as_deref(),
            Some("KRSXG5CTMVRXEZLU")
        );
        // Without the key (or with another one) it cannot be read.
        let e = plain.totp_secret().await.unwrap_err().to_string();
        assert!(e.contains(secret_key::ENV), "{e}");
        let wrong = Store::open(&url).await.unwrap().with_secret_key(Some(
            secret_key::SecretKey::parse(hex::encode([1u8; 32]).as_bytes()).unwrap(),
        ));
        assert!(wrong.totp_secret().await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn now_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    }

    #[test]
    fn store_urls() {
        let s = StoreUrl::parse("sqlite:/var/lib/switchyard/switchyard.db").unwrap();
        assert_eq!(s.backend, Backend::Sqlite);
        assert_eq!(s.sqlite_path(), Some("/var/lib/switchyard/switchyard.db"));
        assert_eq!(
            StoreUrl::parse("sqlite://rel/x.db").unwrap().sqlite_path(),
            Some("rel/x.db")
        );
        let p = StoreUrl::parse("postgres://sy:hunter2@db:5432/sy").unwrap();
        assert_eq!(p.backend, Backend::Postgres);
        assert!(!p.redacted().contains("hunter2"), "{}", p.redacted());
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("sqlite:").is_err());
    }
}
