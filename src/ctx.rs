//! Per-request state carried through Pingora's hooks, from authentication to the access log.

use std::sync::Arc;
use std::time::Instant;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::Endpoint;

use switchyard_filters::Usage;

use crate::auth::Caller;
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use crate::pipeline::passthrough::Passthrough;
use crate::providers::Provider;

/// What kind of request this is, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Unclassified,
    Health,
    Ready,
    /// A CORS preflight answered before authentication.
    Preflight,
    Models,
    Unified(switchyard_filters::Endpoint),
    Passthrough,
    /// `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
    StoredResponse,
    NotFound,
}

impl RouteKind {
    /// The front door whose envelope this route's errors take.
    pub fn front(self) -> FrontDoor {
        match self {
            RouteKind::Unified(Endpoint::Messages | Endpoint::CountTokens) => FrontDoor::Messages,
            RouteKind::Unified(Endpoint::Responses) => FrontDoor::Responses,
            _ => FrontDoor::Chat,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Unclassified => "unclassified",
            RouteKind::Health => "health",
            RouteKind::Ready => "ready",
            RouteKind::Preflight => "preflight",
            RouteKind::Models => "models",
            RouteKind::Unified(e) => e.as_str(),
            RouteKind::Passthrough => "passthrough",
            RouteKind::StoredResponse => "stored_response",
            RouteKind::NotFound => "not_found",
        }
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub route: RouteKind,
    pub caller: Option<Caller>,
    pub provider: Option<Arc<Provider>>,
    /// The model as the client named it, once it resolved to a provider.
    pub client_model: Option<String>,
    pub upstream_model: Option<String>,
    /// The `model` label of this request's metrics: a name from configuration (see
    /// `route::Matched::metric_label`), never the caller's string as such.
    pub metric_model: Option<Arc<str>>,
    /// Status of a response the gateway wrote itself (None: read it from the session).
    pub status: Option<u16>,
    pub usage: Option<Usage>,
    /// `usage` is the gateway's estimate (a passthrough stream that reported none).
    pub usage_estimated: bool,
    pub cost: f64,
    /// Why the request failed, for logs and metrics.
    pub error: Option<GatewayError>,
    /// Free-form failure detail for the log only (never sent to the client).
    pub log_detail: Option<String>,
    /// Client parameters the provider could not honour (`x-switchyard-dropped-params`).
    pub dropped_params: Option<String>,
    /// Boxed (≈ 430 bytes): the context is held, and moved, in every request's future.
    pub passthrough: Option<Box<Passthrough>>,
    /// When the first byte of a streamed answer left for the client.
    pub first_byte: Option<std::time::Duration>,
    /// Upstream attempts made for this request (unified API).
    pub attempts: u32,
    /// `error` is a failed attempt already counted in `ai_proxy_provider_errors_total`.
    pub provider_error_counted: bool,
    /// `x-ratelimit-*` figures for a rate-limited key (on every response the gateway writes).
    pub rate: Option<Box<crate::governance::limits::RateInfo>>,
    /// The configuration snapshot this request runs on.
    pub config: Option<Arc<crate::config::Config>>,
    /// One of the key's request slots (`max_requests_in_flight_per_key`), held until the
    /// request ends.
    pub request_slot: Option<crate::limits::KeySlot>,
    /// One of the key's stream slots (`max_streams_per_key`), held while a streaming request
    /// runs.
    pub stream_slot: Option<crate::limits::KeySlot>,
    /// `server.cors` headers for this request's responses (`None`: CORS off).
    pub cors: Option<Box<crate::cors::CorsDecision>>,
    /// The bytes of `server.max_inflight_body_bytes` this request's body holds.
    pub body_permit: Option<crate::body_budget::BodyPermit>,
    /// A Responses-API request's id, echo and storage (`/v1/responses` only).
    pub responses: Option<Box<crate::pipeline::responses::ResponsesTurn>>,
    /// This request's trace when tracing is on (`telemetry:`).
    pub trace: Option<Box<crate::telemetry::RequestTrace>>,
    /// A cacheable request's cache state (`cache:` on its mapping or key).
    pub cache: Option<Box<crate::pipeline::cache::CacheCtx>>,
    _in_flight: InFlight,
}

impl RequestCtx {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            route: RouteKind::Unclassified,
            caller: None,
            provider: None,
            client_model: None,
            upstream_model: None,
            metric_model: None,
            status: None,
            usage: None,
            usage_estimated: false,
            cost: 0.0,
            error: None,
            log_detail: None,
            dropped_params: None,
            passthrough: None,
            first_byte: None,
            attempts: 0,
            provider_error_counted: false,
            rate: None,
            config: None,
            request_slot: None,
            stream_slot: None,
            body_permit: None,
            responses: None,
            cache: None,
            cors: None,
            trace: None,
            _in_flight: InFlight::new(metrics),
        }
    }
}

impl RequestCtx {
    /// When the whole request body must have arrived (`client_body_total_timeout_seconds`
    /// after the request header).
    pub fn body_deadline(&self, limits: &crate::config::ClientLimits) -> Instant {
        self.started + limits.body_total_timeout
    }

    /// Whether the client went away before its answer was complete (recorded as 499).
    pub fn client_closed(&self) -> bool {
        matches!(self.error, Some(GatewayError::ClientClosed))
    }

    /// Notes the first streamed byte (for `ai_proxy_time_to_first_token_seconds`).
    pub fn mark_first_byte(&mut self) {
        if self.first_byte.is_none() {
            self.first_byte = Some(self.started.elapsed());
        }
    }
}

/// A request id: the caller's `x-request-id` when it is sane, else 128 random bits in hex.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    if let Some(id) = incoming {
        if !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_graphic()) {
            return String::from_utf8_lossy(id).into_owned();
        }
    }
    // Written digit by digit: `format!` cost ≈ 1,000 instructions a request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for v in [fastrand::u64(..), fastrand::u64(..)] {
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((v >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}

/// The `x-request-id` header name, parsed once.
pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids() {
        assert_eq!(super::request_id(Some(b"abc-1")), "abc-1");
        for bad in [&b""[..], b"a b", &[b'x'; 129]] {
            let id = super::request_id(Some(bad));
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(super::request_id(None), super::request_id(None));
    }

    /// Pingora holds the context in each request's future and moves it with the future
    /// (its size is copied several times a request): the large, rarely used parts are boxed.
    #[test]
    fn the_context_stays_small() {
        let size = std::mem::size_of::<super::RequestCtx>();
        assert!(size <= 640, "RequestCtx is {size} bytes");
    }
}
