//! Governance: store keys beside the config's keys, per-key scopes, budgets per key and per
//! user, rate limits, usage records and the audit trail.
//!
//! The request path never waits on the database:
//! - keys, user budgets and spend come from an in-memory [`Snapshot`] (arc-swap) that a
//!   background task refreshes every `auth.refresh_seconds` (the key part only when the
//!   store's change counter moved), so a revocation is effective within seconds on every
//!   replica;
//! - a usage record is encoded at once into the open block of the worker thread's shard
//!   ([`UsageShards`]: a short, practically uncontended lock), audit events go into a
//!   bounded queue (`try_send`, never blocking); the same task takes the blocks and the
//!   queue and writes them in batches, one transaction each;
//! - rate-limit counters are in memory (or in Redis with a short timeout, see [`limits`]).
//!
//! The background task runs on a runtime of its own thread, apart from Pingora's workers.
//! On a graceful stop [`Governance::flush`] is called once requests have drained: the queue
//! is written out before the process exits, so a clean stop loses no record.

pub mod audit;
pub mod budgets;
pub mod failures;
mod gate;
pub mod keys;
pub mod limits;
pub mod scopes;
pub mod totp;
pub mod totp_throttle;
pub mod usage;
mod writer_priority;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{Caller, KeyTable};
use crate::errors::GatewayError;
use crate::store::usage_block::{self, BlockBuilder, Encoded};
use crate::store::{AuditEvent, Store, StoreUrl, UsageRecord};
use audit::AuditStream;
use budgets::{Budget, Period};
use keys::KeyPolicy;
use limits::{Limiter, RateInfo};

/// How often queued records are written, each tick's batch in one transaction. Short, so
/// that a flush is a fraction of a millisecond of work on a core that request workers
/// share (longer flushes showed in the load bench's p99; docs/BENCHMARKS.md).
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the store's write-ahead log is checkpointed (SQLite), apart from the writer.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// The audit event queue; when full (the store is down for long) events are dropped and counted.
const QUEUE: usize = 64 * 1024;
/// Usage records waiting for the writer, at most, over all shards; beyond that (the store
/// is down for long) records are dropped and counted.
const MAX_OPEN_RECORDS: usize = 256 * 1024;
/// Usage records and audit events kept for a retry while the store fails, at most.
const MAX_BACKLOG: usize = 256 * 1024;

/// How often ended failure windows are summarised (see [`failures`]).
const FAILURE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often audit rows older than `audit.retention_days` are deleted.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// `auth.store`, `auth.refresh_seconds`, `limits.redis`, `audit.file`,
/// `audit.retention_days`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GovernanceSettings {
    pub store: Option<StoreUrl>,
    pub refresh: Duration,
    pub redis: Option<String>,
    pub audit_file: Option<String>,
    /// Audit rows older than this many days are deleted from the store; 0 keeps them.
    pub audit_retention_days: u32,
}

/// What the request path reads: keys by digest, user budgets, spend per key and user in
/// their current period as the store knew it at the last refresh.
#[derive(Default)]
pub struct Snapshot {
    /// The store's key-change counter this snapshot was loaded at.
    version: Option<i64>,
    /// Shared with the next snapshot while the store's keys do not change (10,000 keys are
    /// not copied every refresh).
    by_digest: Arc<HashMap<[u8; 32], Arc<KeyPolicy>>>,
    user_budgets: Arc<HashMap<Arc<str>, Budget>>,
    key_spend: HashMap<Arc<str>, f64>,
    user_spend: HashMap<Arc<str>, f64>,
}

impl Snapshot {
    pub fn keys(&self) -> usize {
        self.by_digest.len()
    }
}

/// Cost settled by this replica and not yet in a snapshot.
#[derive(Default)]
struct Pending {
    keys: HashMap<Arc<str>, f64>,
    users: HashMap<Arc<str>, f64>,
}

impl Pending {
    /// Adds the blocks' cost (their daily roll-up: one entry per day and key).
    fn add_blocks(&mut self, blocks: &[Encoded]) {
        for d in blocks.iter().flat_map(|b| &b.daily) {
            if d.cost_usd > 0.0 {
                self.add((d.key_id.clone(), d.user.clone(), d.cost_usd));
            }
        }
    }

    fn add(&mut self, (key, user, cost): (Arc<str>, Arc<str>, f64)) {
        *self.keys.entry(key).or_insert(0.0) += cost;
        *self.users.entry(user).or_insert(0.0) += cost;
    }
}

/// Usage records on their way to the store: blocks being filled, one per shard. A worker
/// thread always uses the same shard (assigned on its first record), so the lock is
/// contended only in the moment the writer swaps the block out.
struct UsageShards {
    shards: Box<[Mutex<Shard>]>,
    /// Records in all shards, for the [`MAX_OPEN_RECORDS`] bound.
    open: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Shard {
    open: BlockBuilder,
    /// Blocks that reached [`usage_block::MAX_RECORDS`] before the writer came.
    full: Vec<Encoded>,
}

impl UsageShards {
    fn new() -> UsageShards {
        let n = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 64));
        UsageShards {
            shards: (0..n).map(|_| Mutex::default()).collect(),
            open: Default::default(),
        }
    }

    fn mine(&self) -> &Mutex<Shard> {
        thread_local! {
            static SHARD: usize = {
                static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            };
        }
        &self.shards[SHARD.with(|s| *s) % self.shards.len()]
    }

    /// Adds a record to this thread's open block; returns how many records were dropped
    /// (this one when the bound is reached; a block that could not be encoded).
    fn push(&self, r: &UsageRecord) -> usize {
        if self.open.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_RECORDS {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return 1;
        }
        let mut shard = self.mine().lock().expect("not poisoned");
        let dropped = match shard.open.push(r) {
            Ok(()) if shard.open.len() >= usage_block::MAX_RECORDS => {
                let records = shard.open.len();
                match shard.open.finish(Vec::new()) {
                    Ok(block) => {
                        shard.full.push(block);
                        0
                    }
                    Err(e) => {
                        log::error!("usage block: {e}; its records are dropped");
                        records
                    }
                }
            }
            Ok(()) => 0,
            Err(e) => {
                log::error!("usage record: {e}; dropped");
                1
            }
        };
        drop(shard);
        if dropped > 0 {
            self.open.fetch_sub(dropped, Ordering::Relaxed);
        }
        dropped
    }

    /// Takes every shard's blocks (open ones finished into `spare` buffers), leaving the
    /// shards empty; `spare` builders replace the open ones so no shard allocates anew.
    /// Returns how many records were dropped (a block that could not be encoded).
    fn take(
        &self,
        into: &mut Vec<Encoded>,
        spare_builders: &mut Vec<BlockBuilder>,
        spare_data: &mut Vec<Vec<u8>>,
    ) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut open = spare_builders.pop().unwrap_or_default();
            let full = {
                let mut s = shard.lock().expect("not poisoned");
                if s.open.is_empty() && s.full.is_empty() {
                    spare_builders.push(open);
                    continue;
                }
                std::mem::swap(&mut s.open, &mut open);
                std::mem::take(&mut s.full)
            };
            let taken: usize = full.iter().map(|b| b.records as usize).sum::<usize>() + open.len();
            into.extend(full);
            if !open.is_empty() {
                let records = open.len();
                match open.finish(spare_data.pop().unwrap_or_default()) {
                    Ok(block) => into.push(block),
                    Err(e) => {
                        log::error!("usage block: {e}; its records are dropped");
                        dropped += records;
                    }
                }
            }
            spare_builders.push(open);
            self.open.fetch_sub(taken, Ordering::Relaxed);
        }
        dropped
    }
}

/// Orders for the background task.
enum Control {
    /// Write everything queued, then answer.
    Flush(std::sync::mpsc::Sender<()>),
    /// Refresh the snapshot now, then answer.
    Refresh(std::sync::mpsc::Sender<()>),
}

pub struct Governance {
    snapshot: ArcSwap<Snapshot>,
    pending: Mutex<Pending>,
    pub limiter: Limiter,
    /// Present when there is a store.
    records: Option<SyncSender<AuditEvent>>,
    usage: UsageShards,
    control: Option<tokio::sync::mpsc::UnboundedSender<Control>>,
    audit_stream: Option<Arc<AuditStream>>,
    /// Authentication failures being counted per source (see [`failures`]).
    failures: failures::FailureAudit,
    /// Wrong admin TOTP codes per source and overall (the admin API's lockout).
    pub totp_throttle: totp_throttle::TotpThrottle,
    /// Records lost because the queue was full or the store failed for too long
    /// (`ai_proxy_usage_records_dropped_total`, registered with the other metrics).
    pub dropped: prometheus::IntCounter,
    pub store: Option<Store>,
    /// The governance thread's runtime: store I/O from elsewhere (admin API) runs there.
    handle: Option<tokio::runtime::Handle>,
}

/// What a request may do, decided before the upstream call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission {
    pub rate: Option<RateInfo>,
}

fn dropped_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new(
        "ai_proxy_usage_records_dropped_total",
        "Usage records and audit events not written to the store: queue full or store failing for too long.",
    )
    .expect("valid metric")
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn now_secs() -> i64 {
    keys::now_secs()
}

impl Governance {
    /// No store: only the config's keys, no usage records; audit events go to the stream.
    pub fn without_store(audit_file: Option<&str>) -> Arc<Governance> {
        let gov = Arc::new(Governance {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            pending: Mutex::default(),
            limiter: Limiter::local(),
            records: None,
            usage: UsageShards::new(),
            control: None,
            audit_stream: AuditStream::start(audit_file)
                .map_err(|e| log::error!("audit stream: {e}; audit events go to the store only"))
                .ok(),
            failures: Default::default(),
            totp_throttle: Default::default(),
            dropped: dropped_counter(),
            store: None,
            handle: None,
        });
        // No writer task here: a small thread writes the failure summaries.
        let weak = Arc::downgrade(&gov);
        let _ = std::thread::Builder::new()
            .name("audit-summaries".into())
            .spawn(move || loop {
                std::thread::sleep(FAILURE_SWEEP_INTERVAL);
                match weak.upgrade() {
                    Some(gov) => gov.write_failure_summaries(false),
                    None => return,
                }
            });
        gov
    }

    /// Opens the store (migrations applied), loads the first snapshot and starts the
    /// background task on its own thread. Fails when the store cannot be opened.
    pub fn start(settings: &GovernanceSettings) -> Result<Arc<Governance>, String> {
        let Some(url) = settings.store.clone() else {
            return Ok(Self::without_store(settings.audit_file.as_deref()));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("governance runtime: {e}"))?;
        let store = runtime
            .block_on(Store::open(&url))
            .map_err(|e| format!("store {}: {e}", url.redacted()))?;
        log::info!("governance store {} ready", url.redacted());
        let (tx, rx) = sync_channel(QUEUE);
        let (ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
        let audit_stream = match AuditStream::start(settings.audit_file.as_deref()) {
            Ok(s) => Some(s),
            Err(e) => return Err(format!("audit.file: {e}")),
        };
        let gov = Arc::new(Governance {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            pending: Mutex::default(),
            limiter: Limiter::local(),
            records: Some(tx),
            usage: UsageShards::new(),
            control: Some(ctl_tx),
            audit_stream,
            failures: Default::default(),
            totp_throttle: Default::default(),
            dropped: dropped_counter(),
            store: Some(store.clone()),
            handle: Some(runtime.handle().clone()),
        });
        let mut task = Task {
            gov: gov.clone(),
            store,
            records: rx,
            blocks: Vec::new(),
            audits: Vec::new(),
            spare_builders: Vec::new(),
            spare_data: Vec::new(),
            priority: None,
            flushed: Pending::default(),
            checkpointing: Arc::default(),
            last_checkpoint: std::time::Instant::now(),
            last_failure_sweep: std::time::Instant::now(),
            retention_days: settings.audit_retention_days,
            last_prune: None,
        };
        runtime
            .block_on(task.refresh())
            .map_err(|e| format!("loading keys from the store: {e}"))?;
        let refresh = settings.refresh.max(Duration::from_millis(100));
        let redis = settings.redis.clone();
        let may_switch = writer_priority::can_switch();
        std::thread::Builder::new()
            .name("governance".into())
            .spawn(move || {
                task.priority = Some(writer_priority::WriterPriority::start(may_switch));
                runtime.block_on(async move {
                    if let Some(url) = redis {
                        tokio::spawn(connect_redis(task.gov.clone(), url));
                    }
                    task.run(ctl_rx, refresh).await
                })
            })
            .map_err(|e| format!("governance thread: {e}"))?;
        Ok(gov)
    }

    /// Runs `fut` (store I/O) on the governance runtime and waits for it.
    pub async fn on_store<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match &self.handle {
            Some(h) => match h.spawn(fut).await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            None => fut.await,
        }
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Authenticates the caller: config keys first, then the store's keys (not revoked, not
    /// expired). Failures are audited by the caller of this function with the reason given.
    pub fn authenticate(
        &self,
        config_keys: &KeyTable,
        headers: &HeaderMap,
    ) -> Result<Caller, (GatewayError, &'static str)> {
        let Some(presented) = crate::auth::presented_key(headers) else {
            return Err((
                GatewayError::Unauthenticated { missing: true },
                "missing_key",
            ));
        };
        let digest = sha256(presented);
        if let Some(c) = config_keys.lookup(&digest) {
            return Ok(c);
        }
        let snap = self.snapshot.load();
        match snap.by_digest.get_key_value(&digest) {
            Some((stored, policy)) if bool::from(stored.ct_eq(&digest)) => {
                if policy.expires_at.is_some_and(|t| t <= now_secs()) {
                    return Err((
                        GatewayError::Unauthenticated { missing: false },
                        "expired_key",
                    ));
                }
                Ok(Caller {
                    user: policy.user.clone(),
                    key_id: policy.id.clone(),
                    concurrency: policy.concurrency,
                    policy: Some(policy.clone()),
                    cache: None,
                })
            }
            _ => Err((
                GatewayError::Unauthenticated { missing: false },
                "unknown_key",
            )),
        }
    }

    /// Model and provider scope: the model must match the key's patterns, and the providers
    /// the plan may use are narrowed to the key's (403 when none is left).
    pub fn check_model(&self, caller: &Caller, model: &str) -> Result<(), GatewayError> {
        match &caller.policy {
            Some(p) if !p.scope.allows_model(model) => Err(GatewayError::Forbidden(format!(
                "This API key is not allowed to use the model `{model}`."
            ))),
            _ => Ok(()),
        }
    }

    pub fn allows_provider(&self, caller: &Caller, provider: &str) -> bool {
        caller
            .policy
            .as_ref()
            .is_none_or(|p| p.scope.allows_provider(provider))
    }

    /// Budgets (429 insufficient_quota) and rate limits (429 with Retry-After), before the
    /// upstream call.
    pub async fn admit(&self, caller: &Caller) -> Result<Admission, GatewayError> {
        self.check_budgets(caller)?;
        let Some(policy) = caller.policy.as_ref().filter(|p| p.has_limits()) else {
            return Ok(Admission::default());
        };
        match self.limiter.admit(policy, audit::now_ms()).await {
            Ok(info) => Ok(Admission { rate: Some(info) }),
            Err(r) => Err(GatewayError::RateLimited {
                class: r.class,
                retry_after: r.retry_after_secs,
                info: r.info,
            }),
        }
    }

    /// The caller's key or user has a budget (that unpriced models would bypass).
    pub fn has_budget(&self, caller: &Caller) -> bool {
        self.records.is_some()
            && (caller.policy.as_ref().is_some_and(|p| p.budget.is_some())
                || self.snapshot.load().user_budgets.contains_key(&caller.user))
    }

    fn check_budgets(&self, caller: &Caller) -> Result<(), GatewayError> {
        if self.records.is_none() {
            return Ok(());
        }
        let snap = self.snapshot.load();
        let key_budget = caller.policy.as_ref().and_then(|p| p.budget);
        let user_budget = snap.user_budgets.get(&caller.user).copied();
        if key_budget.is_none() && user_budget.is_none() {
            return Ok(());
        }
        let pending = self.pending.lock().expect("not poisoned");
        if let Some(b) = key_budget {
            let spent = snap.key_spend.get(&caller.key_id).copied().unwrap_or(0.0)
                + pending.keys.get(&caller.key_id).copied().unwrap_or(0.0);
            if spent >= b.limit_usd {
                return Err(GatewayError::QuotaExceeded(format!(
                    "This API key has used its budget of ${:.2} for this {} (spent ${spent:.2}). Ask an administrator to raise it, or wait for the next {}.",
                    b.limit_usd, b.period, b.period
                )));
            }
        }
        if let Some(b) = user_budget {
            let spent = snap.user_spend.get(&caller.user).copied().unwrap_or(0.0)
                + pending.users.get(&caller.user).copied().unwrap_or(0.0);
            if spent >= b.limit_usd {
                return Err(GatewayError::QuotaExceeded(format!(
                    "User `{}` has used the budget of ${:.2} for this {} (spent ${spent:.2}). Ask an administrator to raise it, or wait for the next {}.",
                    caller.user, b.limit_usd, b.period, b.period
                )));
            }
        }
        Ok(())
    }

    /// Whether usage records are kept (a store is configured); without one, [`Self::settle`]
    /// does nothing and callers need not build a record.
    pub fn records_usage(&self) -> bool {
        self.records.is_some()
    }

    /// Settles a finished request: its cost counts against budgets at once, its tokens
    /// against the key's tokens per minute, and its usage record goes into a block for the
    /// store.
    pub async fn settle(&self, caller: &Caller, record: UsageRecord) {
        if !self.records_usage() {
            return;
        }
        let tokens = (record.input_tokens + record.output_tokens).max(0) as u64;
        if record.cost_usd > 0.0 {
            let mut p = self.pending.lock().expect("not poisoned");
            *p.keys.entry(caller.key_id.clone()).or_insert(0.0) += record.cost_usd;
            *p.users.entry(caller.user.clone()).or_insert(0.0) += record.cost_usd;
        }
        if let Some(policy) = caller.policy.as_ref().filter(|p| p.tpm.is_some()) {
            self.limiter
                .add_tokens(&policy.id, tokens, record.ts_ms)
                .await;
        }
        for _ in 0..self.usage.push(&record) {
            self.count_dropped();
        }
    }

    fn count_dropped(&self) {
        let n = self.dropped.get();
        self.dropped.inc();
        if n.is_power_of_two() {
            log::error!("governance queue full: {} records dropped so far", n + 1);
        }
    }

    /// Records an audit event in the store (when there is one) and the JSON audit stream.
    pub fn audit(&self, e: AuditEvent) {
        if let Some(s) = &self.audit_stream {
            s.log(e.clone());
        }
        if let Some(tx) = &self.records {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(e) {
                self.count_dropped();
            }
        }
    }

    /// An authentication failure (`auth_failure`, `admin_auth_failure`) from `source`:
    /// written at once when it is the source's first in the interval, otherwise counted
    /// into the interval's summary event (see [`failures`]).
    pub fn audit_failure(
        &self,
        kind: &'static str,
        source: &str,
        subject: &str,
        reason: &'static str,
        detail: serde_json::Value,
    ) {
        if let Some(e) =
            self.failures
                .record(kind, source, subject, reason, detail, audit::now_ms())
        {
            self.audit(e);
        }
    }

    /// Writes the summaries of the failure windows that ended (all of them when `all`).
    fn write_failure_summaries(&self, all: bool) {
        for e in self.failures.due(audit::now_ms(), all) {
            self.audit(e);
        }
    }

    fn ask(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<()>) -> Control,
        timeout: Duration,
    ) -> bool {
        let Some(ctl) = &self.control else {
            return true;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        if ctl.send(make(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Writes every queued record to the store, waiting at most `timeout` (blocking: call
    /// it from a plain thread, e.g. the shutdown path, never from a runtime worker).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.write_failure_summaries(true);
        self.ask(Control::Flush, timeout)
    }

    /// Refreshes the snapshot now (blocking; tests and the admin API's callers' convenience).
    pub fn refresh_now(&self, timeout: Duration) -> bool {
        self.ask(Control::Refresh, timeout)
    }

    /// Asks for a refresh without waiting (after a change made through this replica).
    pub fn refresh_soon(&self) {
        if let Some(ctl) = &self.control {
            let (tx, _rx) = std::sync::mpsc::channel();
            let _ = ctl.send(Control::Refresh(tx));
        }
    }
}

async fn connect_redis(gov: Arc<Governance>, url: String) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("limits.redis: {e}; rate limits stay local");
            return;
        }
    };
    loop {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1);
        match redis::aio::ConnectionManager::new_with_config(client.clone(), config).await {
            Ok(m) => {
                log::info!("rate limits shared through Redis");
                gov.limiter.set_redis(m);
                return;
            }
            Err(e) => {
                log::warn!("limits.redis unreachable ({e}); local limits until it answers");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// The background task: batch writer and snapshot refresher.
struct Task {
    gov: Arc<Governance>,
    store: Store,
    records: Receiver<AuditEvent>,
    /// Usage blocks and audit events not yet written (kept for a retry when a write fails).
    blocks: Vec<Encoded>,
    audits: Vec<AuditEvent>,
    /// Emptied builders and block buffers, handed back to the shards (no allocation per flush).
    spare_builders: Vec<BlockBuilder>,
    spare_data: Vec<Vec<u8>>,
    /// The thread's scheduling class (set once the task runs on its own thread).
    priority: Option<writer_priority::WriterPriority>,
    /// Cost written since the last snapshot: it is in the store but still in `pending`.
    flushed: Pending,
    /// A checkpoint is running.
    checkpointing: Arc<std::sync::atomic::AtomicBool>,
    last_checkpoint: std::time::Instant,
    last_failure_sweep: std::time::Instant,
    /// `audit.retention_days` (0: keep every audit row).
    retention_days: u32,
    last_prune: Option<std::time::Instant>,
}

impl Task {
    async fn run(
        &mut self,
        mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
        refresh: Duration,
    ) {
        let mut flush_tick = tokio::time::interval(FLUSH_INTERVAL);
        let mut refresh_tick = tokio::time::interval(refresh);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                due = flush_tick.tick() => {
                    if let Some(p) = &mut self.priority {
                        let waiting = self.gov.usage.open.load(Ordering::Relaxed);
                        p.after_tick(due.elapsed(), waiting > MAX_OPEN_RECORDS / 4);
                    }
                    if self.last_failure_sweep.elapsed() >= FAILURE_SWEEP_INTERVAL {
                        self.last_failure_sweep = std::time::Instant::now();
                        self.gov.write_failure_summaries(false);
                    }
                    self.flush().await;
                    if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                        self.checkpoint_in_background();
                    }
                }
                _ = refresh_tick.tick() => {
                    self.flush().await;
                    if let Err(e) = self.refresh().await {
                        log::warn!("governance: refreshing keys and spend failed: {e}");
                    }
                    self.gov.limiter.prune(audit::now_ms());
                    if self.last_prune.is_none_or(|t| t.elapsed() >= AUDIT_PRUNE_INTERVAL) {
                        self.last_prune = Some(std::time::Instant::now());
                        self.prune_audit_in_background();
                    }
                }
                c = control.recv() => match c {
                    Some(Control::Flush(ack)) => {
                        self.flush().await;
                        let _ = ack.send(());
                    }
                    Some(Control::Refresh(ack)) => {
                        self.flush().await;
                        if let Err(e) = self.refresh().await {
                            log::warn!("governance: refresh failed: {e}");
                        }
                        let _ = ack.send(());
                    }
                    None => return,
                }
            }
        }
    }

    /// Copies the SQLite write-ahead log into the database file on a pool connection, apart
    /// from the batch writer: the checkpoint's fsync can take seconds while the disk is
    /// busy, and on the writer's own connection (SQLite's automatic checkpoint) it stalled
    /// the writes until the record queue overflowed. One at a time; no-op on PostgreSQL.
    fn checkpoint_in_background(&mut self) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_checkpoint = std::time::Instant::now();
        let (store, busy) = (self.store.clone(), self.checkpointing.clone());
        tokio::spawn(async move {
            if let Err(e) = store.checkpoint().await {
                log::warn!("governance: store checkpoint failed: {e}");
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Deletes audit rows older than `audit.retention_days`, apart from the batch writer.
    fn prune_audit_in_background(&self) {
        if self.retention_days == 0 {
            return;
        }
        let before = audit::now_ms() - i64::from(self.retention_days) * 86_400_000;
        let store = self.store.clone();
        tokio::spawn(async move {
            match store.delete_audit_before(before).await {
                Ok(0) => {}
                Ok(n) => {
                    log::info!("audit retention: {n} audit rows older than the retention deleted")
                }
                Err(e) => log::warn!("audit retention: deleting old audit rows failed: {e}"),
            }
        });
    }

    /// Writes the blocks and queued events in one transaction (retried on the next tick on
    /// failure).
    async fn flush(&mut self) {
        self.audits.extend(self.records.try_iter());
        let dropped = self.gov.usage.take(
            &mut self.blocks,
            &mut self.spare_builders,
            &mut self.spare_data,
        );
        self.gov.dropped.inc_by(dropped as u64);
        if self.blocks.is_empty() && self.audits.is_empty() {
            return;
        }
        match self.store.write_blocks(&self.blocks, &self.audits).await {
            Ok(()) => {
                self.flushed.add_blocks(&self.blocks);
                self.spare_data.extend(
                    self.blocks
                        .drain(..)
                        .map(|b| b.data)
                        .filter(|d| d.capacity() > 0),
                );
                self.spare_data.truncate(self.gov.usage.shards.len());
                self.audits.clear();
            }
            Err(e) => {
                let records: usize = self.blocks.iter().map(|b| b.records as usize).sum();
                log::error!(
                    "governance: writing {records} usage records and {} audit events failed: {e}; retrying",
                    self.audits.len()
                );
                let mut excess = records.saturating_sub(MAX_BACKLOG);
                while excess > 0 && !self.blocks.is_empty() {
                    let oldest = self.blocks.remove(0);
                    self.gov.dropped.inc_by(oldest.records as u64);
                    excess = excess.saturating_sub(oldest.records as usize);
                }
                if self.audits.len() > MAX_BACKLOG {
                    let excess = self.audits.len() - MAX_BACKLOG;
                    self.gov.dropped.inc_by(excess as u64);
                    self.audits.drain(..excess);
                }
            }
        }
    }

    /// Reloads keys (when the store's change counter moved) and spend, then installs the
    /// snapshot and forgets the local cost it now contains.
    async fn refresh(&mut self) -> crate::store::Result<()> {
        let old = self.gov.snapshot.load_full();
        let version = self.store.keys_version().await?;
        let (by_digest, user_budgets) = if old.version != Some(version) {
            let mut by_digest = HashMap::new();
            for k in self.store.list_keys(false).await? {
                let mut d = [0u8; 32];
                if hex::decode_to_slice(&k.key_sha256, &mut d).is_ok() {
                    by_digest.insert(d, Arc::new(KeyPolicy::from_record(&k)));
                }
            }
            let mut user_budgets = HashMap::new();
            for u in self.store.list_users().await? {
                if let Some(limit_usd) = u.budget_usd {
                    let period = u
                        .period
                        .as_deref()
                        .and_then(Period::parse)
                        .unwrap_or(Period::Month);
                    user_budgets.insert(Arc::from(u.name.as_str()), Budget { limit_usd, period });
                }
            }
            (Arc::new(by_digest), Arc::new(user_budgets))
        } else {
            (old.by_digest.clone(), old.user_budgets.clone())
        };
        // Spend for every period in use (budgets start on UTC day boundaries).
        let now = now_secs();
        let mut periods: HashSet<Period> = user_budgets.values().map(|b| b.period).collect();
        periods.extend(
            by_digest
                .values()
                .filter_map(|p| p.budget.map(|b| b.period)),
        );
        let mut key_spend = HashMap::new();
        let mut user_spend = HashMap::new();
        for period in periods {
            let (keys, users) = self.store.spend_since(period.start_day(now)).await?;
            for p in by_digest.values() {
                if p.budget.is_some_and(|b| b.period == period) {
                    if let Some(c) = keys.get(&*p.id) {
                        key_spend.insert(p.id.clone(), *c);
                    }
                }
            }
            for (user, b) in user_budgets.iter() {
                if b.period == period {
                    if let Some(c) = users.get(&**user) {
                        user_spend.insert(user.clone(), *c);
                    }
                }
            }
        }
        self.gov.snapshot.store(Arc::new(Snapshot {
            version: Some(version),
            by_digest,
            user_budgets,
            key_spend,
            user_spend,
        }));
        // What was written before this snapshot's queries is in it now.
        let flushed = std::mem::take(&mut self.flushed);
        let mut pending = self.gov.pending.lock().expect("not poisoned");
        for (k, c) in flushed.keys {
            subtract(&mut pending.keys, k, c);
        }
        for (u, c) in flushed.users {
            subtract(&mut pending.users, u, c);
        }
        Ok(())
    }
}

fn subtract(map: &mut HashMap<Arc<str>, f64>, k: Arc<str>, c: f64) {
    if let Some(v) = map.get_mut(&k) {
        *v -= c;
        if *v <= 1e-12 {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            ts_ms: 1_780_000_000_000 + i as i64,
            request_id: format!("req-{i}"),
            user: Arc::from("alice"),
            key_id: Arc::from("key_a"),
            provider: Arc::from("openai"),
            model: "gpt-4".to_owned(),
            route: "chat_completions",
            status: 200,
            input_tokens: 1,
            output_tokens: 2,
            cost_usd: 0.5,
            cached: false,
            trace_id: None,
        }
    }

    /// A shard that reaches a block's size closes it at once; the writer then takes the full
    /// block and the open one, in order, and the waiting count goes back to zero.
    #[test]
    fn shards_close_full_blocks_and_hand_everything_over() {
        let shards = UsageShards::new();
        let n = usage_block::MAX_RECORDS + 10;
        for i in 0..n {
            assert_eq!(shards.push(&record(i)), 0);
        }
        assert_eq!(shards.open.load(Ordering::Relaxed), n);
        let (mut blocks, mut builders, mut data) = (Vec::new(), Vec::new(), Vec::new());
        assert_eq!(shards.take(&mut blocks, &mut builders, &mut data), 0);
        let sizes: Vec<_> = blocks.iter().map(|b| b.records).collect();
        assert_eq!(sizes, [usage_block::MAX_RECORDS as i64, 10]);
        assert_eq!(shards.open.load(Ordering::Relaxed), 0);
        let mut ids = Vec::new();
        for b in &blocks {
            usage_block::decode(&b.data, |u| ids.push(u.request_id)).unwrap();
        }
        assert_eq!(ids.len(), n);
        assert_eq!(ids[n - 1], format!("req-{}", n - 1));
        let spend: f64 = blocks
            .iter()
            .flat_map(|b| &b.daily)
            .map(|d| d.cost_usd)
            .sum();
        assert_eq!(spend, 0.5 * n as f64);
        // Nothing left: a second take finds nothing.
        blocks.clear();
        shards.take(&mut blocks, &mut builders, &mut data);
        assert!(blocks.is_empty());
    }

    /// Past the bound, records are refused (and counted by the caller), never queued.
    #[test]
    fn the_waiting_records_are_bounded() {
        let shards = UsageShards::new();
        shards.open.store(MAX_OPEN_RECORDS, Ordering::Relaxed);
        assert_eq!(shards.push(&record(1)), 1);
        assert_eq!(shards.open.load(Ordering::Relaxed), MAX_OPEN_RECORDS);
    }
}
