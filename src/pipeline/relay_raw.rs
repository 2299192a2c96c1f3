//! Writes a passthrough answer downstream exactly as the provider sent it (status, headers,
//! bytes), observing usage on a side copy.

use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;

use super::forward::*;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::respond;

impl Forwarder<'_> {
    /// Passthrough: relays status, headers and body unchanged, observing usage on the side.
    pub(super) async fn raw(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut up: HttpSession,
        resp: &ResponseHeader,
        peer: &pingora::upstreams::peer::HttpPeer,
    ) -> Result<(), GatewayError> {
        let io = |_| GatewayError::Internal;
        let mut h = ResponseHeader::build(resp.status, Some(resp.headers.len() + 1)).map_err(io)?;
        for (name, value) in resp.headers.iter() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                h.append_header(name.clone(), value.clone()).map_err(io)?;
            }
        }
        h.insert_header("x-switchyard-request-id", ctx.request_id.as_str())
            .map_err(io)?;
        if let Some((name, value)) = crate::telemetry::response_header(ctx) {
            h.insert_header(name, value).map_err(io)?;
        }
        if let Some(cors) = &ctx.cors {
            cors.apply_to_upstream(&mut h).map_err(io)?;
        }
        if let Some(pt) = ctx.passthrough.as_mut() {
            pt.observe_response(resp);
        }
        if h.headers.contains_key("content-length") {
            ctx.status = Some(h.status.as_u16());
            let written = session.write_response_header(Box::new(h), false).await;
            respond::gone_on_error(ctx, written).map_err(io)?;
        } else {
            respond::start_stream(session, ctx, h).await.map_err(io)?;
        }
        loop {
            let read = tokio::select! {
                r = up.read_response_body() => r,
                () = respond::client_gone(session) => {
                    ctx.error = Some(GatewayError::ClientClosed);
                    ctx.log_detail = Some("client went away mid-response".into());
                    up.shutdown().await; // cancels the upstream request; never pooled
                    return Ok(());
                }
            };
            match read {
                Ok(Some(chunk)) => {
                    if let Some(pt) = ctx.passthrough.as_mut() {
                        pt.observe_chunk(&chunk);
                    }
                    ctx.mark_first_byte();
                    if respond::body(session, ctx, chunk, false).await.is_err() {
                        up.shutdown().await;
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Bytes already reached the client: the only honest signal left is to cut
                    // the connection, so the client sees a truncated body rather than a short one.
                    ctx.log_detail = Some(format!("upstream body failed: {}", e.etype().as_str()));
                    ctx.error = Some(failure(
                        &e,
                        &ctx.provider
                            .as_ref()
                            .map(|p| p.name.to_string())
                            .unwrap_or_default(),
                    ));
                    up.shutdown().await;
                    session.downstream_session.shutdown().await;
                    return Ok(());
                }
            }
        }
        let _ = session.write_response_body(None, true).await;
        self.done(up, peer).await;
        Ok(())
    }
}
