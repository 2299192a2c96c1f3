//! The gateway value every Pingora hook runs on: configuration, metrics, logs, health,
//! governance and the upstream connector shared by all requests, and the per-key slots a
//! request holds.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use pingora::proxy::Session;
use pingora::Result;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::limits::SlotKind;
use crate::metrics::Metrics;
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
    /// Stored Responses-API answers (`previous_response_id`, `GET /v1/responses/{id}`).
    pub(crate) responses: Arc<crate::response_store::ResponseStore>,
    /// OpenTelemetry tracing (off until `telemetry:` configures it).
    pub tracing: Arc<crate::telemetry::Tracing>,
    /// The response cache and the calls in flight (`cache:`).
    pub cache: Arc<crate::cache::ResponseCache>,
}

/// What `request_filter` decided.
pub(super) enum Next {
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
        let cache = crate::cache::ResponseCache::new(
            config.load().cache.clone(),
            crate::cache::CacheMetrics::new(&metrics),
        );
        Gateway {
            cache,
            config,
            metrics,
            access_log,
            health,
            connector: Connector::new(None),
            governance,
            key_slots: Arc::default(),
            body_budget: Arc::default(),
            responses: Arc::default(),
            tracing: crate::telemetry::Tracing::new(),
        }
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
    pub(super) fn take_key_slot(
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
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: &GatewayError,
    ) {
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
