//! The Pingora `ProxyHttp` service: each hook is a few lines calling the modules that do the
//! work.
//!
//! - `request_filter`: request id, local endpoints, authentication, then either the unified
//!   API (read the bounded body, validate, resolve the model, answer from the mock or call the
//!   upstream through [`crate::pipeline::forward`]) or native passthrough (path checked, proxied below).
//! - `upstream_peer` / `upstream_request_filter`: passthrough only; the provider's endpoint and
//!   path, the caller's key swapped for the provider's credential.
//! - `response_filter` / `response_body_filter`: passthrough usage observed, bytes unchanged.
//! - `logging`: metrics and the access log for every request.

use super::gateway::Next;
use super::Gateway;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::access_log::{now_rfc3339, AccessRecord};
use crate::ctx::{request_id, RequestCtx, RouteKind};
use crate::errors::GatewayError;
use crate::pipeline::forward::{self};
use crate::pipeline::passthrough::{self};
use crate::providers::ProviderKind;
use crate::respond;

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
                .get(&crate::ctx::X_REQUEST_ID)
                .map(|v| v.as_bytes()),
        );
        if let Some(p) = self.tracing.pipeline() {
            ctx.trace = Some(crate::telemetry::RequestTrace::start(
                p,
                &session.req_header().headers,
                ctx.started,
            ));
        }
        let (limits, cors) = {
            let config = self.config.load();
            (config.server.limits, config.server.cors.clone())
        };
        if let Some(cors) = cors {
            ctx.cors = Some(Box::new(cors.decide(&session.req_header().headers)));
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
        // A token fetched here (none cached yet) is a span under the server span.
        let on_path = crate::telemetry::on_path(ctx, None);
        let applied = upstream.credential.apply(&provider.name, req, b"");
        if let Err(e) = crate::telemetry::with_on_path(on_path, applied).await {
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
            if let Some((name, value)) = crate::telemetry::response_header(ctx) {
                resp.insert_header(name, value)?;
            }
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(pt), Some(chunk)) = (ctx.passthrough.as_mut(), body.as_ref()) {
            if end_of_stream {
                pt.observe_last_chunk(chunk);
            } else {
                pt.observe_chunk(chunk);
            }
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
        // A cache hit (or a coalesced call's follower) is a request at no provider cost:
        // counted under the provider label `cache`, its usage priced as the cost it saved.
        let hit = ctx.cache.as_ref().and_then(|c| c.hit.clone());
        let provider = match (&hit, ctx.provider.as_ref()) {
            (Some(_), _) => "cache",
            (None, p) => p.map_or("none", |p| &*p.name),
        };
        let model = ctx.metric_model.as_deref().unwrap_or("none");
        let client_model = ctx.client_model.as_deref().unwrap_or("none");
        let status_code = http::StatusCode::from_u16(status).ok();
        let status_label = status_code.as_ref().map_or("000", http::StatusCode::as_str);
        let series = self.metrics.series(provider, model);
        series.observe_duration(latency.as_secs_f64());
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
            series.observe_time_to_first_token(&self.metrics, ttfb.as_secs_f64());
        }
        crate::telemetry::exemplar(ctx, &self.metrics, provider, model, latency);
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
            if hit.is_some() {
                self.cache.metrics.cost_saved.inc_by(ctx.cost);
                ctx.cost = 0.0;
            } else {
                if price.is_none() {
                    self.metrics.unpriced.with_label_values(&[provider]).inc();
                }
                series.record_usage(&self.metrics, &usage, ctx.cost);
            }
        }
        // Counted last, so a scrape that shows this request shows all of its other metrics too.
        // Probes (load balancers polling /health, /ready) would swamp the request metrics.
        if !matches!(ctx.route, RouteKind::Health | RouteKind::Ready) {
            series.count_request(&self.metrics, status_label);
        }
        drop(series);
        if let Some(caller) = ctx
            .caller
            .as_ref()
            .filter(|_| self.governance.records_usage())
        {
            let record = crate::store::UsageRecord {
                ts_ms: crate::governance::audit::now_ms(),
                request_id: ctx.request_id.clone(),
                user: caller.user.clone(),
                key_id: caller.key_id.clone(),
                provider: match (&hit, ctx.provider.as_ref()) {
                    (Some(h), _) => h.provider.clone().unwrap_or_else(|| Arc::from(provider)),
                    (None, Some(p)) => p.name.clone(),
                    (None, None) => Arc::from(provider),
                },
                model: client_model.to_owned(),
                route: ctx.route.as_str(),
                status: i32::from(status),
                input_tokens: ctx.usage.map_or(0, |u| u.prompt_tokens as i64),
                output_tokens: ctx.usage.map_or(0, |u| u.completion_tokens as i64),
                cost_usd: ctx.cost,
                cached: hit.is_some(),
                trace_id: ctx.trace.as_ref().map(|t| t.trace_id),
            };
            self.governance.settle(caller, record).await;
        }
        let trace_id = crate::telemetry::finish(ctx, session, status);
        if !self.access_log.enabled() {
            return;
        }
        self.access_log.log(AccessRecord {
            ts: now_rfc3339(),
            trace_id,
            request_id: std::mem::take(&mut ctx.request_id),
            user: ctx.caller.as_ref().map(|c| c.user.clone()),
            key_id: ctx.caller.as_ref().map(|c| c.key_id.clone()),
            method: crate::access_log::method_name(&session.req_header().method),
            route: ctx.route.as_str(),
            path: crate::access_log::truncated(session.req_header().uri.path(), 256).to_owned(),
            provider: match &hit {
                Some(h) => h.provider.clone(),
                None => ctx.provider.as_ref().map(|p| p.name.clone()),
            },
            model: ctx.client_model.take(),
            upstream_model: ctx.upstream_model.take(),
            status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            input_tokens: ctx.usage.map(|u| u.prompt_tokens),
            output_tokens: ctx.usage.map(|u| u.completion_tokens),
            usage_estimated: ctx.usage_estimated,
            cache: ctx.cache.as_ref().map(|c| c.result.as_str()),
            cost_usd: ctx.usage.map(|_| ctx.cost),
            error: ctx.log_detail.take().or_else(|| {
                ctx.error
                    .as_ref()
                    .map(|e| e.code().unwrap_or(e.kind()).to_owned())
            }),
        });
    }
}
