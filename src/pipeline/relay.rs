//! Writes a provider's answer to a front-door client: OpenAI-shaped answers with the model
//! name restored, and every other answer, stream and error through its translator (the
//! neutral model, or the same-dialect Messages relay), in the envelope of the front door the
//! client called.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use switchyard_filters::chat::embeddings::{
    render as render_embeddings, usage as embeddings_usage,
};
use switchyard_filters::chat::response::render;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::upstream_error_body;
use switchyard_filters::openai_upstream::{translate_response, StreamFilter};
use switchyard_filters::translate::{
    self, Answer, ErrorHints, StreamEnd, StreamTranslator, Target,
};

use super::forward::*;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::responses::{answer_ids, save_final_response};
use crate::pipeline::translation::{speaks_messages, Shape, Translation};
use crate::respond;
use switchyard_filters::front::messages::errors as messages_errors;
use switchyard_filters::providers::messages_native;

impl Forwarder<'_> {
    /// Sends the opened response to the client, translated as `call.mode` says. An `Err`
    /// means nothing has been sent downstream yet; once the response has started, failures
    /// end it (an SSE error event for streams) and `Ok` is returned.
    pub async fn relay(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        call: &UpstreamCall<'_>,
        opened: Opened,
    ) -> Result<(), GatewayError> {
        let provider = &*call.provider.name;
        let Opened {
            mut up, resp, peer, ..
        } = opened;
        let status = resp.status.as_u16();
        // A redirect is never followed (the gateway only talks to the configured endpoint)
        // and means nothing to an OpenAI client: a 502, not a bare 3xx without its Location.
        if (300..400).contains(&status) && !matches!(call.mode, Mode::Raw) {
            let _ = self.read_all(&mut up, ERROR_BODY_LIMIT as u64).await;
            up.shutdown().await;
            ctx.log_detail = Some(format!("upstream answered HTTP {status} (redirect)"));
            return Err(GatewayError::UpstreamUnreachable {
                provider: provider.to_owned(),
                detail: "it answered with a redirect, which the gateway does not follow",
            });
        }
        let (stream, client_model) = match &call.mode {
            Mode::OpenAi {
                stream,
                client_model,
                ..
            } => (*stream, *client_model),
            Mode::OpenAiResponses {
                stream,
                client_model,
            } => (*stream, *client_model),
            Mode::Translated {
                client_model,
                translation,
                dropped,
            } => {
                ctx.dropped_params = dropped.clone();
                // Boxed: the OpenAI-shaped relay below does not carry the translated one.
                return Box::pin(self.translated(
                    session,
                    ctx,
                    call,
                    client_model,
                    translation,
                    up,
                    resp,
                    peer,
                ))
                .await;
            }
            Mode::Raw => return self.raw(session, ctx, up, &resp, &peer).await,
        };
        if status >= 400 {
            let body = self
                .read_all(&mut up, ERROR_BODY_LIMIT as u64)
                .await
                .unwrap_or_default();
            self.done(up, &peer).await;
            if status == 401 {
                return Err(GatewayError::UpstreamCredentialRejected {
                    provider: provider.to_owned(),
                    status,
                });
            }
            ctx.log_detail = Some(format!("upstream answered HTTP {status}"));
            let mut h = respond::header(status, "application/json", ctx)
                .map_err(|_| GatewayError::Internal)?;
            copy_headers(&resp, &mut h);
            let body = upstream_error_body(status, &body, provider);
            return respond::full(session, ctx, h, Bytes::from(body))
                .await
                .map_err(|_| GatewayError::Internal);
        }

        let is_sse = resp
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if let Mode::OpenAiResponses { .. } = call.mode {
            return self
                .responses_native(
                    session,
                    ctx,
                    provider,
                    client_model,
                    stream && is_sse,
                    up,
                    &resp,
                    &peer,
                )
                .await;
        }
        if stream && is_sse {
            return self.stream(session, ctx, call, up, &resp, &peer).await;
        }

        let body = match self.read_all(&mut up, self.max_response_bytes).await {
            Ok(b) => b,
            Err(e) => {
                up.shutdown().await;
                return Err(e.map_or(
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the response was larger than server.max_upstream_response_bytes",
                    },
                    |e| failure(&e, provider),
                ));
            }
        };
        self.done(up, &peer).await;
        let Some((rewritten, usage)) = translate_response(&body, client_model) else {
            ctx.log_detail = Some("unreadable answer: not JSON".into());
            return Err(GatewayError::UpstreamUnreachable {
                provider: provider.to_owned(),
                detail: "the provider's answer could not be read",
            });
        };
        ctx.usage = usage;
        crate::telemetry::note_openai_answer(ctx, &body);
        let mut h =
            respond::header(status, "application/json", ctx).map_err(|_| GatewayError::Internal)?;
        copy_headers(&resp, &mut h);
        let out = rewritten
            .map(Bytes::from)
            .unwrap_or_else(|| Bytes::from(body));
        respond::full(session, ctx, h, out)
            .await
            .map_err(|_| GatewayError::Internal)
    }

    pub(super) async fn stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        call: &UpstreamCall<'_>,
        mut up: HttpSession,
        resp: &ResponseHeader,
        peer: &pingora::upstreams::peer::HttpPeer,
    ) -> Result<(), GatewayError> {
        let provider = &*call.provider.name;
        let Mode::OpenAi {
            upstream_model,
            client_model,
            client_wants_usage,
            azure,
            ..
        } = call.mode
        else {
            return Err(GatewayError::Internal);
        };
        let mut filter = if azure {
            StreamFilter::azure(client_model, client_wants_usage)
        } else {
            StreamFilter::new(upstream_model, client_model, client_wants_usage)
        };
        filter.answer().record = crate::telemetry::sampled(ctx);
        let mut h =
            respond::header(200, "text/event-stream", ctx).map_err(|_| GatewayError::Internal)?;
        copy_headers(resp, &mut h);
        respond::start_stream(session, ctx, h)
            .await
            .map_err(|_| GatewayError::Internal)?;
        let mut out = Vec::new();
        let mut progress = Progress::new(self);
        loop {
            let chunk = match progress.next(&mut up, session, ctx, provider).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(()) => {
                    ctx.usage = filter.usage();
                    crate::telemetry::note_stream_answer(ctx, Some(filter.answer()));
                    return Ok(());
                }
            };
            out.clear();
            let seen = filter.events();
            let chunk_len = chunk.len();
            let send = if filter.feed(&chunk, &mut out) {
                chunk
            } else {
                Bytes::copy_from_slice(&out)
            };
            if !send.is_empty() {
                ctx.mark_first_byte();
            }
            if !send.is_empty() && respond::body(session, ctx, send, false).await.is_err() {
                ctx.usage = filter.usage();
                crate::telemetry::note_stream_answer(ctx, Some(filter.answer()));
                up.shutdown().await;
                return Ok(());
            }
            if progress
                .fed(
                    chunk_len,
                    filter.events() != seen,
                    &mut up,
                    session,
                    ctx,
                    provider,
                )
                .await
                .is_err()
            {
                ctx.usage = filter.usage();
                crate::telemetry::note_stream_answer(ctx, Some(filter.answer()));
                return Ok(());
            }
        }
        out.clear();
        filter.finish(&mut out);
        ctx.usage = filter.usage();
        crate::telemetry::note_stream_answer(ctx, Some(filter.answer()));
        if !out.is_empty() {
            respond::tail(session, ctx, Some(Bytes::copy_from_slice(&out)), false).await;
        }
        if !filter.saw_done() {
            let e = GatewayError::UpstreamUnreachable {
                provider: provider.to_owned(),
                detail: "the stream ended before it was complete",
            };
            ctx.log_detail = Some("upstream stream ended without [DONE]".into());
            ctx.error = Some(e.clone());
            up.shutdown().await;
            end_with_error(session, ctx, &e).await;
            return Ok(());
        }
        respond::tail(session, ctx, None, true).await;
        self.done(up, peer).await;
        Ok(())
    }

    /// Relays a translated provider's answer: errors mapped to OpenAI errors, complete answers
    /// rendered as OpenAI bodies, streams translated chunk by chunk.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn translated(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        call: &UpstreamCall<'_>,
        client_model: &str,
        tr: &Translation,
        mut up: HttpSession,
        resp: ResponseHeader,
        peer: Box<HttpPeer>,
    ) -> Result<(), GatewayError> {
        let provider = &*call.provider.name;
        let status = resp.status.as_u16();
        let target = tr.target();
        if status >= 400 {
            let body = self
                .read_all(&mut up, ERROR_BODY_LIMIT as u64)
                .await
                .unwrap_or_default();
            self.done(up, &peer).await;
            return self
                .translated_error(session, ctx, provider, &target, &resp, &body)
                .await;
        }
        let created = unix_now();
        let (fallback_id, echo) = answer_ids(&ctx.request_id, ctx.responses.as_deref());
        let rctx = tr.response_ctx(client_model, fallback_id, echo, created);
        let io = |_| GatewayError::Internal;
        match tr.shape {
            Shape::Chat { stream: true, .. } | Shape::Native { stream: true } => {
                let translator = if let Shape::Native { .. } = tr.shape {
                    messages_native::stream(&target, client_model)
                } else {
                    translate::chat_stream(&target, &rctx)
                };
                self.relay_stream(session, ctx, provider, up, &resp, &peer, translator)
                    .await
            }
            Shape::Native { .. } => {
                let body = self.read_answer(&mut up, provider).await?;
                self.done(up, &peer).await;
                let (out, usage) = messages_native::answer(&body, client_model).map_err(|e| {
                    ctx.log_detail = Some(format!("unreadable answer: {}", e.0));
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the provider's answer could not be read",
                    }
                })?;
                ctx.usage = usage;
                let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
                copy_headers(&resp, &mut h);
                respond::full(session, ctx, h, Bytes::from(out))
                    .await
                    .map_err(io)
            }
            Shape::CountTokens => {
                let body = self.read_answer(&mut up, provider).await?;
                self.done(up, &peer).await;
                let tokens = messages_native::parse_count_tokens(&target, &body).map_err(|e| {
                    ctx.log_detail = Some(format!("unreadable token count: {}", e.0));
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the provider's answer could not be read",
                    }
                })?;
                let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
                copy_headers(&resp, &mut h);
                h.insert_header(
                    crate::pipeline::local_answers::TOKEN_COUNT_HEADER,
                    "provider",
                )
                .map_err(io)?;
                let out = format!("{{\"input_tokens\":{tokens}}}");
                respond::full(session, ctx, h, Bytes::from(out))
                    .await
                    .map_err(io)
            }
            Shape::Chat { .. } => {
                let body = self.read_answer(&mut up, provider).await?;
                self.done(up, &peer).await;
                let answer = Answer {
                    body: &body,
                    input_tokens_header: None,
                };
                let completion = translate::parse_chat(&target, &answer).map_err(|e| {
                    ctx.log_detail = Some(format!("unreadable answer: {}", e.0));
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the provider's answer could not be read",
                    }
                })?;
                ctx.usage = completion.usage;
                let out = render(&completion, &rctx);
                crate::telemetry::note_completion(ctx, &completion);
                if let Some(turn) = ctx.responses.as_deref() {
                    turn.save(&out).await;
                }
                let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
                copy_headers(&resp, &mut h);
                respond::full(session, ctx, h, Bytes::from(out))
                    .await
                    .map_err(io)
            }
            Shape::Embeddings { format } => {
                let first = self.read_answer(&mut up, provider).await?;
                self.done(up, &peer).await;
                let mut bodies = vec![(first, input_tokens(&resp))];
                // Providers that embed one text per call: the remaining texts, in order.
                for body in &tr.more_bodies {
                    let mut request = call.request.clone();
                    request
                        .insert_header("content-length", body.len().to_string())
                        .map_err(io)?;
                    let next = UpstreamCall {
                        provider: call.provider,
                        upstream: call.upstream,
                        request,
                        body: body.clone(),
                        mode: Mode::Raw,
                    };
                    let Opened {
                        mut up, resp, peer, ..
                    } = self.open(&next).await?;
                    if resp.status.as_u16() >= 400 {
                        let body = self
                            .read_all(&mut up, ERROR_BODY_LIMIT as u64)
                            .await
                            .unwrap_or_default();
                        self.done(up, &peer).await;
                        return self
                            .translated_error(session, ctx, provider, &target, &resp, &body)
                            .await;
                    }
                    let b = self.read_answer(&mut up, provider).await?;
                    self.done(up, &peer).await;
                    bodies.push((b, input_tokens(&resp)));
                }
                let answers: Vec<Answer<'_>> = bodies
                    .iter()
                    .map(|(b, n)| Answer {
                        body: b,
                        input_tokens_header: *n,
                    })
                    .collect();
                let embeddings = translate::parse_embeddings(&target, &answers).map_err(|e| {
                    ctx.log_detail = Some(format!("unreadable answer: {}", e.0));
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the provider's answer could not be read",
                    }
                })?;
                ctx.usage = Some(embeddings_usage(&embeddings));
                let out = render_embeddings(&embeddings, client_model, format);
                let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
                copy_headers(&resp, &mut h);
                respond::full(session, ctx, h, Bytes::from(out))
                    .await
                    .map_err(io)
            }
        }
    }

    /// Relays a provider's stream through `translator` to the client, chunk by chunk, until
    /// the provider's body ends or the translator has ended the client's stream itself (an
    /// unreadable event, a provider error event: the rest of the provider's bytes are moot).
    /// A Responses stream's final `response` object is stored before it is sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relay_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
        mut up: HttpSession,
        resp: &ResponseHeader,
        peer: &HttpPeer,
        mut translator: Box<dyn StreamTranslator>,
    ) -> Result<(), GatewayError> {
        let io = |_| GatewayError::Internal;
        let mut saves = ctx.responses.as_ref().is_some_and(|t| t.saves());
        let mut h = respond::header(200, "text/event-stream", ctx).map_err(io)?;
        copy_headers(resp, &mut h);
        respond::start_stream(session, ctx, h).await.map_err(io)?;
        if let Some(a) = translator.answer() {
            a.record = crate::telemetry::sampled(ctx);
        }
        let mut out = Vec::with_capacity(4096);
        let mut progress = Progress::new(self);
        while !translator.ended() {
            let chunk = match progress.next(&mut up, session, ctx, provider).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(()) => {
                    ctx.usage = translator.usage();
                    crate::telemetry::note_stream_answer(ctx, translator.answer());
                    return Ok(());
                }
            };
            out.clear();
            translator.feed(&chunk, &mut out);
            if progress
                .fed(
                    chunk.len(),
                    !out.is_empty(),
                    &mut up,
                    session,
                    ctx,
                    provider,
                )
                .await
                .is_err()
            {
                ctx.usage = translator.usage();
                crate::telemetry::note_stream_answer(ctx, translator.answer());
                return Ok(());
            }
            if out.is_empty() {
                continue;
            }
            ctx.mark_first_byte();
            if saves {
                saves = !save_final_response(ctx, translator.final_response()).await;
            }
            let send = Bytes::copy_from_slice(&out);
            if respond::body(session, ctx, send, false).await.is_err() {
                ctx.usage = translator.usage();
                crate::telemetry::note_stream_answer(ctx, translator.answer());
                up.shutdown().await;
                return Ok(());
            }
        }
        out.clear();
        let end = translator.finish(&mut out);
        let complete = matches!(end, StreamEnd::Complete);
        ctx.usage = translator.usage();
        crate::telemetry::note_stream_answer(ctx, translator.answer());
        if saves {
            save_final_response(ctx, translator.final_response()).await;
        }
        if !out.is_empty() {
            ctx.mark_first_byte();
            respond::tail(session, ctx, Some(Bytes::copy_from_slice(&out)), false).await;
        }
        match end {
            StreamEnd::Complete => {}
            StreamEnd::ProviderError(msg) => {
                ctx.log_detail = Some(format!("provider error mid-stream: {msg}"));
                ctx.error = Some(GatewayError::UpstreamStatus {
                    provider: provider.to_owned(),
                    status: 502,
                    retry_after: None,
                });
            }
            StreamEnd::Truncated => {
                ctx.log_detail = Some("upstream stream ended before it was complete".into());
                ctx.error = Some(GatewayError::UpstreamUnreachable {
                    provider: provider.to_owned(),
                    detail: "the stream ended before it was complete",
                });
            }
        }
        respond::tail(session, ctx, None, true).await;
        if complete && !up.response_done() {
            // The translator saw the answer end before the provider's body did (its last
            // chunk may still be in flight): read that briefly, so the connection can be
            // reused.
            drain(&mut up, self.timeouts.idle.min(DRAIN_WAIT)).await;
        }
        self.done(up, peer).await;
        Ok(())
    }

    /// A provider error status, as the client's OpenAI error.
    pub(super) async fn translated_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
        target: &Target<'_>,
        resp: &ResponseHeader,
        body: &[u8],
    ) -> Result<(), GatewayError> {
        let status = resp.status.as_u16();
        if status == 401 {
            return Err(GatewayError::UpstreamCredentialRejected {
                provider: provider.to_owned(),
                status,
            });
        }
        let hints = ErrorHints {
            aws_error_type: resp
                .headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok()),
        };
        let mut reply = translate::translate_error(target, status, body, &hints);
        if ctx.route.front() == FrontDoor::Messages {
            // A Claude host's own Anthropic error goes to a Messages client as it is; any
            // other provider's error (already mapped to a status and message) is re-wrapped.
            reply.body =
                match messages_native::error(body).filter(|_| speaks_messages(target.dialect)) {
                    Some(native) => {
                        reply.status = status;
                        native
                    }
                    None => messages_errors::from_openai(reply.status, &reply.body),
                };
        }
        ctx.log_detail = Some(format!("upstream answered HTTP {status}"));
        let mut h = respond::header(reply.status, "application/json", ctx)
            .map_err(|_| GatewayError::Internal)?;
        copy_headers(resp, &mut h);
        respond::full(session, ctx, h, Bytes::from(reply.body))
            .await
            .map_err(|_| GatewayError::Internal)
    }

    /// Reads a complete (non-stream) answer within `max_upstream_response_bytes`.
    pub(super) async fn read_answer(
        &self,
        up: &mut HttpSession,
        provider: &str,
    ) -> Result<Vec<u8>, GatewayError> {
        match self.read_all(up, self.max_response_bytes).await {
            Ok(b) => Ok(b),
            Err(e) => {
                up.shutdown().await;
                Err(e.map_or(
                    GatewayError::UpstreamUnreachable {
                        provider: provider.to_owned(),
                        detail: "the response was larger than server.max_upstream_response_bytes",
                    },
                    |e| failure(&e, provider),
                ))
            }
        }
    }
}
