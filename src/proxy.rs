//! The Pingora `ProxyHttp` service: each hook is a few lines calling the modules that do the
//! work.
//!
//! - `request_filter`: request id, local endpoints, authentication, then either the unified
//!   API (read the bounded body, validate, resolve the model, answer from the mock or call the
//!   upstream through [`crate::forward`]) or native passthrough (path checked, proxied below).
//! - `upstream_peer` / `upstream_request_filter`: passthrough only; the provider's endpoint and
//!   path, the caller's key swapped for the provider's credential.
//! - `response_filter` / `response_body_filter`: passthrough usage observed, bytes unchanged.
//! - `logging`: metrics and the access log for every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use serde_json::json;
use switchyard_filters::Endpoint;

use crate::access_log::{now_rfc3339, AccessLog, AccessRecord};
use crate::config::Config;
use crate::ctx::{request_id, RequestCtx, RouteKind};
use crate::errors::GatewayError;
use crate::forward::{self, Forwarder, Mode, UpstreamCall};
use crate::limits::SlotKind;
use crate::metrics::Metrics;
use crate::passthrough::{self, Passthrough};
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{ProviderKind, Readiness};
use crate::respond;
use crate::route::health::HealthRegistry;

/// The gateway: configuration, metrics, logs and the upstream connector shared by all requests.
pub struct Gateway {
    /// The configuration in force; each request takes a snapshot, so a reload never changes
    /// a request mid-flight.
    pub config: Arc<ArcSwap<Config>>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    pub(crate) health: Arc<HealthRegistry>,
    pub(crate) connector: Connector,
    /// Store keys, scopes, budgets, rate limits, usage records and audit.
    pub governance: Arc<crate::governance::Governance>,
    /// Requests in flight and open streams per gateway key (`max_requests_in_flight_per_key`,
    /// `max_streams_per_key`).
    pub(crate) key_slots: Arc<crate::limits::KeySlots>,
    /// Request body bytes held now (`server.max_inflight_body_bytes`).
    pub(crate) body_budget: Arc<crate::body_budget::BodyBudget>,
}

/// What `request_filter` decided.
enum Next {
    /// A response was written; the request is done.
    Responded,
    /// Proxy to the upstream through Pingora's hooks (passthrough).
    Proxy,
}

impl Gateway {
    pub fn new(
        config: Arc<ArcSwap<Config>>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        health: Arc<HealthRegistry>,
        governance: Arc<crate::governance::Governance>,
    ) -> Self {
        Gateway {
            config,
            metrics,
            access_log,
            health,
            connector: Connector::new(None),
            governance,
            key_slots: Arc::default(),
            body_budget: Arc::default(),
        }
    }

    async fn route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Next, GatewayError> {
        let config = self.config.load_full();
        ctx.config = Some(config.clone());
        let path = session.req_header().uri.path().to_owned();
        let method = session.req_header().method.clone();
        let is_get = method == http::Method::GET || method == http::Method::HEAD;

        match path.as_str() {
            "/health" | "/healthz" => {
                ctx.route = RouteKind::Health;
                require(is_get, "GET")?;
                return self
                    .local_json(session, ctx, 200, json!({"status": "ok"}))
                    .await;
            }
            "/ready" | "/readyz" => {
                ctx.route = RouteKind::Ready;
                require(is_get, "GET")?;
                let (ready, body) = self.readiness(&config);
                return self
                    .local_json(session, ctx, if ready { 200 } else { 503 }, body)
                    .await;
            }
            "/health/providers" => {
                ctx.route = RouteKind::Health;
                require(is_get, "GET")?;
                let body = self.provider_health(&config);
                return self.local_json(session, ctx, 200, body).await;
            }
            _ => {}
        }

        let endpoint = unified_endpoint(&path);
        let passthrough_route = passthrough::split_route(&path);
        ctx.route = match (&endpoint, &passthrough_route) {
            (Some(e), _) => RouteKind::Unified(*e),
            (None, Some(_)) => RouteKind::Passthrough,
            _ if path == "/v1/models" || path.starts_with("/v1/models/") => RouteKind::Models,
            _ => RouteKind::NotFound,
        };
        let caller = match self
            .governance
            .authenticate(&config.keys, &session.req_header().headers)
        {
            Ok(caller) => caller,
            Err((e, reason)) => {
                self.audit_auth_failure(session, ctx, reason);
                return Err(e);
            }
        };
        ctx.caller = Some(caller);
        if endpoint.is_some() || passthrough_route.is_some() {
            self.take_key_slot(&config, ctx, SlotKind::Request)?;
        }

        if let Some(endpoint) = endpoint {
            require(method == http::Method::POST, "POST")?;
            self.unified(&config, session, ctx, endpoint).await?;
            return Ok(Next::Responded);
        }
        if let Some((name, rest)) = passthrough_route {
            return self
                .start_passthrough(&config, session, ctx, name, rest)
                .await;
        }
        if path == "/v1/models" {
            require(is_get, "GET")?;
            return self.list_models(&config, session, ctx).await;
        }
        if let Some(id) = path.strip_prefix("/v1/models/") {
            require(is_get, "GET")?;
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned();
            return self.get_model(&config, session, ctx, &id).await;
        }
        Err(GatewayError::NotFound(format!(
            "Unknown route: {method} {path}"
        )))
    }

    /// `/ready`: the config is loaded and at least one provider is usable.
    fn readiness(&self, config: &Config) -> (bool, serde_json::Value) {
        let mut providers = serde_json::Map::new();
        let mut any = false;
        for p in config.providers.iter() {
            let open = self.health.get(&p.name).is_open();
            let state = match p.readiness() {
                Readiness::Ready if open => {
                    json!({"kind": p.kind.as_str(), "usable": false, "reason": "circuit open after repeated failures"})
                }
                Readiness::Ready => {
                    any = true;
                    json!({"kind": p.kind.as_str(), "usable": true})
                }
                Readiness::NotReady(why) => {
                    json!({"kind": p.kind.as_str(), "usable": false, "reason": why})
                }
            };
            providers.insert(p.name.to_string(), state);
        }
        let status = if any { "ready" } else { "not_ready" };
        (any, json!({"status": status, "providers": providers}))
    }

    async fn local_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        body: serde_json::Value,
    ) -> Result<Next, GatewayError> {
        let bytes = serde_json::to_vec(&body).map_err(|_| GatewayError::Internal)?;
        respond::json(session, ctx, status, bytes)
            .await
            .map_err(|_| GatewayError::Internal)?;
        Ok(Next::Responded)
    }

    fn model_object(id: &str, owner: &str, created: u64) -> serde_json::Value {
        json!({"id": id, "object": "model", "created": created, "owned_by": owner})
    }

    /// Whether the caller's key scopes allow `model`.
    fn caller_may_use(ctx: &RequestCtx, model: &str) -> bool {
        ctx.caller
            .as_ref()
            .and_then(|c| c.policy.as_ref())
            .is_none_or(|p| p.scope.allows_model(model))
    }

    /// `/health/providers`: each provider's readiness, circuit state, latency and error rate.
    fn provider_health(&self, config: &Config) -> serde_json::Value {
        let mut providers = serde_json::Map::new();
        for p in config.providers.iter() {
            let (usable, reason) = match p.readiness() {
                Readiness::Ready => (true, None),
                Readiness::NotReady(why) => (false, Some(why)),
            };
            let health = self.health.get(&p.name).report();
            providers.insert(
                p.name.to_string(),
                json!({"kind": p.kind.as_str(), "usable": usable && health.state != "open", "reason": reason, "health": health}),
            );
        }
        json!({"providers": providers})
    }

    async fn list_models(
        &self,
        config: &Config,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Next, GatewayError> {
        let created = config.router.created;
        let data: Vec<_> = config
            .router
            .listed_models()
            .filter(|(id, _)| Self::caller_may_use(ctx, id))
            .map(|(id, owner)| Self::model_object(id, owner, created))
            .collect();
        self.local_json(session, ctx, 200, json!({"object": "list", "data": data}))
            .await
    }

    async fn get_model(
        &self,
        config: &Config,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<Next, GatewayError> {
        switchyard_filters::model_name::check(id)?;
        let resolved = config.router.resolve(id)?;
        if !Self::caller_may_use(ctx, id) {
            // Out of the key's scopes: as absent as it is from the list.
            return Err(GatewayError::ModelNotFound {
                model: id.to_owned(),
                suggestions: Vec::new(),
            });
        }
        let body = Self::model_object(id, &resolved.provider.name, config.router.created);
        self.local_json(session, ctx, 200, body).await
    }

    fn forwarder(&self, config: &Config) -> Forwarder<'_> {
        Forwarder {
            connector: &self.connector,
            timeouts: self.timeouts(config),
            max_response_bytes: config.server.max_upstream_response_bytes,
            deadline: None,
        }
    }

    fn timeouts(&self, config: &Config) -> PeerTimeouts {
        PeerTimeouts {
            connect: config.server.connect_timeout,
            read: config.server.read_timeout,
            idle: config.server.read_timeout,
        }
    }

    async fn start_passthrough(
        &self,
        config: &Config,
        session: &mut Session,
        ctx: &mut RequestCtx,
        name: &str,
        rest: &str,
    ) -> Result<Next, GatewayError> {
        let header = session.req_header();
        if header.uri.scheme().is_some()
            || header.uri.authority().is_some()
            || !header.raw_path().starts_with(b"/")
        {
            return Err(GatewayError::BadPath(
                "absolute-form request targets are not allowed",
            ));
        }
        let provider = config
            .providers
            .get(name)
            .ok_or_else(|| {
                GatewayError::NotFound(format!("No provider named `{name}` is configured."))
            })?
            .clone();
        let Some(upstream) = provider.upstream.as_ref() else {
            return Err(GatewayError::NotFound(format!(
                "Provider `{name}` has no native API to pass through to."
            )));
        };
        passthrough::check_method(provider.kind, &header.method)?;
        passthrough::check_connection_header(header)?;
        // Bedrock model ARNs carry `/`, sent as `%2F` inside the `{modelId}` label.
        let encoded_slashes = provider.kind == ProviderKind::Bedrock;
        let path = passthrough::upstream_path_with(
            rest,
            header.uri.query(),
            &upstream.default_query,
            encoded_slashes,
        )?;
        passthrough::normalize_content_length(session.req_header_mut())?;
        ctx.provider = Some(provider.clone());
        if crate::limits::passthrough_streams(rest) {
            self.take_stream_slot(config, ctx)?;
        }
        let limits = &config.server.limits;
        let left = ctx
            .body_deadline(limits)
            .saturating_duration_since(Instant::now());
        let path_model = (provider.kind == ProviderKind::Bedrock)
            .then(|| crate::providers::bedrock::model_from_path(rest))
            .flatten();
        self.govern_passthrough(ctx, &provider.name, path_model.as_deref())
            .await?;
        ctx.passthrough = Some(Passthrough::new(path.clone()).with_path_model(path_model));
        if !upstream.credential.signs_body() {
            // Pingora's hooks stream the request through; the first body read may wait only
            // as long as the whole-body deadline leaves (`request_body_filter` keeps it so).
            session
                .downstream_session
                .set_read_timeout(Some(limits.body_timeout.min(left)));
            return Ok(Next::Proxy);
        }
        // A signature covers the body, so it must be read before any header goes upstream.
        let body = self.read_body(session, ctx, config).await?;
        if let Some(pt) = ctx.passthrough.as_mut() {
            pt.observe_request_bytes(body.len());
        }
        let mut request = session.req_header().clone();
        passthrough::prepare_upstream_request(&mut request, upstream, &path)
            .map_err(|_| GatewayError::Internal)?;
        request
            .insert_header("content-length", body.len().to_string())
            .map_err(|_| GatewayError::Internal)?;
        let call = UpstreamCall {
            provider: &provider,
            upstream,
            request,
            body,
            mode: Mode::Raw,
        };
        self.forwarder(config).call(session, ctx, call).await?;
        Ok(Next::Responded)
    }
}

impl Gateway {
    /// Holds one of the caller's stream slots for this request when the key is under a
    /// stream cap (429 `too_many_streams` when none is free); released when the request
    /// context drops.
    pub(crate) fn take_stream_slot(
        &self,
        config: &Config,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        self.take_key_slot(config, ctx, SlotKind::Stream)
    }

    /// Holds a `kind` slot of the caller's key when its caps (its own, else the server's) have
    /// one; no cap, no counting.
    fn take_key_slot(
        &self,
        config: &Config,
        ctx: &mut RequestCtx,
        kind: SlotKind,
    ) -> Result<(), GatewayError> {
        let Some(caller) = ctx.caller.as_ref() else {
            return Ok(());
        };
        let caps = caller.concurrency.or(config.server.limits.per_key);
        let cap = match kind {
            SlotKind::Request => caps.requests,
            SlotKind::Stream => caps.streams,
        };
        let Some(limit) = cap else { return Ok(()) };
        let slot = self.key_slots.acquire(&caller.key_id, kind, limit)?;
        match kind {
            SlotKind::Request => ctx.request_slot = Some(slot),
            SlotKind::Stream => ctx.stream_slot = Some(slot),
        }
        Ok(())
    }
}

impl Gateway {
    /// Answers a refused request with its error envelope, then lingers (reads and drops what
    /// the client still uploads, bounded) so the close does not reset the answer away. A
    /// client that has gone gets nothing: the request is recorded as 499.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, e: &GatewayError) {
        if ctx.client_closed() || *e == GatewayError::ClientClosed {
            ctx.error = Some(GatewayError::ClientClosed);
            session.downstream_session.set_keepalive(None);
            return;
        }
        if respond::error(session, ctx, e).await.is_err() {
            // respond::full recorded the client as gone.
            session.downstream_session.set_keepalive(None);
            return;
        }
        crate::limits::linger(session, ctx).await;
    }
}

fn require(ok: bool, allow: &'static str) -> Result<(), GatewayError> {
    if ok {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed { allow })
    }
}

fn unified_endpoint(path: &str) -> Option<Endpoint> {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" | "/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/completions" | "/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" | "/embeddings" => Some(Endpoint::Embeddings),
        "/v1/messages" => Some(Endpoint::Messages),
        "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
        _ => None,
    }
}

impl Gateway {
    /// Reads a request body whole: 413 over `server.max_request_body_bytes`, 408 when the
    /// client stalls (a pause over `client_body_timeout_seconds`, or the body not complete
    /// within `client_body_total_timeout_seconds`), 503 when the bodies held already take `server.max_inflight_body_bytes`
    /// (the bytes stay taken, in `ctx.body_permit`, until the request ends).
    pub(crate) async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        config: &Config,
    ) -> Result<Bytes, GatewayError> {
        let limit = config.server.max_request_body_bytes;
        let budget = config.server.max_inflight_body_bytes;
        let too_large = GatewayError::PayloadTooLarge { limit };
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large);
        }
        // The declared size is taken before a byte is read (and before 100-continue).
        let Some(mut permit) = self.body_budget.take(declared.unwrap_or(0), budget) else {
            session.downstream_session.set_keepalive(None);
            return Err(GatewayError::BodyBudgetExhausted);
        };
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            session
                .downstream_session
                .write_continue_response()
                .await
                .map_err(|_| GatewayError::Internal)?;
        }
        let deadline = ctx.body_deadline(&config.server.limits);
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        loop {
            let Ok(read) =
                tokio::time::timeout_at(deadline.into(), session.read_request_body()).await
            else {
                session.downstream_session.set_keepalive(None);
                return Err(GatewayError::RequestTimeout);
            };
            match read {
                Ok(Some(chunk)) => {
                    let len = body.len() as u64 + chunk.len() as u64;
                    if len > limit {
                        session.downstream_session.set_keepalive(None);
                        return Err(too_large);
                    }
                    // A chunked body (or one longer than declared) takes its bytes as they come.
                    if len > permit.bytes() && !permit.grow(len - permit.bytes(), budget) {
                        session.downstream_session.set_keepalive(None);
                        return Err(GatewayError::BodyBudgetExhausted);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                    session.downstream_session.set_keepalive(None);
                    return Err(GatewayError::RequestTimeout);
                }
                Err(_) => {
                    session.downstream_session.set_keepalive(None);
                    return Err(GatewayError::InvalidRequest {
                        message: "The request body could not be read.".into(),
                        param: None,
                    });
                }
            }
        }
        ctx.body_permit = Some(permit);
        Ok(body.freeze())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.metrics)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if crate::server::DRAINING.load(std::sync::atomic::Ordering::Relaxed) {
            session.downstream_session.set_keepalive(None);
        }
        ctx.request_id = request_id(
            session
                .req_header()
                .headers
                .get("x-request-id")
                .map(|v| v.as_bytes()),
        );
        let (limits, cors) = {
            let config = self.config.load();
            (config.server.limits, config.server.cors.clone())
        };
        if let Some(cors) = cors {
            ctx.cors = Some(cors.decide(&session.req_header().headers));
        }
        if let Err(e) = crate::limits::check_request_header(session, &limits) {
            self.refuse(session, ctx, &e).await;
            return Ok(true);
        }
        if ctx.cors.is_some() && crate::cors::is_preflight(session.req_header()) {
            respond::preflight(session, ctx).await?;
            return Ok(true);
        }
        match self.route(session, ctx).await {
            Ok(Next::Responded) => {
                if ctx.client_closed() {
                    session.downstream_session.set_keepalive(None);
                }
                Ok(true)
            }
            Ok(Next::Proxy) => Ok(false),
            Err(e) => {
                self.refuse(session, ctx, &e).await;
                Ok(true)
            }
        }
    }

    /// Pingora calls this for each piece of a passthrough request body it streams upstream
    /// unchanged: its size is noted (for a token estimate when the answer reports no usage),
    /// and the next read may wait only for what is left of the whole-body deadline.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(pt), Some(chunk)) = (ctx.passthrough.as_mut(), body.as_ref()) {
            pt.observe_request_bytes(chunk.len());
        }
        let Some(limits) = ctx.config.as_ref().map(|c| c.server.limits) else {
            return Ok(());
        };
        if end_of_stream {
            return Ok(());
        }
        let left = ctx
            .body_deadline(&limits)
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            ctx.error = Some(GatewayError::RequestTimeout);
            session.downstream_session.set_keepalive(None);
            return Error::e_explain(ErrorType::ReadTimedout, "request body deadline passed");
        }
        session
            .downstream_session
            .set_read_timeout(Some(limits.body_timeout.min(left)));
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = ctx.provider.as_ref().and_then(|p| p.upstream.as_ref());
        let Some(upstream) = upstream else {
            return Error::e_explain(ErrorType::InternalError, "passthrough without a provider");
        };
        let timeouts = match ctx.config.as_deref() {
            Some(c) => self.timeouts(c),
            None => return Error::e_explain(ErrorType::InternalError, "no config snapshot"),
        };
        match upstream.endpoint.peer(timeouts) {
            Some(peer) => Ok(peer),
            None => {
                ctx.error = Some(GatewayError::ProviderUnavailable {
                    provider: ctx
                        .provider
                        .as_ref()
                        .map(|p| p.name.to_string())
                        .unwrap_or_default(),
                    reason: format!(
                        "the address of {} is not resolved yet",
                        upstream.endpoint.host
                    ),
                });
                Error::e_explain(ErrorType::HTTPStatus(503), "provider address unresolved")
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(provider), Some(pt)) = (ctx.provider.as_ref(), ctx.passthrough.as_ref()) else {
            return Error::e_explain(ErrorType::InternalError, "passthrough state missing");
        };
        let Some(upstream) = provider.upstream.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "passthrough without an upstream");
        };
        passthrough::prepare_upstream_request(req, upstream, &pt.path)?;
        if let Err(e) = upstream.credential.apply(&provider.name, req, b"").await {
            let status = e.status();
            ctx.error = Some(e);
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "provider credential unavailable",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(pt) = ctx.passthrough.as_mut() {
            pt.observe_response(resp);
            resp.insert_header("x-switchyard-request-id", ctx.request_id.as_str())?;
            if let Some(cors) = &ctx.cors {
                cors.apply_to_upstream(resp)?;
            }
            if let Some(rate) = &ctx.rate {
                for (k, v) in rate.headers() {
                    resp.insert_header(k, v)?;
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(pt), Some(chunk)) = (ctx.passthrough.as_mut(), body.as_ref()) {
            pt.observe_chunk(chunk);
            ctx.mark_first_byte();
        }
        Ok(None)
    }

    /// Pingora calls this right after reading a header on a connection the gate prepared.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        crate::limits::HeaderRead::mark(prev);
    }

    /// Errors on the client's side are not the gateway's: a client that goes away is routine
    /// at the edge, and a request it could not read is logged at info by `fail_to_proxy`.
    /// A client that went away is logged at info by `logging`, as status 499.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        ctx.client_closed() || error.esource() == &pingora::ErrorSource::Downstream
    }

    /// The request in Pingora's own log lines, without its query string (which may carry a
    /// key: `?key=...`).
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let query = if req.uri.query().is_some() {
            "?<redacted>"
        } else {
            ""
        };
        let host = req
            .headers
            .get(http::header::HOST)
            .map_or(String::new(), |h| {
                String::from_utf8_lossy(h.as_bytes()).into_owned()
            });
        format!("{} {}{query}, Host: {host}", req.method, req.uri.path())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let provider = ctx
            .provider
            .as_ref()
            .map(|p| p.name.to_string())
            .unwrap_or_default();
        let err = match (ctx.error.clone(), e.etype()) {
            (Some(err), _) => err,
            (None, ErrorType::HTTPStatus(400)) => GatewayError::InvalidRequest {
                message: "The request could not be read.".into(),
                param: None,
            },
            // The client paused longer than `server.client_body_timeout_seconds`.
            (None, ErrorType::ReadTimedout) if e.esource() == &pingora::ErrorSource::Downstream => {
                GatewayError::RequestTimeout
            }
            // The client went away: nobody to answer; recorded as 499.
            (
                None,
                ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::WriteTimedout
                | ErrorType::H2Error,
            ) if e.esource() == &pingora::ErrorSource::Downstream => {
                ctx.error = Some(GatewayError::ClientClosed);
                ctx.log_detail = Some(format!("client went away: {}", e.etype().as_str()));
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            // Anything else on the client's side (a bad chunk size, a header Pingora will not
            // forward) is the client's 400, not the provider's failure.
            (None, etype) if e.esource() == &pingora::ErrorSource::Downstream => {
                log::info!(
                    "request {} refused: the client sent what cannot be proxied ({})",
                    ctx.request_id,
                    etype.as_str()
                );
                let what = match etype {
                    // Pingora's body reader (`INVALID_CHUNK`, not exported).
                    ErrorType::Custom("InvalidChunk") => "its chunked encoding is invalid",
                    ErrorType::InvalidHTTPHeader => "a header cannot be forwarded",
                    _ => "it is malformed",
                };
                GatewayError::InvalidRequest {
                    message: format!("The request could not be read: {what}."),
                    param: None,
                }
            }
            (None, _) => forward::failure(e, &provider),
        };
        ctx.log_detail = Some(e.etype().as_str().to_owned());
        let code = err.status();
        if session.response_written().is_none() {
            if respond::error(session, ctx, &err).await.is_ok() {
                crate::limits::linger(session, ctx).await;
            }
        } else {
            ctx.error = Some(err);
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(pt) = ctx.passthrough.as_mut() {
            let (usage, model) = pt.finish();
            ctx.usage = usage;
            if ctx.metric_model.is_none() {
                // The model the provider reported (or the path named, on success): bounded
                // by what the provider serves; anything unlike a model name is `other`.
                ctx.metric_model = Some(match model.as_deref() {
                    Some(m) if switchyard_filters::model_name::is_valid(m) => Arc::from(m),
                    Some(_) => Arc::from("other"),
                    None => Arc::from("none"),
                });
            }
            ctx.usage_estimated = pt.usage_estimated();
            if ctx.client_model.is_none() {
                ctx.client_model = model;
            }
        }
        let status = if ctx.client_closed() {
            // Not the gateway's failure nor the provider's: nginx's 499, logged at info.
            log::info!(
                "request {} ended early: {}",
                ctx.request_id,
                ctx.log_detail
                    .as_deref()
                    .unwrap_or("the client closed the connection")
            );
            499
        } else {
            ctx.status
                .or_else(|| session.response_written().map(|r| r.status.as_u16()))
                .unwrap_or(if e.is_some() { 502 } else { 0 })
        };
        let latency = ctx.started.elapsed();
        let provider = ctx.provider.as_ref().map_or("none", |p| &*p.name);
        let model = ctx.metric_model.as_deref().unwrap_or("none");
        let client_model = ctx.client_model.as_deref().unwrap_or("none");
        let status_code = http::StatusCode::from_u16(status).ok();
        let status_label = status_code.as_ref().map_or("000", http::StatusCode::as_str);
        self.metrics
            .duration
            .with_label_values(&[provider, model])
            .observe(latency.as_secs_f64());
        if let Some(limit) = ctx.error.as_ref().and_then(crate::limits::refusal_label) {
            self.metrics
                .limit_refusals
                .with_label_values(&[limit])
                .inc();
        }
        if ctx.provider_error_counted {
            // The unified API counted each failed attempt as it happened.
        } else if let Some(kind) = ctx
            .error
            .as_ref()
            .and_then(GatewayError::provider_error_type)
        {
            self.metrics
                .provider_errors
                .with_label_values(&[provider, kind])
                .inc();
        } else if status >= 400 && ctx.provider.is_some() && ctx.error.is_none() {
            let kind = match status {
                429 => "rate_limit",
                s if s >= 500 => "server_error",
                _ => "client_error",
            };
            self.metrics
                .provider_errors
                .with_label_values(&[provider, kind])
                .inc();
        }
        if let Some(ttfb) = ctx.first_byte {
            self.metrics
                .time_to_first_token
                .with_label_values(&[provider, model])
                .observe(ttfb.as_secs_f64());
        }
        if ctx
            .provider
            .as_ref()
            .is_some_and(|p| p.kind == ProviderKind::Bedrock)
        {
            self.metrics.legacy_bedrock_requests.inc();
            self.metrics
                .legacy_bedrock_duration
                .observe(latency.as_secs_f64());
        }
        if let Some(usage) = ctx.usage {
            let upstream = ctx.upstream_model.as_deref().unwrap_or(client_model);
            let price = ctx
                .config
                .as_ref()
                .and_then(|c| c.prices.price(&[upstream, client_model]));
            ctx.cost = price.map_or(0.0, |p| p.cost(&usage));
            if price.is_none() {
                self.metrics.unpriced.with_label_values(&[provider]).inc();
            }
            self.metrics.record_usage(provider, model, &usage, ctx.cost);
        }
        // Counted last, so a scrape that shows this request shows all of its other metrics too.
        // Probes (load balancers polling /health, /ready) would swamp the request metrics.
        if !matches!(ctx.route, RouteKind::Health | RouteKind::Ready) {
            self.metrics
                .requests
                .with_label_values(&[provider, model, status_label])
                .inc();
        }
        if let Some(caller) = ctx.caller.as_ref() {
            let record = crate::store::UsageRecord {
                ts_ms: crate::governance::audit::now_ms(),
                request_id: ctx.request_id.clone(),
                user: caller.user.clone(),
                key_id: caller.key_id.clone(),
                provider: ctx
                    .provider
                    .as_ref()
                    .map_or_else(|| Arc::from(provider), |p| p.name.clone()),
                model: client_model.to_owned(),
                route: ctx.route.as_str(),
                status: i32::from(status),
                input_tokens: ctx.usage.map_or(0, |u| u.prompt_tokens as i64),
                output_tokens: ctx.usage.map_or(0, |u| u.completion_tokens as i64),
                cost_usd: ctx.cost,
            };
            self.governance.settle(caller, record).await;
        }
        self.access_log.log(AccessRecord {
            ts: now_rfc3339(),
            request_id: std::mem::take(&mut ctx.request_id),
            user: ctx.caller.as_ref().map(|c| c.user.clone()),
            key_id: ctx.caller.as_ref().map(|c| c.key_id.clone()),
            method: session.req_header().method.as_str().to_owned(),
            route: ctx.route.as_str(),
            path: session.req_header().uri.path().chars().take(256).collect(),
            provider: ctx.provider.as_ref().map(|p| p.name.clone()),
            model: ctx.client_model.take(),
            upstream_model: ctx.upstream_model.take(),
            status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            input_tokens: ctx.usage.map(|u| u.prompt_tokens),
            output_tokens: ctx.usage.map(|u| u.completion_tokens),
            usage_estimated: ctx.usage_estimated,
            cost_usd: ctx.usage.map(|_| ctx.cost),
            error: ctx.log_detail.take().or_else(|| {
                ctx.error
                    .as_ref()
                    .map(|e| e.code().unwrap_or(e.kind()).to_owned())
            }),
        });
    }
}
