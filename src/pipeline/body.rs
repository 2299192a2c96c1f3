//! Reads a request body whole, within the size, time and in-flight-bytes bounds.

use super::Gateway;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::{ErrorType, Result};

use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;

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
