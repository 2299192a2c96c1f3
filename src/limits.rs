//! Client-side limits: the connection gate in front of the Pingora proxy (connection cap,
//! keep-alive idle and header-read deadlines, body read timeout), request header checks
//! (count, bytes, ambiguous framing), the per-key slots for requests in flight and open
//! streams, the whole-body deadline, and the lingering close after an early answer.
//!
//! The gate replaces Pingora's generic `ServerApp` loop for HTTP/1.x only to set our own
//! timeouts on each session and to bound the *whole* header read (Pingora's timeouts are per
//! read, so a client trickling one byte at a time would never hit them). HTTP/2 connections are
//! handed to Pingora's own loop unchanged.

use std::any::Any;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::config::{ClientLimits, Config};
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use crate::pipeline::Gateway;

/// Set on a connection's user context when Pingora has read a request header; the gate's
/// header deadline only cuts connections whose header is still incomplete.
pub struct HeaderRead(Arc<AtomicBool>);

impl HeaderRead {
    /// Called from `on_connection_reuse`, which Pingora runs right after the header is read.
    pub fn mark(prev: Box<dyn Any + Send + Sync>) {
        if let Ok(h) = prev.downcast::<HeaderRead>() {
            h.0.store(true, Ordering::Release);
        }
    }
}

/// The gateway's listening app: counts connections and runs HTTP/1.x sessions with the
/// configured timeouts.
pub struct ConnectionGate {
    proxy: Arc<HttpProxy<Gateway>>,
    config: Arc<ArcSwap<Config>>,
    metrics: Arc<Metrics>,
    open: AtomicU64,
}

impl ConnectionGate {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        config: Arc<ArcSwap<Config>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ConnectionGate {
            proxy: Arc::new(proxy),
            config,
            metrics,
            open: AtomicU64::new(0),
        }
    }
}

/// One open connection in the count; released however the connection ends.
struct Open<'a>(&'a ConnectionGate);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open_connections.dec();
    }
}

#[async_trait]
impl ServerApp for ConnectionGate {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = self.config.load().server.limits;
        let n = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.open_connections.inc();
        let open = Open(self);
        if n > limits.max_connections {
            drop(open); // a refused connection does not hold a slot while it is answered
            self.metrics
                .limit_refusals
                .with_label_values(&["connections"])
                .inc();
            // Boxed: its read buffer would otherwise sit in every connection's future.
            Box::pin(refuse(stream, limits.max_connections)).await;
            return None;
        }
        if matches!(
            stream.selected_alpn_proto(),
            Some(ALPN::H2) | Some(ALPN::Custom(_))
        ) {
            // HTTP/2: the h2 codec bounds header frames; Pingora's loop serves the streams.
            return self.proxy.process_new(stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown, limits).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl ConnectionGate {
    /// Pingora's HTTP/1.x keep-alive loop, with our timeouts and a deadline on each header.
    async fn serve_http1(
        &self,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
        limits: ClientLimits,
    ) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut reused = false;
        let mut shutdown_changed = shutdown.clone();
        loop {
            // Per read: the first header must start within the header timeout, a reused
            // connection may idle for the keep-alive timeout.
            let per_read = if reused {
                limits.keepalive_timeout
            } else {
                limits.header_timeout
            };
            // The whole header (idle wait included on a reused connection) has this long.
            let budget = limits.header_timeout + if reused { per_read } else { Duration::ZERO };
            let started = tokio::time::Instant::now();
            if reused && *shutdown.borrow() {
                return; // shutting down: an idle connection is closed, as Pingora does
            }
            // One timer for both waits (the first bytes within `per_read`, then the whole
            // header by `started + budget`): a second timer per request made tokio wake its
            // driver through the eventfd on every request (one `write` syscall each).
            let deadline = tokio::time::sleep_until(started + per_read);
            tokio::pin!(deadline);
            // Held through the first request, so a draining process never sees the
            // connection between its first bytes and the request counted in flight.
            let _awaiting = (!reused).then(|| AwaitingFirstRequest::new(&self.metrics));
            stream = tokio::select! {
                biased;
                first = first_bytes(stream) => match first {
                    Some(stream) => stream,
                    None => return, // closed or failed
                },
                // Idle past the timeout: close, as Pingora's read would.
                _ = &mut deadline => return,
                // Shutting down: an idle keep-alive connection is closed (its client retries
                // on another), but a fresh one is waited on within the header timeout: its
                // client connected to send a request, and during a graceful upgrade the bytes
                // may arrive just after the old process stopped accepting. Closing it then
                // resets a request no other process can answer.
                _ = shutdown_changed.changed(), if reused => return,
            };
            deadline.as_mut().reset(started + budget);
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings.take() {
                settings.apply_to_session(&mut session);
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(per_read.as_secs().max(1)));
            }
            session.set_read_timeout(Some(limits.body_timeout));
            // A client that stops reading: each write waits at most this long.
            session.set_write_timeout(Some(limits.write_timeout));
            let header_read = Arc::new(AtomicBool::new(false));
            session.set_connection_user_context(Some(Box::new(HeaderRead(header_read.clone()))));
            let request = self.proxy.process_new_http(session, shutdown);
            tokio::pin!(request);
            let reusable = tokio::select! {
                biased;
                r = &mut request => r,
                _ = &mut deadline => {
                    if header_read.load(Ordering::Acquire) {
                        request.await
                    } else {
                        // Still no complete header: drop the session, closing the connection.
                        log::debug!("request header not complete within {budget:?}; closing");
                        self.metrics
                            .limit_refusals
                            .with_label_values(&["header_timeout"])
                            .inc();
                        return;
                    }
                }
            };
            let Some(reusable) = reusable else { return };
            (stream, settings) = reusable.consume();
            reused = true;
        }
    }
}

/// A fresh connection counted in [`Metrics::awaiting_first_request`] until its first request
/// is answered or it ends.
struct AwaitingFirstRequest<'a>(&'a Metrics);

impl<'a> AwaitingFirstRequest<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics
            .awaiting_first_request
            .fetch_add(1, Ordering::AcqRel);
        AwaitingFirstRequest(metrics)
    }
}

impl Drop for AwaitingFirstRequest<'_> {
    fn drop(&mut self) {
        self.0.awaiting_first_request.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for the first bytes of the connection's next request while holding nothing but the
/// stream (issue 17, docs/BENCHMARKS.md "Memory per connection"). Pingora's `process_new_http`
/// allocates its whole request future (≈16 KB with our context) and a 4 KiB header buffer
/// *before* it waits to read, so every idle keep-alive connection held both. On a plain TCP
/// stream the bytes are read here through a buffer on the stack of one poll (nothing is kept
/// while the read is pending) and put back with [`L4Stream::rewind`], where Pingora's header
/// read finds them: no read syscall more than before. Other streams (TLS) are returned as they
/// are, and Pingora waits as before. `None`: the client closed or the read failed.
///
/// The gateway does not enable HTTP/1.1 pipelining, so Pingora never carries a request read
/// past the previous one to the next session (it closes such a connection instead): a complete
/// request cannot be sitting in a pipelined prefix while this waits on the socket.
async fn first_bytes(stream: Stream) -> Option<Stream> {
    if !stream.as_any().is::<L4Stream>() {
        return Some(stream);
    }
    let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
        return None; // unreachable: the type was checked above
    };
    let read = std::future::poll_fn(|cx| {
        // Uninitialised: zeroing 4 KiB on every poll cost ≈ 12,000 instructions a request.
        let mut buf = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *l4).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let got = read.filled();
                if !got.is_empty() {
                    l4.rewind(got);
                }
                Poll::Ready(Ok(got.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match read {
        Ok(n) if n > 0 => Some(l4),
        _ => None,
    }
}

/// The first read of a request in [`first_bytes`]: Pingora's initial header buffer size, so
/// that read takes what Pingora's own first read would have taken.
const FIRST_READ: usize = 4096;

/// Answers a connection over `max_connections` with a 503 envelope and closes it. The
/// request is drained briefly first so the close does not reset the answer away.
async fn refuse(mut stream: Stream, limit: u64) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return; // no HTTP/1 answer is possible on an h2 connection: just close it
    }
    let e = GatewayError::TooManyConnections { limit };
    let body = e.body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n\r\n",
        body.len()
    );
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    })
    .await;
    pingora::protocols::Shutdown::shutdown(&mut *stream).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Longest time the gateway goes on reading (and dropping) a request body after it has
/// answered early (401, 413, 431, ...), and the most bytes it reads so: see [`linger`].
pub const LINGER_TIME: Duration = Duration::from_secs(5);
pub const LINGER_BYTES: usize = 32 * 1024 * 1024;
/// Longest pause between two pieces of that body before the gateway stops waiting for it.
const LINGER_PAUSE: Duration = Duration::from_secs(2);

/// Lingering close, as nginx does it: after an answer written before the request body was
/// read (a refusal), read and drop what the client still sends — for at most [`LINGER_TIME`]
/// and [`LINGER_BYTES`], with at most [`LINGER_PAUSE`] between pieces — before the connection
/// closes. Closing with unread bytes makes the kernel send a reset, which destroys the answer
/// before a client that is still uploading (urllib, requests, Java) gets to read it.
/// HTTP/1 only (HTTP/2 ends just the stream); nothing to do when the body was read.
pub async fn linger(session: &mut Session, ctx: &crate::ctx::RequestCtx) {
    // A stalled body, a smuggling attempt or a client that left: nothing worth waiting for.
    if matches!(
        ctx.error,
        Some(
            GatewayError::RequestTimeout | GatewayError::BadFraming(_) | GatewayError::ClientClosed
        )
    ) {
        return;
    }
    let ServerSession::H1(h1) = &mut *session.downstream_session else {
        return;
    };
    if h1.is_body_done() {
        return;
    }
    h1.set_server_keepalive(None); // whatever is read, this connection ends here
    h1.set_read_timeout(Some(LINGER_PAUSE));
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0;
        while let Ok(Some(piece)) = h1.read_body_bytes().await {
            read += piece.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Checks the request header against the limits: field count and bytes (431), and ambiguous
/// framing (400; the connection is closed after the answer).
pub fn check_request_header(
    session: &mut Session,
    limits: &ClientLimits,
) -> Result<(), GatewayError> {
    let req = session.req_header();
    if req.headers.len() > limits.max_header_count {
        return Err(GatewayError::HeadersTooLarge {
            what: "header fields",
            limit: limits.max_header_count as u64,
        });
    }
    // Request line plus `name: value\r\n` for each field.
    let mut bytes = req.method.as_str().len() + req.raw_path().len() + 12;
    for (name, value) in req.headers.iter() {
        bytes += name.as_str().len() + value.len() + 4;
    }
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            what: "header bytes",
            limit: limits.max_header_bytes as u64,
        });
    }
    // Pingora rejects differing Content-Lengths and a non-chunked final Transfer-Encoding
    // itself (bare 400). With both Content-Length and Transfer-Encoding it drops the length and
    // goes on; we refuse that too (RFC 9112 §6.1 allows either), reading the raw header since
    // the parsed one no longer has the length.
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        if let ServerSession::H1(h1) = &*session.downstream_session {
            if has_field(&h1.get_headers_raw_bytes(), b"content-length") {
                session.downstream_session.set_keepalive(None);
                return Err(GatewayError::BadFraming(
                    "both Content-Length and Transfer-Encoding are present",
                ));
            }
        }
    }
    Ok(())
}

/// Whether the raw HTTP/1 header block has a field called `name` (lowercase ASCII).
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// Per-key caps on concurrency: the most requests in flight and the most open streams (None:
/// no cap). The server's settings, or a key's own (config key or store key) overriding them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Concurrency {
    pub requests: Option<u32>,
    pub streams: Option<u32>,
}

impl Concurrency {
    /// The key's own caps where it has them, else the server's.
    pub fn or(self, server: Concurrency) -> Concurrency {
        Concurrency {
            requests: self.requests.or(server.requests),
            streams: self.streams.or(server.streams),
        }
    }
}

/// A configured cap as a slot count (validation keeps it within 1..=1,000,000).
pub fn cap(v: u64) -> u32 {
    v.clamp(1, 1_000_000) as u32
}

/// What a [`KeySlot`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A request in flight (`max_requests_in_flight_per_key`).
    Request = 0,
    /// An open stream (`max_streams_per_key`).
    Stream = 1,
}

/// Requests in flight and open streams per gateway key. Only keys under a cap are counted:
/// with no cap configured (the default) the request path never touches the lock.
#[derive(Default)]
pub struct KeySlots {
    open: Mutex<HashMap<Arc<str>, [u32; 2]>>,
}

/// One request or stream of a key; the slot is released when this is dropped (with the
/// request context: normal end, client disconnect, upstream error alike).
pub struct KeySlot {
    slots: Arc<KeySlots>,
    key: Arc<str>,
    kind: SlotKind,
}

impl KeySlots {
    /// Takes a `kind` slot for `key`, or refuses with 429 (`too_many_requests_in_flight`,
    /// `too_many_streams`) when it has `limit` already.
    pub fn acquire(
        self: &Arc<Self>,
        key: &Arc<str>,
        kind: SlotKind,
        limit: u32,
    ) -> Result<KeySlot, GatewayError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = &mut open.entry(key.clone()).or_insert([0, 0])[kind as usize];
        if *n >= limit {
            return Err(match kind {
                SlotKind::Request => GatewayError::TooManyRequestsInFlight { limit },
                SlotKind::Stream => GatewayError::TooManyStreams { limit },
            });
        }
        *n += 1;
        Ok(KeySlot {
            slots: self.clone(),
            key: key.clone(),
            kind,
        })
    }

    /// `kind` slots `key` holds now.
    pub fn open(&self, key: &str, kind: SlotKind) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).map_or(0, |n| n[kind as usize])
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            let k = &mut n[self.kind as usize];
            *k = k.saturating_sub(1);
            if *n == [0, 0] {
                open.remove(&self.key);
            }
        }
    }
}

/// The `limit` label of `ai_proxy_limit_refusals_total` for a refusal by a client limit.
pub fn refusal_label(e: &GatewayError) -> Option<&'static str> {
    match e {
        GatewayError::HeadersTooLarge { .. } => Some("headers"),
        GatewayError::BadFraming(_) => Some("framing"),
        GatewayError::PayloadTooLarge { .. } => Some("body_size"),
        GatewayError::BodyBudgetExhausted => Some("body_memory"),
        GatewayError::RequestTimeout => Some("body_timeout"),
        GatewayError::TooManyStreams { .. } => Some("streams"),
        GatewayError::TooManyRequestsInFlight { .. } => Some("requests_in_flight"),
        GatewayError::TooManyConnections { .. } => Some("connections"),
        _ => None,
    }
}

/// Whether a passthrough path asks for a streamed answer (Vertex `:streamGenerateContent`,
/// Bedrock `converse-stream` / `invoke-with-response-stream`, watsonx `generation_stream`).
pub fn passthrough_streams(path: &str) -> bool {
    path.as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_kind_and_released_on_drop() {
        use SlotKind::{Request, Stream};
        let slots = Arc::new(KeySlots::default());
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let one = slots.acquire(&a, Stream, 2).unwrap();
        let two = slots.acquire(&a, Stream, 2).unwrap();
        assert_eq!(
            slots.acquire(&a, Stream, 2).err(),
            Some(GatewayError::TooManyStreams { limit: 2 })
        );
        let req = slots.acquire(&a, Request, 1).unwrap();
        assert_eq!(
            slots.acquire(&a, Request, 1).err(),
            Some(GatewayError::TooManyRequestsInFlight { limit: 1 })
        );
        let _other = slots.acquire(&b, Stream, 2).unwrap();
        drop(one);
        assert_eq!(slots.open("a", Stream), 1);
        let _three = slots.acquire(&a, Stream, 2).unwrap();
        drop(two);
        drop(_three);
        assert_eq!(slots.open("a", Stream), 0);
        assert_eq!(slots.open("a", Request), 1);
        drop(req);
        assert!(!slots.open.lock().unwrap().contains_key("a"));
    }

    #[test]
    fn a_keys_own_caps_override_the_servers() {
        let server = Concurrency {
            requests: Some(10),
            streams: None,
        };
        let own = Concurrency {
            requests: None,
            streams: Some(3),
        };
        assert_eq!(
            own.or(server),
            Concurrency {
                requests: Some(10),
                streams: Some(3)
            }
        );
        assert_eq!(
            Concurrency::default().or(Concurrency::default()),
            Concurrency::default()
        );
    }

    #[test]
    fn raw_header_fields_are_found_by_name_only() {
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        assert!(has_field(raw, b"content-length"));
        assert!(!has_field(raw, b"transfer-encoding"));
        let raw = b"POST /content-length: HTTP/1.1\r\nX-Content-Length: 3\r\n\r\n";
        assert!(!has_field(raw, b"content-length"));
    }

    #[test]
    fn stream_paths_are_recognised() {
        assert!(passthrough_streams(
            "v1/projects/p/models/m:streamGenerateContent"
        ));
        assert!(passthrough_streams("model/x/converse-stream"));
        assert!(!passthrough_streams("v1/messages"));
    }
}
