//! Writing responses the gateway produces itself (errors, local endpoints, the mock
//! provider, translated upstream answers) to the downstream session.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::Version;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::OrErr;
use switchyard_filters::front::FrontDoor;

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;

/// Security headers on every response the gateway generates itself.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    ),
];
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
const MODEL: HeaderName = HeaderName::from_static("x-switchyard-model");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-switchyard-dropped-params");
const CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");

/// A response header with the gateway's standard headers.
///
/// Built as plain `http` parts, without Pingora's case map: every name here is lowercase
/// already, so the map would only repeat it, and this way the headers go straight into the
/// `http` map under prebuilt names (no parsing, no copies: this runs for every answer). On
/// HTTP/1 Pingora writes the common standard names title-cased (`Content-Type`) and the rest
/// lowercase; header names are case-insensitive.
pub fn header(
    status: u16,
    content_type: &'static str,
    ctx: &RequestCtx,
) -> pingora::Result<ResponseHeader> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::from_u16(status)
        .or_err(pingora::ErrorType::InvalidHTTPHeader, "invalid status")?;
    let map = &mut parts.headers;
    map.reserve(16);
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        if ctx.route.front() == FrontDoor::Messages {
            // Anthropic's SDKs read the request id from `request-id`.
            map.insert(REQUEST_ID, id.clone());
        }
        map.insert(X_REQUEST_ID, id);
    }
    for (k, v) in SECURITY_HEADERS {
        map.insert(k, v);
    }
    if ctx.attempts > 0 {
        if let Some(v) = ctx.provider.as_ref().and_then(|p| value(&p.name)) {
            map.insert(PROVIDER, v);
        }
        if let Some(v) = ctx.upstream_model.as_deref().and_then(value) {
            map.insert(MODEL, v);
        }
        map.insert(ATTEMPTS, HeaderValue::from(ctx.attempts));
    }
    if let Some(rate) = &ctx.rate {
        rate.append_to(map);
    }
    if let Some(v) = ctx.dropped_params.as_deref().and_then(value) {
        map.insert(DROPPED_PARAMS, v);
    }
    if let Some(c) = &ctx.cache {
        map.insert(CACHE, HeaderValue::from_static(c.result.as_str()));
    }
    if let Some(cors) = &ctx.cors {
        cors.apply_to_map(map);
    }
    if let Some((name, value)) = crate::telemetry::response_header(ctx) {
        map.insert(name, value);
    }
    Ok(ResponseHeader::from(parts))
}

/// A header value from text that is ours or already checked (names, model ids); anything
/// that would not be a valid value is left out rather than failing the answer.
fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Sends a complete response with a known body. A failed write means the client has gone:
/// `ctx` records it ([`GatewayError::ClientClosed`], 499).
pub async fn full(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut h: ResponseHeader,
    body: Bytes,
) -> pingora::Result<()> {
    h.set_content_length(body.len())?;
    ctx.status = Some(h.status.as_u16());
    if ctx.cache.is_some() {
        crate::pipeline::cache::record_head(ctx, &h);
        crate::pipeline::cache::record(ctx, &body, true);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    let written = async {
        session
            .write_response_header(Box::new(h), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
    .await;
    gone_on_error(ctx, written)
}

/// Writes a piece of a started response body (empty with `end`: just the end); a failed write
/// records the client as gone.
pub async fn body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    data: Bytes,
    end: bool,
) -> pingora::Result<()> {
    crate::pipeline::cache::record(ctx, &data, end);
    let written = session.write_response_body(Some(data), end).await;
    let written = gone_on_error(ctx, written);
    if written.is_err() && crate::pipeline::cache::serving_followers(ctx) {
        // Requests that coalesced onto this one still read the answer: keep relaying it.
        return Ok(());
    }
    written
}

/// Writes the last pieces of a started response whose outcome is already settled (a failed
/// write is not recorded: the answer is complete as far as the gateway is concerned).
pub async fn tail(session: &mut Session, ctx: &mut RequestCtx, data: Option<Bytes>, end: bool) {
    crate::pipeline::cache::record(ctx, data.as_ref().unwrap_or(&Bytes::new()), end);
    let _ = session.write_response_body(data, end).await;
}

/// Records a failed downstream write as the client having gone (logged as 499, not as the
/// gateway's error).
pub(crate) fn gone_on_error(
    ctx: &mut RequestCtx,
    written: pingora::Result<()>,
) -> pingora::Result<()> {
    if let Err(e) = &written {
        ctx.error = Some(GatewayError::ClientClosed);
        ctx.log_detail = Some(format!("client went away: {}", e.etype().as_str()));
    }
    written
}

/// Resolves when the client has gone (closed its connection, reset its HTTP/2 stream, or
/// sent bytes where none may come); pending while it is still there. Only for a request whose
/// body has been read: raced against upstream reads so an abandoned request is cancelled at
/// once, not at the next write.
pub async fn client_gone(session: &mut Session) {
    if session
        .downstream_session
        .read_body_or_idle(true)
        .await
        .is_ok()
    {
        std::future::pending::<()>().await;
    }
}

/// Sends JSON with the given status.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Vec<u8>,
) -> pingora::Result<()> {
    let h = header(status, "application/json", ctx)?;
    full(session, ctx, h, Bytes::from(body)).await
}

/// Sends an error in the envelope of the front door the client called.
pub async fn error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    e: &GatewayError,
) -> pingora::Result<()> {
    let mut h = header(e.status(), "application/json", ctx)?;
    if let GatewayError::MethodNotAllowed { allow } = e {
        h.insert_header("allow", *allow)?;
    }
    if e.status() == 401 {
        h.insert_header("www-authenticate", "Bearer")?;
    }
    if let GatewayError::UpstreamStatus {
        retry_after: Some(secs),
        ..
    } = e
    {
        h.insert_header("retry-after", secs.to_string())?;
    }
    if matches!(
        e,
        GatewayError::TooManyStreams { .. }
            | GatewayError::TooManyRequestsInFlight { .. }
            | GatewayError::BodyBudgetExhausted
            | GatewayError::MediaFetchBusy
    ) {
        // A slot frees when one of the key's requests ends: worth retrying soon. SDKs (OpenAI,
        // Agents) back off by this header rather than by their short exponential default.
        h.insert_header("retry-after", "1")?;
    }
    if let GatewayError::RateLimited {
        retry_after, info, ..
    } = e
    {
        h.insert_header("retry-after", retry_after.to_string())?;
        if ctx.rate.is_none() {
            for (k, v) in info.headers() {
                h.insert_header(k, v)?;
            }
        }
    }
    ctx.error = Some(e.clone());
    let body = e.body_for(ctx.route.front());
    full(session, ctx, h, Bytes::from(body)).await
}

/// Answers a CORS preflight (`server.cors`, checked before authentication): 204 with the
/// CORS headers, or 403 without them when the origin, method or a header is not allowed.
pub async fn preflight(session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
    ctx.route = crate::ctx::RouteKind::Preflight;
    let Some(cors) = ctx.cors.as_mut() else {
        return Ok(());
    };
    match cors.preflight(&session.req_header().headers) {
        Ok(headers) => {
            let mut h = header(204, "application/json", ctx)?;
            h.remove_header(&header::CONTENT_TYPE);
            h.remove_header(&header::ACCESS_CONTROL_EXPOSE_HEADERS); // for real answers only
            for (k, v) in headers {
                h.insert_header(k, v)?;
            }
            h.insert_header(header::VARY, crate::cors::CorsDecision::preflight_vary())?;
            ctx.status = Some(204);
            session.write_response_header(Box::new(h), true).await
        }
        Err(refusal) => {
            cors.refuse();
            error(session, ctx, &GatewayError::Forbidden(refusal.message())).await
        }
    }
}

/// Starts a streamed (SSE) response; body chunks follow with `write_response_body`.
pub async fn start_stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut h: ResponseHeader,
) -> pingora::Result<()> {
    if session.req_header().version == Version::HTTP_11 {
        h.insert_header("transfer-encoding", "chunked")?;
    }
    h.insert_header("x-accel-buffering", "no")?;
    ctx.status = Some(h.status.as_u16());
    crate::pipeline::cache::record_head(ctx, &h);
    let written = session.write_response_header(Box::new(h), false).await;
    gone_on_error(ctx, written)
}
