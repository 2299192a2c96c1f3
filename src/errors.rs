//! The gateway's one error type, rendered as OpenAI's error envelope with the right status.
//!
//! Every refusal the gateway produces itself goes through [`GatewayError`], so clients always
//! get `{"error":{"message","type","param","code"}}` and an HTTP status the OpenAI SDKs map to
//! the right exception. Messages never contain secrets: they are written from static text and
//! caller-visible names only.

use std::fmt;
use switchyard_filters::front::messages::errors as messages_errors;
use switchyard_filters::front::FrontDoor;

use switchyard_filters::openai::error_body;
use switchyard_filters::InvalidRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// 400: malformed JSON, missing or wrongly typed fields.
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// 400: a passthrough path that tries to leave the configured endpoint.
    BadPath(&'static str),
    /// 401: no gateway key, or an unknown one.
    Unauthenticated { missing: bool },
    /// 404: the model resolves to no provider.
    ModelNotFound {
        model: String,
        suggestions: Vec<String>,
    },
    /// 404: no such route, provider or model object.
    NotFound(String),
    /// 405: the route exists but not for this method.
    MethodNotAllowed { allow: &'static str },
    /// 413: the body is over `server.max_request_body_bytes`.
    PayloadTooLarge { limit: u64 },
    /// 400: ambiguous message framing (request smuggling): both `Content-Length` and
    /// `Transfer-Encoding`. The connection is closed after the answer.
    BadFraming(&'static str),
    /// 408: the client stopped sending the request body (`server.client_body_timeout_seconds`).
    RequestTimeout,
    /// 431: too many request headers, or too many header bytes (`server.max_header_count`,
    /// `server.max_header_bytes`).
    HeadersTooLarge { what: &'static str, limit: u64 },
    /// 429 `too_many_streams`: the key already has its most streams open
    /// (`server.max_streams_per_key` or the key's own `max_streams`); `Retry-After` goes with it.
    TooManyStreams { limit: u32 },
    /// 503 `request_bodies_over_budget`: the request bodies being held already take
    /// `server.max_inflight_body_bytes`; `Retry-After: 1` goes with it.
    BodyBudgetExhausted,
    /// 503 `media_fetch_busy`: every image-fetch slot (`media.max_concurrent_fetches`) stayed
    /// busy for the whole fetch timeout; `Retry-After: 1` goes with it.
    MediaFetchBusy,
    /// 429 `too_many_requests_in_flight`: the key already has its most requests running
    /// (`server.max_requests_in_flight_per_key` or the key's own `max_requests_in_flight`).
    TooManyRequestsInFlight { limit: u32 },
    /// 499 (nginx's "client closed request"): the client went away before its answer was
    /// complete. Never sent (there is no one to send it to); recorded in logs and metrics.
    ClientClosed,
    /// 503 `too_many_connections`: `server.max_connections` reached (written on the raw
    /// connection by [`crate::limits`], which then closes it).
    TooManyConnections { limit: u64 },
    /// 502: the upstream could not be reached or answered something unusable.
    UpstreamUnreachable {
        provider: String,
        detail: &'static str,
    },
    /// 502: the upstream refused the gateway's own credential (not the caller's fault).
    UpstreamCredentialRejected { provider: String, status: u16 },
    /// The provider's own error status, when no attempt succeeded and this one tells the
    /// client most (a 429 keeps the provider's `Retry-After`, in seconds).
    UpstreamStatus {
        provider: String,
        status: u16,
        retry_after: Option<u64>,
    },
    /// 503: the provider cannot be used right now (e.g. no credential yet).
    ProviderUnavailable { provider: String, reason: String },
    /// 504: the upstream did not answer in time.
    UpstreamTimeout { provider: String },
    /// 403: the key may not use this model or provider (its scopes).
    Forbidden(String),
    /// 429 `insufficient_quota`: a key's or user's budget for the period is spent.
    QuotaExceeded(String),
    /// 429 `rate_limit_exceeded`: the key's requests or tokens per minute; `Retry-After`
    /// and `x-ratelimit-*` headers go with it.
    RateLimited {
        /// `requests` or `tokens` (OpenAI's `error.type` for rate limits).
        class: &'static str,
        retry_after: u64,
        info: crate::governance::limits::RateInfo,
    },
    /// 400 `previous_response_not_found`: the Responses API's `previous_response_id` names
    /// no response this key stored (or it expired).
    PreviousResponseNotFound(String),
    /// 503: the store of Responses-API answers could not be read or written.
    StoreUnavailable,
    /// 500: a gateway bug; details go to the log, not the client.
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest { .. }
            | Self::BadPath(_)
            | Self::BadFraming(_)
            | Self::PreviousResponseNotFound(_) => 400,
            Self::RequestTimeout => 408,
            Self::HeadersTooLarge { .. } => 431,
            Self::TooManyStreams { .. } | Self::TooManyRequestsInFlight { .. } => 429,
            Self::ClientClosed => 499,
            Self::TooManyConnections { .. } | Self::BodyBudgetExhausted | Self::MediaFetchBusy => {
                503
            }
            Self::Unauthenticated { .. } => 401,
            Self::Forbidden(_) => 403,
            Self::QuotaExceeded(_) | Self::RateLimited { .. } => 429,
            Self::ModelNotFound { .. } | Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::PayloadTooLarge { .. } => 413,
            Self::UpstreamUnreachable { .. } | Self::UpstreamCredentialRejected { .. } => 502,
            Self::ProviderUnavailable { .. } | Self::StoreUnavailable => 503,
            Self::UpstreamStatus { status, .. } => *status,
            Self::UpstreamTimeout { .. } => 504,
            Self::Internal => 500,
        }
    }

    /// OpenAI's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. }
            | Self::BadPath(_)
            | Self::Unauthenticated { .. }
            | Self::ModelNotFound { .. }
            | Self::NotFound(_)
            | Self::MethodNotAllowed { .. }
            | Self::PayloadTooLarge { .. }
            | Self::BadFraming(_)
            | Self::RequestTimeout
            | Self::HeadersTooLarge { .. }
            | Self::PreviousResponseNotFound(_) => "invalid_request_error",
            Self::TooManyStreams { .. } | Self::TooManyRequestsInFlight { .. } => "requests",
            Self::ClientClosed => "client_closed_request",
            Self::TooManyConnections { .. } | Self::BodyBudgetExhausted | Self::MediaFetchBusy => {
                "server_error"
            }
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamCredentialRejected { .. }
            | Self::UpstreamTimeout { .. } => "api_error",
            Self::ProviderUnavailable { .. } | Self::StoreUnavailable | Self::Internal => {
                "server_error"
            }
            Self::Forbidden(_) => "permission_error",
            Self::QuotaExceeded(_) => "insufficient_quota",
            Self::RateLimited { class, .. } => class,
            Self::UpstreamStatus { status, .. } => {
                switchyard_filters::openai::error_type_for_status(*status)
            }
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Unauthenticated { .. } => Some("invalid_api_key"),
            Self::ModelNotFound { .. } => Some("model_not_found"),
            Self::NotFound(_) => Some("not_found"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::BadPath(_) => Some("invalid_path"),
            Self::BadFraming(_) => Some("invalid_framing"),
            Self::RequestTimeout => Some("request_timeout"),
            Self::HeadersTooLarge { .. } => Some("request_header_fields_too_large"),
            Self::TooManyStreams { .. } => Some("too_many_streams"),
            Self::TooManyRequestsInFlight { .. } => Some("too_many_requests_in_flight"),
            Self::ClientClosed => Some("client_closed_request"),
            Self::TooManyConnections { .. } => Some("too_many_connections"),
            Self::BodyBudgetExhausted => Some("request_bodies_over_budget"),
            Self::MediaFetchBusy => Some("media_fetch_busy"),
            Self::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Self::UpstreamUnreachable { .. } => Some("upstream_unreachable"),
            Self::UpstreamCredentialRejected { .. } => Some("upstream_credentials_rejected"),
            Self::ProviderUnavailable { .. } => Some("provider_unavailable"),
            Self::PreviousResponseNotFound(_) => Some("previous_response_not_found"),
            Self::StoreUnavailable => Some("store_unavailable"),
            Self::UpstreamStatus { status: 429, .. } => Some("rate_limit_exceeded"),
            Self::Forbidden(_) => Some("permission_denied"),
            Self::QuotaExceeded(_) => Some("insufficient_quota"),
            Self::RateLimited { .. } => Some("rate_limit_exceeded"),
            Self::UpstreamStatus { .. } => Some("upstream_error"),
            Self::InvalidRequest { .. } | Self::Internal => None,
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound { .. } => Some("model"),
            Self::PreviousResponseNotFound(_) => Some("previous_response_id"),
            _ => None,
        }
    }

    /// A label for `ai_proxy_provider_errors_total{error_type}` when the error is an upstream's.
    pub fn provider_error_type(&self) -> Option<&'static str> {
        match self {
            Self::UpstreamUnreachable { .. } => Some("connection"),
            Self::UpstreamTimeout { .. } => Some("timeout"),
            Self::UpstreamCredentialRejected { .. } => Some("credentials"),
            Self::ProviderUnavailable { .. } => Some("unavailable"),
            Self::UpstreamStatus { status: 429, .. } => Some("rate_limit"),
            Self::UpstreamStatus { status, .. } if *status >= 500 => Some("server_error"),
            Self::UpstreamStatus { .. } => Some("client_error"),
            _ => None,
        }
    }

    /// The JSON body of the error envelope.
    pub fn body(&self) -> Vec<u8> {
        error_body(&self.to_string(), self.kind(), self.param(), self.code())
    }

    /// The error body in the envelope of the front door the client called: OpenAI's, or
    /// Anthropic's on the Messages route.
    pub fn body_for(&self, front: FrontDoor) -> Vec<u8> {
        match front {
            FrontDoor::Messages => messages_errors::error_body(self.status(), &self.to_string()),
            FrontDoor::Chat | FrontDoor::Completions | FrontDoor::Responses => self.body(),
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRequest { message, .. } => f.write_str(message),
            Self::BadPath(why) => write!(f, "Invalid passthrough path: {why}."),
            Self::Unauthenticated { missing: true } => f.write_str(
                "You didn't provide an API key. Send your gateway key in an Authorization: Bearer header (or X-API-Key, api-key, x-goog-api-key).",
            ),
            Self::Unauthenticated { missing: false } => {
                f.write_str("Incorrect API key provided. Check the gateway key you are using.")
            }
            Self::ModelNotFound { model, suggestions } => {
                write!(f, "The model `{model}` does not exist or is not served by this gateway.")?;
                if !suggestions.is_empty() {
                    write!(f, " Did you mean: {}?", suggestions.join(", "))?;
                }
                Ok(())
            }
            Self::NotFound(what) => f.write_str(what),
            Self::PreviousResponseNotFound(id) => {
                write!(f, "Previous response with id '{id}' not found.")
            }
            Self::StoreUnavailable => f.write_str(
                "The gateway's response store is unavailable right now; retry shortly.",
            ),
            Self::MethodNotAllowed { allow } => {
                write!(f, "Method not allowed for this route; use {allow}.")
            }
            Self::PayloadTooLarge { limit } => {
                write!(f, "The request body is larger than this gateway accepts ({limit} bytes).")
            }
            Self::BadFraming(why) => write!(f, "Ambiguous request framing: {why}."),
            Self::RequestTimeout => f.write_str(
                "The request body did not arrive in time; the connection is closed.",
            ),
            Self::HeadersTooLarge { what, limit } => write!(
                f,
                "The request headers are too large: more than {limit} {what}."
            ),
            Self::TooManyStreams { limit } => write!(
                f,
                "This API key already has {limit} streaming requests open, the most this gateway allows at once. Retry when one has finished."
            ),
            Self::TooManyRequestsInFlight { limit } => write!(
                f,
                "This API key already has {limit} requests in flight, the most this gateway allows at once. Retry when one has finished."
            ),
            Self::ClientClosed => {
                f.write_str("The client closed the connection before the answer was complete.")
            }
            Self::TooManyConnections { .. } => f.write_str(
                "The gateway is at its connection limit; retry shortly.",
            ),
            Self::BodyBudgetExhausted => f.write_str(
                "The gateway is holding as many request bytes as it allows; retry shortly.",
            ),
            Self::MediaFetchBusy => f.write_str(
                "The gateway is fetching as many image URLs as it allows at once; retry shortly.",
            ),
            Self::UpstreamUnreachable { provider, detail } => {
                write!(f, "Provider `{provider}` could not be reached: {detail}.")
            }
            Self::UpstreamCredentialRejected { provider, status } => write!(
                f,
                "Provider `{provider}` rejected the gateway's credentials (HTTP {status}); this is a gateway configuration problem, not your key."
            ),
            Self::ProviderUnavailable { provider, reason } => {
                write!(f, "Provider `{provider}` is unavailable: {reason}.")
            }
            Self::UpstreamStatus {
                provider, status, ..
            } => {
                write!(f, "Provider `{provider}` answered HTTP {status}; no other attempt did better.")
            }
            Self::UpstreamTimeout { provider } => {
                write!(f, "Provider `{provider}` did not answer in time.")
            }
            Self::Internal => f.write_str("The gateway hit an internal error."),
            Self::Forbidden(m) | Self::QuotaExceeded(m) => f.write_str(m),
            Self::RateLimited {
                class, retry_after, info,
            } => {
                let limit = match *class {
                    "tokens" => info.tokens.map(|f| f.limit),
                    _ => info.requests.map(|f| f.limit),
                };
                write!(
                    f,
                    "Rate limit reached for this API key: {} {class} per minute. Please try again in {retry_after}s.",
                    limit.unwrap_or(0)
                )
            }
        }
    }
}

impl From<InvalidRequest> for GatewayError {
    fn from(e: InvalidRequest) -> Self {
        Self::InvalidRequest {
            message: e.message,
            param: e.param,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_renders_a_parseable_envelope() {
        let all = [
            GatewayError::InvalidRequest {
                message: "m".into(),
                param: Some("p".into()),
            },
            GatewayError::BadPath("dot segments"),
            GatewayError::Unauthenticated { missing: true },
            GatewayError::ModelNotFound {
                model: "x".into(),
                suggestions: vec!["y".into()],
            },
            GatewayError::NotFound("nope".into()),
            GatewayError::MethodNotAllowed { allow: "POST" },
            GatewayError::PayloadTooLarge { limit: 1 },
            GatewayError::BadFraming("both"),
            GatewayError::RequestTimeout,
            GatewayError::HeadersTooLarge {
                what: "headers",
                limit: 1,
            },
            GatewayError::TooManyStreams { limit: 1 },
            GatewayError::TooManyRequestsInFlight { limit: 1 },
            GatewayError::ClientClosed,
            GatewayError::TooManyConnections { limit: 1 },
            GatewayError::BodyBudgetExhausted,
            GatewayError::MediaFetchBusy,
            GatewayError::UpstreamUnreachable {
                provider: "p".into(),
                detail: "refused",
            },
            GatewayError::UpstreamCredentialRejected {
                provider: "p".into(),
                status: 401,
            },
            GatewayError::ProviderUnavailable {
                provider: "p".into(),
                reason: "r".into(),
            },
            GatewayError::UpstreamTimeout {
                provider: "p".into(),
            },
            GatewayError::UpstreamStatus {
                provider: "p".into(),
                status: 429,
                retry_after: Some(3),
            },
            GatewayError::Internal,
            GatewayError::Forbidden("no".into()),
            GatewayError::QuotaExceeded("spent".into()),
            GatewayError::RateLimited {
                class: "requests",
                retry_after: 3,
                info: Default::default(),
            },
        ];
        for e in all {
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["error"]["type"], e.kind());
            assert!(!v["error"]["message"].as_str().unwrap().is_empty());
            assert!((400..=504).contains(&e.status()));
        }
    }
}
