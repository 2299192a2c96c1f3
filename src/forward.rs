//! Calls an upstream for a request whose body the gateway has already read and prepared
//! (the unified API), and writes the translated answer downstream.
//!
//! Why not Pingora's proxy loop for these: once `request_filter` has consumed the body (it
//! must, to route by model), Pingora 0.9 replays it upstream only from its 64 KiB retry
//! buffer (cloudflare/pingora#575, #780), so larger prompts would hang. Here the exchange runs
//! on Pingora's own connector and pools, with the prepared body sent in one write, which also
//! lets later work (fallback, retries, hedging) drive several attempts per request.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::time::{Duration, Instant};
use switchyard_filters::chat::embeddings::{
    render as render_embeddings, usage as embeddings_usage,
};
use switchyard_filters::chat::response::render;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::upstream_error_body;
use switchyard_filters::openai_upstream::{translate_response, StreamFilter};
use switchyard_filters::translate::{self, Answer, ErrorHints, StreamEnd, Target};

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{Provider, Upstream};
use crate::respond;
use crate::translation::{speaks_messages, Shape, Translation};
use switchyard_filters::front::messages::errors as messages_errors;
use switchyard_filters::providers::messages_native;

/// Largest upstream error body read (the rest is dropped).
const ERROR_BODY_LIMIT: usize = 256 * 1024;

/// Upstream response headers worth passing to the client.
fn forwardable(name: &str) -> bool {
    name.starts_with("x-ratelimit-")
        || name.starts_with("openai-")
        || name == "retry-after"
        || name == "retry-after-ms"
}

/// How the upstream's answer is turned into the client's.
pub enum Mode<'a> {
    /// Unified API on an OpenAI-shaped upstream: model name restored, usage chunk handled.
    OpenAi {
        stream: bool,
        client_model: &'a str,
        upstream_model: &'a str,
        client_wants_usage: bool,
        /// Azure OpenAI: answers name the underlying model (not the deployment), and streams
        /// open with a content-filter chunk that has no choices.
        azure: bool,
    },
    /// Unified API on a provider with its own API: answers, streams and errors translated.
    Translated {
        client_model: &'a str,
        translation: Box<Translation>,
        /// Parameters the provider cannot honour, for `x-switchyard-dropped-params`.
        dropped: Option<String>,
    },
    /// Native passthrough: status, headers and bytes unchanged; usage observed on the side.
    Raw,
}

/// One prepared upstream call.
pub struct UpstreamCall<'a> {
    pub provider: &'a Provider,
    pub upstream: &'a Upstream,
    /// The request with its final method, path and headers, before credentials are applied.
    pub request: RequestHeader,
    pub body: Bytes,
    pub mode: Mode<'a>,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never cross the gateway.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Forwarder<'g> {
    pub connector: &'g Connector,
    pub timeouts: PeerTimeouts,
    /// Largest non-stream answer read; in a stream, the most bytes accepted without a
    /// complete event.
    pub max_response_bytes: u64,
    /// When a complete non-stream answer (or error body) must have arrived: the request's
    /// total deadline (`routing.timeout_seconds`), so a slow trickle cannot hold it forever.
    pub deadline: Option<Instant>,
}

/// An upstream response whose headers have arrived and whose body has not been read yet.
pub struct Opened {
    up: HttpSession,
    pub resp: ResponseHeader,
    peer: Box<HttpPeer>,
    /// Time from sending the request to the response headers.
    pub time_to_headers: Duration,
}

impl Opened {
    pub fn status(&self) -> u16 {
        self.resp.status.as_u16()
    }

    /// The provider's `retry-after` (seconds) or `retry-after-ms`.
    pub fn retry_after(&self) -> Option<Duration> {
        let h = &self.resp.headers;
        if let Some(ms) = h
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            return Some(Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 3600.0)));
        }
        let secs = h
            .get("retry-after")
            .and_then(|v| v.to_str().ok())?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)))
    }
}

impl Forwarder<'_> {
    /// Runs the call: [`Self::open`] then [`Self::relay`].
    pub async fn call(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        call: UpstreamCall<'_>,
    ) -> Result<(), GatewayError> {
        let opened = self.open(&call).await?;
        self.relay(session, ctx, &call, opened).await
    }

    /// Sends the request and waits for the response headers. Nothing reaches the client.
    pub async fn open(&self, call: &UpstreamCall<'_>) -> Result<Opened, GatewayError> {
        let provider = &*call.provider.name;
        let endpoint = &call.upstream.endpoint;
        let peer =
            endpoint
                .peer(self.timeouts)
                .ok_or_else(|| GatewayError::ProviderUnavailable {
                    provider: provider.to_owned(),
                    reason: format!("the address of {} is not resolved yet", endpoint.host),
                })?;
        let mut request = call.request.clone();
        call.upstream
            .credential
            .apply(provider, &mut request, &call.body)
            .await?;
        let started = Instant::now();

        // A pooled connection may have been closed by the provider meanwhile: retry once on a
        // fresh one when a reused connection fails before any response arrives.
        for attempt in 0..2 {
            let (mut up, reused) = self
                .connector
                .get_http_session(&*peer)
                .await
                .map_err(|e| failure(&e, provider))?;
            up.set_read_timeout(Some(self.timeouts.read));
            up.set_write_timeout(Some(self.timeouts.read));
            match send(&mut up, request.clone(), call.body.clone()).await {
                Ok(()) => {
                    let resp = up
                        .response_header()
                        .cloned()
                        .ok_or(GatewayError::Internal)?;
                    up.set_read_timeout(Some(self.timeouts.idle));
                    return Ok(Opened {
                        up,
                        resp,
                        peer,
                        time_to_headers: started.elapsed(),
                    });
                }
                Err(e) => {
                    let stale = reused
                        && attempt == 0
                        && matches!(
                            e.etype(),
                            ErrorType::ConnectionClosed
                                | ErrorType::ReadError
                                | ErrorType::WriteError
                        );
                    up.shutdown().await;
                    if !stale {
                        return Err(failure(&e, provider));
                    }
                }
            }
        }
        Err(GatewayError::UpstreamUnreachable {
            provider: provider.to_owned(),
            detail: "the connection was closed",
        })
    }

    /// Drops a response the gateway will not use (e.g. a 503 before a retry), keeping the
    /// connection when its small body can be read quickly.
    pub async fn discard(&self, opened: Opened) {
        let Opened { mut up, peer, .. } = opened;
        match self.read_all(&mut up, ERROR_BODY_LIMIT as u64).await {
            Ok(_) => self.done(up, &peer).await,
            Err(_) => up.shutdown().await,
        }
    }

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
            Mode::Translated {
                client_model,
                translation,
                dropped,
            } => {
                ctx.dropped_params = dropped.clone();
                return self
                    .translated(
                        session,
                        ctx,
                        call,
                        client_model,
                        translation,
                        up,
                        resp,
                        peer,
                    )
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

    async fn stream(
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
                return Ok(());
            }
        }
        out.clear();
        filter.finish(&mut out);
        ctx.usage = filter.usage();
        if !out.is_empty() {
            let _ = session
                .write_response_body(Some(Bytes::copy_from_slice(&out)), false)
                .await;
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
        let _ = session.write_response_body(None, true).await;
        self.done(up, peer).await;
        Ok(())
    }

    /// Relays a translated provider's answer: errors mapped to OpenAI errors, complete answers
    /// rendered as OpenAI bodies, streams translated chunk by chunk.
    #[allow(clippy::too_many_arguments)]
    async fn translated(
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
        let rctx = tr.response_ctx(client_model, &ctx.request_id, created);
        let io = |_| GatewayError::Internal;
        match tr.shape {
            Shape::Chat { stream: true, .. } | Shape::Native { stream: true } => {
                let mut translator = if let Shape::Native { .. } = tr.shape {
                    messages_native::stream(&target, client_model)
                } else {
                    translate::chat_stream(&target, &rctx)
                };
                let mut h = respond::header(200, "text/event-stream", ctx).map_err(io)?;
                copy_headers(&resp, &mut h);
                respond::start_stream(session, ctx, h).await.map_err(io)?;
                let mut out = Vec::with_capacity(4096);
                let mut progress = Progress::new(self);
                // Until the translator has ended the client's stream itself (an unreadable
                // event, a provider error event): the rest of the provider's bytes are moot.
                while !translator.ended() {
                    let chunk = match progress.next(&mut up, session, ctx, provider).await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(()) => {
                            ctx.usage = translator.usage();
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
                        return Ok(());
                    }
                    if out.is_empty() {
                        continue;
                    }
                    ctx.mark_first_byte();
                    let send = Bytes::copy_from_slice(&out);
                    if respond::body(session, ctx, send, false).await.is_err() {
                        ctx.usage = translator.usage();
                        up.shutdown().await;
                        return Ok(());
                    }
                }
                out.clear();
                let end = translator.finish(&mut out);
                let complete = matches!(end, StreamEnd::Complete);
                ctx.usage = translator.usage();
                if !out.is_empty() {
                    ctx.mark_first_byte();
                    let _ = session
                        .write_response_body(Some(Bytes::copy_from_slice(&out)), false)
                        .await;
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
                        ctx.log_detail =
                            Some("upstream stream ended before it was complete".into());
                        ctx.error = Some(GatewayError::UpstreamUnreachable {
                            provider: provider.to_owned(),
                            detail: "the stream ended before it was complete",
                        });
                    }
                }
                let _ = session.write_response_body(None, true).await;
                if complete && !up.response_done() {
                    // The translator saw the answer end before the provider's body did (its
                    // last chunk may still be in flight): read that briefly, so the
                    // connection can be reused.
                    drain(&mut up, self.timeouts.idle.min(DRAIN_WAIT)).await;
                }
                self.done(up, &peer).await;
                Ok(())
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
                h.insert_header(crate::unified::TOKEN_COUNT_HEADER, "provider")
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

    /// A provider error status, as the client's OpenAI error.
    async fn translated_error(
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
    async fn read_answer(
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

    /// Passthrough: relays status, headers and body unchanged, observing usage on the side.
    async fn raw(
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

    /// Reads a whole body within `limit` bytes and this forwarder's deadline.
    async fn read_all(
        &self,
        up: &mut HttpSession,
        limit: u64,
    ) -> Result<Vec<u8>, Option<Box<pingora::Error>>> {
        read_all(up, limit, self.deadline).await
    }

    /// Returns a finished connection to the pool, or closes one that is not reusable.
    async fn done(&self, mut up: HttpSession, peer: &pingora::upstreams::peer::HttpPeer) {
        if up.response_done() {
            self.connector
                .release_http_session(up, peer, peer.options.idle_timeout)
                .await;
        } else {
            up.shutdown().await;
        }
    }
}

async fn send(up: &mut HttpSession, req: RequestHeader, body: Bytes) -> pingora::Result<()> {
    up.write_request_header(Box::new(req)).await?;
    up.write_request_body(body, true).await?;
    up.finish_request_body().await?;
    up.read_response_header().await
}

/// Reads the whole response body, failing with None past `limit` bytes, and with a read
/// timeout past `deadline`.
async fn read_all(
    up: &mut HttpSession,
    limit: u64,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, Option<Box<pingora::Error>>> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = up.read_response_body().await.map_err(Some)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match deadline {
        None => read.await,
        Some(at) => tokio::time::timeout_at(at.into(), read)
            .await
            .unwrap_or_else(|_| Err(Some(pingora::Error::new(ErrorType::ReadTimedout)))),
    }
}

/// Longest wait for the rest of a body the gateway no longer needs.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Reads and drops what is left of a response body (at most 64 KiB, within `wait`); the
/// connection is reusable afterwards only if the body ended.
async fn drain(up: &mut HttpSession, wait: Duration) {
    let _ = tokio::time::timeout(wait, async {
        let mut left = 64 * 1024usize;
        while let Ok(Some(chunk)) = up.read_response_body().await {
            left = match left.checked_sub(chunk.len()) {
                Some(l) => l,
                None => return,
            };
        }
    })
    .await;
}

fn copy_headers(from: &ResponseHeader, to: &mut ResponseHeader) {
    for (name, value) in from.headers.iter() {
        if forwardable(name.as_str()) {
            let _ = to.append_header(name.clone(), value.clone());
        }
    }
    if let Some(id) = from.headers.get("x-request-id") {
        let _ = to.insert_header("x-upstream-request-id", id.clone());
    }
}

/// Watches a stream whose answer has already started downstream: it must make progress (a
/// complete event that is not a keep-alive comment) at least every stream idle timeout, and
/// within `max_response_bytes` bytes, or it is ended with an SSE error event.
struct Progress {
    idle: Duration,
    max_bytes: u64,
    last: Instant,
    bytes_since: u64,
}

impl Progress {
    fn new(fw: &Forwarder<'_>) -> Self {
        Progress {
            idle: fw.timeouts.idle,
            max_bytes: fw.max_response_bytes,
            last: Instant::now(),
            bytes_since: 0,
        }
    }

    /// Reads the next chunk. `Ok(None)` at the end; on a read error or when the idle time is
    /// up, the client's stream is ended with an SSE error event, `ctx` records why, the
    /// upstream connection is closed and `Err` is returned. A client that goes away meanwhile
    /// ends it the same way (without the event: no one is left to read it).
    async fn next(
        &self,
        up: &mut HttpSession,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
    ) -> Result<Option<Bytes>, ()> {
        let read = tokio::time::timeout_at((self.last + self.idle).into(), up.read_response_body());
        let read = tokio::select! {
            r = read => r,
            () = respond::client_gone(session) => {
                // The client closed the stream ("Stop generating"): cancel the upstream
                // request at once (the connection is closed, never pooled); usage seen so far
                // is kept by the caller.
                ctx.error = Some(GatewayError::ClientClosed);
                ctx.log_detail = Some("client went away mid-stream".into());
                up.shutdown().await;
                return Err(());
            }
        };
        let (error, detail) = match read {
            Ok(Ok(chunk)) => return Ok(chunk),
            Ok(Err(e)) => (
                failure(&e, provider),
                format!("upstream stream failed: {}", e.etype().as_str()),
            ),
            Err(_) => (
                GatewayError::UpstreamTimeout {
                    provider: provider.to_owned(),
                },
                "upstream stream sent no complete event within the stream idle timeout".into(),
            ),
        };
        fail_stream(up, session, ctx, error, detail).await;
        Err(())
    }

    /// Records a chunk of `len` bytes that did (or did not) complete an event; ends the
    /// stream (like [`Self::next`]) when too many bytes came without one.
    async fn fed(
        &mut self,
        len: usize,
        progressed: bool,
        up: &mut HttpSession,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
    ) -> Result<(), ()> {
        if progressed {
            self.last = Instant::now();
            self.bytes_since = 0;
            return Ok(());
        }
        self.bytes_since += len as u64;
        if self.bytes_since <= self.max_bytes {
            return Ok(());
        }
        let error = GatewayError::UpstreamUnreachable {
            provider: provider.to_owned(),
            detail: "an event was larger than server.max_upstream_response_bytes",
        };
        let detail = "upstream stream event over server.max_upstream_response_bytes".into();
        fail_stream(up, session, ctx, error, detail).await;
        Err(())
    }
}

/// Ends a started stream on an upstream failure: records it, closes the upstream connection
/// and ends the client's stream with an SSE error event.
async fn fail_stream(
    up: &mut HttpSession,
    session: &mut Session,
    ctx: &mut RequestCtx,
    error: GatewayError,
    detail: String,
) {
    ctx.log_detail = Some(detail);
    ctx.error = Some(error.clone());
    up.shutdown().await;
    end_with_error(session, ctx, &error).await;
}

/// Ends a started SSE response with one error event in the front door's form (an OpenAI
/// `data:` event, or a Messages `event: error`).
async fn end_with_error(session: &mut Session, ctx: &RequestCtx, e: &GatewayError) {
    let mut event = Vec::new();
    let front = ctx.route.front();
    if front == FrontDoor::Messages {
        event.extend_from_slice(b"event: error\n");
    }
    switchyard_filters::sse::write_data_event(&mut event, &e.body_for(front));
    let _ = session
        .write_response_body(Some(Bytes::from(event)), true)
        .await;
}

/// Maps a Pingora connection error to the client-facing error.
pub fn failure(e: &pingora::Error, provider: &str) -> GatewayError {
    use ErrorType::*;
    let detail = match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            return GatewayError::UpstreamTimeout {
                provider: provider.to_owned(),
            }
        }
        ConnectRefused => "connection refused",
        ConnectNoRoute => "no route to host",
        TLSHandshakeFailure | InvalidCert | TLSWantX509Lookup => "TLS handshake failed",
        ConnectionClosed => "the connection was closed",
        InvalidHTTPHeader => "the response was not valid HTTP",
        _ => "the connection failed",
    };
    GatewayError::UpstreamUnreachable {
        provider: provider.to_owned(),
        detail,
    }
}

/// Bedrock's input token count header (Cohere embeddings report tokens only there).
fn input_tokens(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get("x-amzn-bedrock-input-token-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
