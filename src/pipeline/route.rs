//! Classifies each request by its path and serves it: the local routes (`/health`,
//! `/ready`, `/health/providers`, `/v1/models`), a front door (OpenAI chat, completions and
//! embeddings; Anthropic Messages) through [`super::attempts`], or native passthrough
//! ([`super::passthrough`]).

use super::gateway::Next;
use super::Gateway;
use std::time::Instant;

use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;
use switchyard_filters::Endpoint;

use crate::config::Config;
use crate::ctx::{RequestCtx, RouteKind};
use crate::errors::GatewayError;
use crate::limits::SlotKind;
use crate::pipeline::forward::{Forwarder, Mode, UpstreamCall};
use crate::pipeline::passthrough::{self, Passthrough};
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{ProviderKind, Readiness};
use crate::respond;

impl Gateway {
    pub(super) async fn route(
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
            _ if path.starts_with("/v1/responses/") => RouteKind::StoredResponse,
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

        // The front doors' and the passthrough's futures are boxed: every request's own future
        // (boxed and moved into place by Pingora's `request_filter`) then holds neither, so no
        // request pays for copying the biggest one (see `future_sizes` below).
        if let Some(endpoint) = endpoint {
            require(method == http::Method::POST, "POST")?;
            Box::pin(self.front_door(&config, session, ctx, endpoint)).await?;
            return Ok(Next::Responded);
        }
        if let Some((name, rest)) = passthrough_route {
            return Box::pin(self.start_passthrough(&config, session, ctx, name, rest)).await;
        }
        if path == "/v1/models" {
            require(is_get, "GET")?;
            return self.list_models(&config, session, ctx).await;
        }
        if let Some(rest) = path.strip_prefix("/v1/responses/") {
            return self.stored_response(session, ctx, rest).await;
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

    /// A model as Anthropic's Models API describes one (for clients that send
    /// `anthropic-version`, as the Anthropic SDKs and Claude Code do).
    fn anthropic_model_object(id: &str, created: u64) -> serde_json::Value {
        let created_at = crate::access_log::now_rfc3339_at(created.saturating_mul(1000) as i64);
        json!({"type": "model", "id": id, "display_name": id, "created_at": created_at})
    }

    /// Whether the client speaks Anthropic's API (its SDKs send `anthropic-version` always).
    fn anthropic_client(session: &Session) -> bool {
        session
            .req_header()
            .headers
            .contains_key("anthropic-version")
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
        let listed = config
            .router
            .listed_models()
            .filter(|(id, _)| Self::caller_may_use(ctx, id));
        let body = if Self::anthropic_client(session) {
            let data: Vec<_> = listed
                .map(|(id, _)| Self::anthropic_model_object(id, created))
                .collect();
            let first = data.first().map(|m| m["id"].clone());
            let last = data.last().map(|m| m["id"].clone());
            json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
        } else {
            let data: Vec<_> = listed
                .map(|(id, owner)| Self::model_object(id, owner, created))
                .collect();
            json!({"object": "list", "data": data})
        };
        self.local_json(session, ctx, 200, body).await
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
        let body = if Self::anthropic_client(session) {
            Self::anthropic_model_object(id, config.router.created)
        } else {
            Self::model_object(id, &resolved.provider.name, config.router.created)
        };
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

    pub(super) fn timeouts(&self, config: &Config) -> PeerTimeouts {
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
        ctx.passthrough = Some(Box::new(
            Passthrough::new(path.clone()).with_path_model(path_model),
        ));
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
        // Signed bodies only (SigV4, OCI): boxed, so that the common passthrough, which returns
        // to Pingora's proxy loop above, does not carry this forward's future.
        Box::pin(self.forwarder(config).call(session, ctx, call)).await?;
        Ok(Next::Responded)
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
        "/v1/responses" | "/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

#[cfg(test)]
mod future_sizes {
    //! Every request's future is moved into place whole (Pingora boxes `request_filter`'s),
    //! so its size is a per-request cost: the big, branch-specific futures are boxed where
    //! they branch off (issue 17; callgrind figures in docs/BENCHMARKS.md). These bounds keep
    //! a new `.await` from quietly pulling one back in.
    use super::*;
    use std::sync::Arc;

    fn route_future<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(&'a Gateway, &'a mut Session, &'a mut RequestCtx) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    fn front_door_future<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            &'a Gateway,
            &'a Arc<Config>,
            &'a mut Session,
            &'a mut RequestCtx,
            Endpoint,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_request_future_stays_small() {
        let route = route_future(Gateway::route);
        let front_door = front_door_future(Gateway::front_door);
        eprintln!("futures: Gateway::route {route} bytes, Gateway::front_door {front_door} bytes");
        assert!(route <= 4096, "Gateway::route's future is {route} bytes");
        assert!(
            front_door <= 16 * 1024,
            "Gateway::front_door's future is {front_door} bytes"
        );
    }
}
