//! Writing responses the gateway produces itself (errors, local endpoints, the mock
//! provider, translated upstream answers) to the downstream session.

use bytes::Bytes;
use http::Version;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;

/// Security headers on every response the gateway generates itself.
const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
];

/// A response header with the gateway's standard headers.
pub fn header(
    status: u16,
    content_type: &str,
    ctx: &RequestCtx,
) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(status, Some(16))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (k, v) in SECURITY_HEADERS {
        h.insert_header(k, v)?;
    }
    if ctx.attempts > 0 {
        if let Some(p) = &ctx.provider {
            h.insert_header("x-switchyard-provider", &*p.name)?;
        }
        if let Some(m) = &ctx.upstream_model {
            h.insert_header("x-switchyard-model", m.as_str())?;
        }
        h.insert_header("x-switchyard-attempts", ctx.attempts.to_string())?;
    }
    if let Some(rate) = &ctx.rate {
        for (k, v) in rate.headers() {
            h.insert_header(k, v)?;
        }
    }
    if let Some(d) = &ctx.dropped_params {
        h.insert_header("x-switchyard-dropped-params", d.as_str())?;
    }
    Ok(h)
}

/// Sends a complete response with a known body.
pub async fn full(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut h: ResponseHeader,
    body: Bytes,
) -> pingora::Result<()> {
    h.insert_header("content-length", body.len().to_string())?;
    ctx.status = Some(h.status.as_u16());
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
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

/// Sends an error in the OpenAI envelope.
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
    full(session, ctx, h, Bytes::from(e.body())).await
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
    session.write_response_header(Box::new(h), false).await
}
