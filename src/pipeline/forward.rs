//! Calls an upstream for a request whose body the gateway has already read and prepared (a
//! front door's attempt, or a signed passthrough): connect on Pingora's pools, send, wait for
//! the response headers. [`super::relay`] then writes a translated answer downstream, or
//! [`super::relay_raw`] the provider's bytes unchanged.
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
use switchyard_filters::front::FrontDoor;

use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::translation::Translation;
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{Provider, Upstream};
use crate::respond;

/// Largest upstream error body read (the rest is dropped).
pub(super) const ERROR_BODY_LIMIT: usize = 256 * 1024;

/// Upstream response headers worth passing to the client.
pub(super) fn forwardable(name: &str) -> bool {
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
    /// The Responses API on OpenAI / Azure OpenAI: the model name restored, the final
    /// `response` object stored.
    OpenAiResponses { stream: bool, client_model: &'a str },
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
    pub(super) up: HttpSession,
    pub resp: ResponseHeader,
    pub(super) peer: Box<HttpPeer>,
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

    /// Reads a whole body within `limit` bytes and this forwarder's deadline.
    pub(super) async fn read_all(
        &self,
        up: &mut HttpSession,
        limit: u64,
    ) -> Result<Vec<u8>, Option<Box<pingora::Error>>> {
        read_all(up, limit, self.deadline).await
    }

    /// Returns a finished connection to the pool, or closes one that is not reusable.
    pub(super) async fn done(
        &self,
        mut up: HttpSession,
        peer: &pingora::upstreams::peer::HttpPeer,
    ) {
        if up.response_done() {
            self.connector
                .release_http_session(up, peer, peer.options.idle_timeout)
                .await;
        } else {
            up.shutdown().await;
        }
    }
}

pub(super) async fn send(
    up: &mut HttpSession,
    req: RequestHeader,
    body: Bytes,
) -> pingora::Result<()> {
    up.write_request_header(Box::new(req)).await?;
    up.write_request_body(body, true).await?;
    up.finish_request_body().await?;
    up.read_response_header().await
}

/// Reads the whole response body, failing with None past `limit` bytes, and with a read
/// timeout past `deadline`.
pub(super) async fn read_all(
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
pub(super) const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Reads and drops what is left of a response body (at most 64 KiB, within `wait`); the
/// connection is reusable afterwards only if the body ended.
pub(super) async fn drain(up: &mut HttpSession, wait: Duration) {
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

pub(super) fn copy_headers(from: &ResponseHeader, to: &mut ResponseHeader) {
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
pub(super) struct Progress {
    idle: Duration,
    max_bytes: u64,
    last: Instant,
    bytes_since: u64,
}

impl Progress {
    pub(super) fn new(fw: &Forwarder<'_>) -> Self {
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
    pub(super) async fn next(
        &self,
        up: &mut HttpSession,
        session: &mut Session,
        ctx: &mut RequestCtx,
        provider: &str,
    ) -> Result<Option<Bytes>, ()> {
        let followers = crate::pipeline::cache::serving_followers;
        let read = {
            let mut read = std::pin::pin!(tokio::time::timeout_at(
                (self.last + self.idle).into(),
                up.read_response_body()
            ));
            if followers(ctx) {
                // Requests coalesced onto this one read the answer too: it goes on even if
                // this request's own client leaves (its writes then fail and are ignored).
                Some(read.await)
            } else {
                tokio::select! {
                    r = &mut read => Some(r),
                    () = respond::client_gone(session) => {
                        if followers(ctx) { Some(read.await) } else { None }
                    }
                }
            }
        };
        let Some(read) = read else {
            // The client closed the stream ("Stop generating"): cancel the upstream request
            // at once (the connection is closed, never pooled); usage seen so far is kept by
            // the caller.
            ctx.error = Some(GatewayError::ClientClosed);
            ctx.log_detail = Some("client went away mid-stream".into());
            up.shutdown().await;
            return Err(());
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
    pub(super) async fn fed(
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
pub(super) async fn fail_stream(
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
pub(super) async fn end_with_error(session: &mut Session, ctx: &RequestCtx, e: &GatewayError) {
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
pub(super) fn input_tokens(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get("x-amzn-bedrock-input-token-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
