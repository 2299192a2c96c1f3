//! The response cache on a front door's path: after governance and before the plan runs, a
//! cacheable request (its mapping or key opted in with `cache:`) is answered from the cache,
//! follows an identical call in flight, or leads: what it sends its client is recorded (the
//! hooks in [`crate::respond`]) and, when the answer is complete and successful, stored.
//!
//! Key: SHA-256 over the front door, `stream` (and whether the stream carries usage), the
//! model's mapping and its candidate providers and upstream models, the scope's identity
//! (key id, user, or shared), and the body's canonical form
//! (`switchyard_filters::cache_key::canonical`). A hit is replayed with a fresh id and
//! `created`, in the caller's dialect (the key includes the front door and the model name).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use switchyard_filters::cache_key::{self, Identity};
use switchyard_filters::openai::ParsedRequest;
use switchyard_filters::{Endpoint, Usage};

use super::Gateway;
use crate::cache::{CachePolicy, Entry, FlightEnd, FlightGuard, Key, Role, Scope};
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::respond;
use crate::route::Plan;

/// The per-request TTL header (seconds; 0: do not store). Capped at the configured TTL.
pub const TTL_HEADER: &str = "x-switchyard-cache-ttl";
const SSE: &str = "text/event-stream";

/// What the cache did for a request (`x-switchyard-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// A cacheable request's cache state (`RequestCtx::cache`).
pub struct CacheCtx {
    pub result: CacheResult,
    key: Key,
    ttl: Duration,
    store: bool,
    /// What the request sends its client, recorded (leader or bypass that may store).
    recording: Option<FlightGuard>,
    /// On a hit: the answer's usage when it was made (priced as the cost saved) and the
    /// provider that made it.
    pub hit: Option<HitInfo>,
}

/// What a hit's answer cost when it was made.
#[derive(Debug, Clone)]
pub struct HitInfo {
    pub usage: Option<Usage>,
    pub provider: Option<Arc<str>>,
}

/// Records a response head the request sends (a `respond` hook).
pub(crate) fn record_head(ctx: &RequestCtx, h: &ResponseHeader) {
    if let Some(rec) = ctx.cache.as_ref().and_then(|c| c.recording.as_ref()) {
        let ct = h
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        rec.record_head(h.status.as_u16(), ct);
    }
}

/// Records body bytes the request sends (a `respond` hook).
pub(crate) fn record(ctx: &RequestCtx, data: &Bytes, end: bool) {
    if let Some(rec) = ctx.cache.as_ref().and_then(|c| c.recording.as_ref()) {
        rec.record(data, end);
    }
}

/// Whether this request leads a call that other requests follow: its upstream call then
/// outlives its own client (the followers still need the answer).
pub(crate) fn serving_followers(ctx: &RequestCtx) -> bool {
    ctx.cache
        .as_ref()
        .and_then(|c| c.recording.as_ref())
        .is_some_and(|r| r.flight().followers() > 0)
}

/// What [`Gateway::cache_lookup`] decided.
pub(super) enum Lookup {
    /// The client has its answer (a hit, or a coalesced call's).
    Answered,
    /// Run the plan.
    Run,
}

/// How following a flight ended.
enum Followed {
    Answered,
    /// The leader went away before anything was sent: make the call (or follow another).
    TakeOver,
}

/// The directives of the request's `Cache-Control` that matter here: (no-cache, no-store).
fn directives(session: &Session) -> (bool, bool) {
    let mut no_cache = false;
    let mut no_store = false;
    for v in session
        .req_header()
        .headers
        .get_all(http::header::CACHE_CONTROL)
    {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim();
            no_cache |= d.eq_ignore_ascii_case("no-cache");
            no_store |= d.eq_ignore_ascii_case("no-store");
        }
    }
    (no_cache, no_store)
}

/// The cache key of a request (see the module docs).
fn key_of(
    endpoint: Endpoint,
    parsed: &ParsedRequest,
    plan: &Plan<'_>,
    scope: Scope,
    ctx: &RequestCtx,
) -> Option<Key> {
    let body = parsed.body().ok()?;
    let mut canonical = Vec::with_capacity(parsed.raw().len() + 128);
    canonical.extend_from_slice(b"switchyard-cache-v1\0");
    canonical.extend_from_slice(endpoint.as_str().as_bytes());
    canonical.push(0);
    canonical.push(u8::from(parsed.summary.stream));
    canonical.push(u8::from(parsed.summary.client_wants_usage));
    canonical.push(0);
    let label = match plan.matched {
        crate::route::Matched::Mapping(m) | crate::route::Matched::Pattern(m) => m,
    };
    canonical.extend_from_slice(label.as_bytes());
    canonical.push(0);
    let mut providers: Vec<(&str, &str)> = plan
        .candidates
        .iter()
        .map(|c| (&*c.provider.name, c.upstream_model))
        .collect();
    providers.sort_unstable();
    for (p, m) in providers {
        canonical.extend_from_slice(p.as_bytes());
        canonical.push(b'/');
        canonical.extend_from_slice(m.as_bytes());
        canonical.push(0);
    }
    let caller = ctx.caller.as_ref();
    let who = match scope {
        Scope::Key => caller.map(|c| &*c.key_id),
        Scope::User => caller.map(|c| &*c.user),
        Scope::Shared => Some(""),
    };
    canonical.extend_from_slice(scope.as_str().as_bytes());
    canonical.push(b':');
    canonical.extend_from_slice(who.unwrap_or("").as_bytes());
    canonical.push(0);
    cache_key::canonical(body, &mut canonical);
    Some(Sha256::digest(&canonical).into())
}

/// 96 random bits in hex: the unique part of a replayed answer's id.
fn unique() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// Writes `bytes` with the answer's identity refreshed (learned from the bytes themselves
/// when not known yet).
struct Refresher {
    ident: Option<Identity>,
    new_id: Option<String>,
    /// The Responses turn's id: the fresh id of a Responses answer.
    turn_id: Option<String>,
    created: u64,
}

impl Refresher {
    fn new(ctx: &RequestCtx) -> Refresher {
        Refresher {
            ident: None,
            new_id: None,
            turn_id: ctx.responses.as_ref().map(|t| t.id.clone()),
            created: super::attempts::unix_now(),
        }
    }

    fn apply(&mut self, bytes: &[u8]) -> Bytes {
        if self.ident.is_none() {
            let found = Identity::find(bytes);
            if !found.is_empty() {
                self.new_id = Some(match (&self.turn_id, &found.id) {
                    (Some(t), _) => t.clone(),
                    (None, Some(id)) => cache_key::fresh_id(id, &unique()),
                    (None, None) => String::new(),
                });
                self.ident = Some(found);
            }
        }
        match (&self.ident, &self.new_id) {
            (Some(ident), Some(new_id)) => {
                let mut out = Vec::with_capacity(bytes.len() + 16);
                cache_key::refresh(bytes, ident, new_id, self.created, &mut out);
                Bytes::from(out)
            }
            _ => Bytes::copy_from_slice(bytes),
        }
    }
}

/// The `response` object of a Responses stream's `response.completed` event.
fn completed_response(sse: &[u8]) -> Option<Vec<u8>> {
    sse.split(|b| *b == b'\n').rev().find_map(|line| {
        let data = line.strip_prefix(b"data:")?;
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        (v.get("type")?.as_str()? == "response.completed")
            .then(|| serde_json::to_vec(v.get("response")?).ok())
            .flatten()
    })
}

impl Gateway {
    /// Looks a front door's request up in the cache (see the module docs); `Run` when the
    /// plan is to run, with `ctx.cache` set when its answer is to be recorded.
    pub(super) async fn cache_lookup(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
        parsed: &ParsedRequest,
        plan: &Plan<'_>,
    ) -> Result<Lookup, GatewayError> {
        if endpoint == Endpoint::CountTokens {
            return Ok(Lookup::Run);
        }
        let policy: Option<CachePolicy> = ctx.caller.as_ref().and_then(|c| c.cache).or(plan.cache);
        let Some(policy) = policy else {
            return Ok(Lookup::Run);
        };
        let Some(key) = key_of(endpoint, parsed, plan, policy.scope, ctx) else {
            return Ok(Lookup::Run);
        };
        let (no_cache, mut no_store) = directives(session);
        let mut ttl = policy.ttl;
        if let Some(v) = session.req_header().headers.get(TTL_HEADER) {
            match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(0) => no_store = true,
                Some(secs) => ttl = ttl.min(Duration::from_secs(secs)),
                None => {
                    return Err(GatewayError::InvalidRequest {
                        message: format!("{TTL_HEADER} must be a whole number of seconds."),
                        param: None,
                    })
                }
            }
        }
        let cache = self.cache.clone();
        let mut state = CacheCtx {
            result: CacheResult::Bypass,
            key,
            ttl,
            store: !no_store,
            recording: None,
            hit: None,
        };
        if no_cache {
            cache.metrics.requests.with_label_values(&["bypass"]).inc();
            if state.store {
                state.recording = Some(crate::cache::ResponseCache::record_alone());
            }
            ctx.cache = Some(Box::new(state));
            return Ok(Lookup::Run);
        }
        // A follower whose leader went away looks again (the answer may be stored by now,
        // or another request leads); after a few rounds it just makes the call.
        for _round in 0..4 {
            if let Some(entry) = cache.get(&key).await {
                cache.metrics.requests.with_label_values(&["hit"]).inc();
                state.result = CacheResult::Hit;
                state.hit = Some(HitInfo {
                    usage: entry.usage,
                    provider: Some(Arc::from(entry.provider.as_str())),
                });
                ctx.cache = Some(Box::new(state));
                self.replay(session, ctx, &entry).await;
                return Ok(Lookup::Answered);
            }
            match cache.join_or_lead(key) {
                Role::Leader(guard) => {
                    cache.metrics.requests.with_label_values(&["miss"]).inc();
                    state.result = CacheResult::Miss;
                    state.recording = Some(guard);
                    ctx.cache = Some(Box::new(state));
                    return Ok(Lookup::Run);
                }
                Role::Follower(flight) => {
                    state.result = CacheResult::Hit;
                    ctx.cache = Some(Box::new(CacheCtx {
                        result: CacheResult::Hit,
                        key,
                        ttl,
                        store: false,
                        recording: None,
                        hit: None,
                    }));
                    match self.follow(session, ctx, &flight).await? {
                        Followed::Answered => {
                            cache.metrics.requests.with_label_values(&["hit"]).inc();
                            return Ok(Lookup::Answered);
                        }
                        Followed::TakeOver => ctx.cache = None,
                    }
                }
            }
        }
        cache.metrics.requests.with_label_values(&["miss"]).inc();
        state.result = CacheResult::Miss;
        if state.store {
            state.recording = Some(crate::cache::ResponseCache::record_alone());
        }
        ctx.cache = Some(Box::new(state));
        Ok(Lookup::Run)
    }

    /// Answers from a cache entry: the stored bytes with a fresh id and `created`.
    async fn replay(&self, session: &mut Session, ctx: &mut RequestCtx, entry: &Entry) {
        ctx.usage = entry.usage;
        ctx.upstream_model = Some(entry.upstream_model.clone());
        let out = Refresher::new(ctx).apply(&entry.body);
        let written = if entry.stream {
            ctx.mark_first_byte();
            match respond::header(200, SSE, ctx) {
                Ok(h) => match respond::start_stream(session, ctx, h).await {
                    Ok(()) => respond::body(session, ctx, out.clone(), true).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        } else {
            match respond::header(200, "application/json", ctx) {
                Ok(h) => respond::full(session, ctx, h, out.clone()).await,
                Err(e) => Err(e),
            }
        };
        if written.is_ok() {
            self.save_turn(ctx, entry.stream, &out).await;
        }
    }

    /// A Responses hit stores its answer like a fresh one (so `previous_response_id` can
    /// name it).
    async fn save_turn(&self, ctx: &RequestCtx, stream: bool, out: &[u8]) {
        let Some(turn) = ctx.responses.as_deref().filter(|t| t.saves()) else {
            return;
        };
        if stream {
            if let Some(response) = completed_response(out) {
                turn.save(&response).await;
            }
        } else {
            turn.save(out).await;
        }
    }

    /// Follows a call in flight: its answer so far, then live, with a fresh identity.
    async fn follow(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        flight: &Arc<crate::cache::Flight>,
    ) -> Result<Followed, GatewayError> {
        let mut have = 0;
        let mut started: Option<bool> = None; // Some(is_stream) once the head is written
        let mut pending: Vec<u8> = Vec::new();
        let mut refresher = Refresher::new(ctx);
        let mut seen_last = false;
        let mut head_seen = false;
        let end = loop {
            let p = flight.progress(have, head_seen, seen_last).await;
            head_seen = p.head.is_some();
            have += p.chunks.len();
            for c in &p.chunks {
                pending.extend_from_slice(c);
            }
            if started.is_none() {
                match (&p.end, &p.head) {
                    (FlightEnd::Abandoned, _) | (FlightEnd::Complete { .. }, None) => {
                        return Ok(Followed::TakeOver)
                    }
                    (FlightEnd::Failed(e), _) => return Err(e.clone()),
                    (_, None) => continue,
                    (_, Some(head)) if head.content_type.starts_with(SSE) => {
                        if pending.is_empty() && !p.bytes_ended && p.end.is_running() {
                            // Nothing sent yet: a leader that goes away now can be replaced.
                            continue;
                        }
                        let h = respond::header(head.status, SSE, ctx)
                            .map_err(|_| GatewayError::Internal)?;
                        if respond::start_stream(session, ctx, h).await.is_err() {
                            return Ok(Followed::Answered);
                        }
                        started = Some(true);
                    }
                    (_, Some(head)) => {
                        if !p.bytes_ended {
                            if p.end.is_running() {
                                continue;
                            }
                            return Ok(Followed::TakeOver);
                        }
                        let out = refresher.apply(&pending);
                        let h = respond::header(head.status, "application/json", ctx)
                            .map_err(|_| GatewayError::Internal)?;
                        let _ = respond::full(session, ctx, h, out).await;
                        started = Some(false);
                        seen_last = true;
                        if !p.end.is_running() {
                            break p.end;
                        }
                        continue;
                    }
                }
            }
            if started == Some(true) && !seen_last {
                // Whole lines only, so that an id is never split.
                let upto = if p.bytes_ended {
                    pending.len()
                } else {
                    pending
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |i| i + 1)
                };
                if upto > 0 {
                    ctx.mark_first_byte();
                    let out = refresher.apply(&pending[..upto]);
                    pending.drain(..upto);
                    if respond::body(session, ctx, out, p.bytes_ended)
                        .await
                        .is_err()
                    {
                        return Ok(Followed::Answered);
                    }
                } else if p.bytes_ended {
                    let _ = respond::body(session, ctx, Bytes::new(), true).await;
                }
                seen_last = p.bytes_ended;
                if !seen_last && !p.end.is_running() {
                    // The leader's answer was cut: so is this one.
                    let e = GatewayError::UpstreamUnreachable {
                        provider: "cache".into(),
                        detail: "the stream ended before it was complete",
                    };
                    ctx.error = Some(e.clone());
                    super::forward::end_with_error(session, ctx, &e).await;
                    return Ok(Followed::Answered);
                }
            }
            if seen_last && !p.end.is_running() {
                break p.end;
            }
        };
        if let FlightEnd::Complete { usage, provider } = end {
            ctx.usage = usage;
            if let Some(c) = ctx.cache.as_mut() {
                c.hit = Some(HitInfo { usage, provider });
            }
        }
        Ok(Followed::Answered)
    }

    /// After the plan ran: stores a complete successful answer and ends the flight.
    pub(super) fn cache_finish(
        &self,
        ctx: &mut RequestCtx,
        result: Result<(), GatewayError>,
    ) -> Result<(), GatewayError> {
        let Some(c) = ctx.cache.as_mut() else {
            return result;
        };
        let Some(mut rec) = c.recording.take() else {
            return result;
        };
        let (key, ttl, store) = (c.key, c.ttl, c.store);
        match &result {
            Err(GatewayError::ClientClosed) => {} // dropped: abandoned
            Err(e) => rec.finish(FlightEnd::Failed(e.clone())),
            Ok(()) => {
                let (head, ended) = rec.head();
                if ended {
                    let ok = head.as_ref().is_some_and(|h| h.status == 200)
                        && (ctx.error.is_none() || ctx.client_closed());
                    if store && ok {
                        if let Some(body) = rec.answer(self.cache.settings.max_entry_bytes) {
                            let entry = Entry {
                                stream: head.is_some_and(|h| h.content_type.starts_with(SSE)),
                                body,
                                usage: ctx.usage,
                                provider: ctx
                                    .provider
                                    .as_ref()
                                    .map(|p| p.name.to_string())
                                    .unwrap_or_default(),
                                upstream_model: ctx.upstream_model.clone().unwrap_or_default(),
                            };
                            self.cache.put(key, &entry, ttl);
                        }
                    }
                    rec.finish(FlightEnd::Complete {
                        usage: ctx.usage,
                        provider: ctx.provider.as_ref().map(|p| p.name.clone()),
                    });
                }
            }
        }
        result
    }
}
