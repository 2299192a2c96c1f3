//! Answers the gateway gives without a network call: the mock provider (through the OpenAI
//! dialect when the client speaks Messages) and count_tokens estimates.

use super::attempts::*;
use super::front_door::Typed;
use super::prepare::*;
use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use switchyard_filters::chat::response::render;
use switchyard_filters::chat::ChatRequest;
use switchyard_filters::chat::ResponseCtx;
use switchyard_filters::front::messages::errors as messages_errors;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::parse_request_bytes;
use switchyard_filters::translate::{self, Answer, Dialect, Target};
use switchyard_filters::{mock, Endpoint};

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::responses::{answer_ids, save_final_response};
use crate::pipeline::translation;
use crate::respond;
use crate::route::health::ProviderHealth;
use crate::route::Candidate;

impl Run<'_> {
    pub(super) async fn mock(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        cand: &Candidate<'_>,
        health: &ProviderHealth,
        may_retry: bool,
        best: Option<u8>,
    ) -> Result<Outcome, GatewayError> {
        let front = match self.endpoint {
            Endpoint::Messages => Some(FrontDoor::Messages),
            Endpoint::Responses => Some(FrontDoor::Responses),
            _ => None,
        };
        let (reply, dropped) = if front.is_some() {
            // The mock speaks OpenAI chat: Messages and Responses requests go in through the
            // OpenAI dialect and their answers come back the same way, like any OpenAI-shaped
            // provider's.
            let req = self.chat_request()?;
            let mut up = translate::prepare_chat(&openai_target(cand.upstream_model), req)?;
            // OpenAI caches prompts by itself, so its dialect names no `cache_control`; the
            // mock has no prompt cache: the markers are named.
            if !req.cache.is_empty() && !up.dropped.iter().any(|d| d == "cache_control") {
                up.dropped.push("cache_control".to_owned());
            }
            let parsed = parse_request_bytes(Endpoint::ChatCompletions, Bytes::from(up.body))?;
            (
                mock::respond(&parsed, cand.upstream_model, unix_now()),
                joined(&up.dropped),
            )
        } else {
            (
                mock::respond(self.parsed, cand.upstream_model, unix_now()),
                None,
            )
        };
        if reply.status >= 500 {
            health.record_failure(&self.policy.breaker);
        } else {
            health.record_success(Duration::ZERO);
        }
        let error = GatewayError::UpstreamStatus {
            provider: cand.provider.name.to_string(),
            status: reply.status,
            retry_after: reply.retry_after.map(u64::from),
        };
        let retry = may_retry && self.policy.retry_on.status(reply.status);
        if retry || (reply.status >= 400 && beaten(rank(&error), best)) {
            return Ok(Outcome::Failed(Failure {
                error,
                retry_after: reply.retry_after.map(|s| Duration::from_secs(u64::from(s))),
                provider: cand.provider.clone(),
                tried: true,
            }));
        }
        if let Some(front) = front {
            ctx.dropped_params = dropped;
            send_mock_through(session, ctx, reply, &self.parsed.summary.model, front).await?;
        } else {
            send_mock(session, ctx, reply).await?;
        }
        Ok(Outcome::Answered)
    }

    /// The client's request in neutral form (parsed when the plan was made).
    pub(super) fn chat_request(&self) -> Result<&ChatRequest, GatewayError> {
        match self.typed {
            Typed::Chat(Ok(req)) => Ok(req),
            Typed::Chat(Err(e)) => Err(e.clone().into()),
            _ => Err(GatewayError::Internal),
        }
    }

    /// Whether a count_tokens request can be counted by this candidate's host.
    pub(super) fn counts_natively(&self, cand: &Candidate<'_>) -> bool {
        cand.provider.upstream.is_some()
            && translation::dialect(
                cand.provider.kind,
                self.endpoint,
                cand.upstream_model,
                cand.options,
            )
            .is_some_and(translation::speaks_messages)
    }

    /// Answers count_tokens with the gateway's estimate: about four bytes of text per token
    /// (system, messages, tool definitions), marked `x-switchyard-token-count: estimated`.
    pub(super) async fn estimate_tokens(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let req = self.chat_request()?;
        let mut bytes = 0usize;
        for m in &req.messages {
            bytes += m.text().len();
            for c in &m.tool_calls {
                bytes += c.name.len() + c.arguments.len();
            }
        }
        for t in &req.tools {
            bytes += t.name.len()
                + t.description.as_ref().map_or(0, String::len)
                + t.parameters.to_string().len();
        }
        let tokens = bytes.div_ceil(4).max(1);
        let body = format!("{{\"input_tokens\":{tokens}}}");
        let io = |_| GatewayError::Internal;
        let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
        h.insert_header(TOKEN_COUNT_HEADER, "estimated")
            .map_err(io)?;
        respond::full(session, ctx, h, Bytes::from(body))
            .await
            .map_err(io)
    }
}

/// Sends a mock provider reply (one body, or an SSE stream written event by event).
pub(super) async fn send_mock(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: mock::MockReply,
) -> Result<(), GatewayError> {
    ctx.usage = reply.usage;
    let io = |_| GatewayError::Internal;
    let mut h = respond::header(reply.status, reply.content_type, ctx).map_err(io)?;
    if let Some(secs) = reply.retry_after {
        h.insert_header("retry-after", secs.to_string())
            .map_err(io)?;
    }
    match reply.body {
        mock::MockBody::Stream(events) => {
            respond::start_stream(session, ctx, h).await.map_err(io)?;
            ctx.mark_first_byte();
            for (i, event) in events.enumerate() {
                respond::body(session, ctx, Bytes::from(event), false)
                    .await
                    .map_err(io)?;
                // A fast reader never makes a write wait: let other requests on this worker in.
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            respond::body(session, ctx, Bytes::new(), true)
                .await
                .map_err(io)?;
        }
        mock::MockBody::Full(body) => {
            respond::full(session, ctx, h, Bytes::from(body))
                .await
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Marks a count_tokens answer as the provider's count or the gateway's estimate.
pub(crate) const TOKEN_COUNT_HEADER: &str = "x-switchyard-token-count";

/// The OpenAI dialect aimed at `model` (the mock's way in and out for Messages requests).
pub(super) fn openai_target(model: &str) -> Target<'_> {
    Target {
        dialect: Dialect::OpenAi,
        upstream_model: model,
        project: None,
        location: None,
        api_version: None,
    }
}

/// Sends a mock reply to a Messages or Responses client: the mock's OpenAI answer, stream or
/// error read by the OpenAI dialect and written for `front`.
pub(super) async fn send_mock_through(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: mock::MockReply,
    client_model: &str,
    front: FrontDoor,
) -> Result<(), GatewayError> {
    let io = |_| GatewayError::Internal;
    let target = openai_target(client_model);
    let (fallback_id, echo) = answer_ids(&ctx.request_id, ctx.responses.as_deref());
    let (fallback_id, echo) = (fallback_id.to_owned(), echo.to_owned());
    let rctx = ResponseCtx {
        client_model,
        created: unix_now(),
        fallback_id: &fallback_id,
        front,
        include_usage: true,
        echo: &echo,
    };
    if reply.status >= 400 {
        let body = reply.body.into_bytes();
        let body = if front == FrontDoor::Messages {
            messages_errors::from_openai(reply.status, &body)
        } else {
            body
        };
        let h = respond::header(reply.status, "application/json", ctx).map_err(io)?;
        return respond::full(session, ctx, h, Bytes::from(body))
            .await
            .map_err(io);
    }
    match reply.body {
        mock::MockBody::Full(body) => {
            let answer = Answer {
                body: &body,
                input_tokens_header: None,
            };
            let completion =
                translate::parse_chat(&target, &answer).map_err(|_| GatewayError::Internal)?;
            ctx.usage = completion.usage;
            let out = render(&completion, &rctx);
            if let Some(turn) = ctx.responses.as_deref() {
                turn.save(&out).await;
            }
            let h = respond::header(200, "application/json", ctx).map_err(io)?;
            respond::full(session, ctx, h, Bytes::from(out))
                .await
                .map_err(io)
        }
        mock::MockBody::Stream(events) => {
            let mut saved = false;
            let mut translator = translate::chat_stream(&target, &rctx);
            let h = respond::header(200, "text/event-stream", ctx).map_err(io)?;
            respond::start_stream(session, ctx, h).await.map_err(io)?;
            ctx.mark_first_byte();
            let mut out = Vec::new();
            for (i, event) in events.enumerate() {
                out.clear();
                translator.feed(event.as_ref(), &mut out);
                if !saved {
                    saved = save_final_response(ctx, translator.final_response()).await;
                }
                if !out.is_empty() {
                    respond::body(session, ctx, Bytes::copy_from_slice(&out), false)
                        .await
                        .map_err(io)?;
                }
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            out.clear();
            translator.finish(&mut out);
            ctx.usage = translator.usage();
            if !saved {
                save_final_response(ctx, translator.final_response()).await;
            }
            respond::body(session, ctx, Bytes::from(out), true)
                .await
                .map_err(io)
        }
    }
}
