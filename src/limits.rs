//! Client-side limits: the connection gate in front of the Pingora proxy (connection cap,
//! keep-alive idle and header-read deadlines, body read timeout), request header checks
//! (count, bytes, ambiguous framing) and the per-key slots for concurrent streams.
//!
//! The gate replaces Pingora's generic `ServerApp` loop for HTTP/1.x only to set our own
//! timeouts on each session and to bound the *whole* header read (Pingora's timeouts are per
//! read, so a client trickling one byte at a time would never hit them). HTTP/2 connections are
//! handed to Pingora's own loop unchanged.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ClientLimits, Config};
use crate::errors::GatewayError;
use crate::metrics::Metrics;
use crate::proxy::Gateway;

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
            refuse(stream, limits.max_connections).await;
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
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch, limits: ClientLimits) {
        let mut session = ServerSession::new_http1(stream);
        let mut reused = false;
        loop {
            // Per read: the first header must start within the header timeout, a reused
            // connection may idle for the keep-alive timeout.
            let per_read = if reused {
                limits.keepalive_timeout
            } else {
                limits.header_timeout
            };
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
            // The whole header (idle wait included on a reused connection) has this long.
            let budget = limits.header_timeout + if reused { per_read } else { Duration::ZERO };
            let request = self.proxy.process_new_http(session, shutdown);
            tokio::pin!(request);
            let deadline = tokio::time::sleep(budget);
            tokio::pin!(deadline);
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
            let (stream, settings) = reusable.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = true;
        }
    }
}

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

/// Open streams per gateway key.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<Arc<str>, u32>>,
}

/// One open stream of a key; the slot is released when this is dropped (with the request
/// context: normal end, client disconnect, upstream error alike).
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: Arc<str>,
}

impl StreamSlots {
    /// Takes a slot for `key`, or refuses with 429 `too_many_streams` when it has `limit`.
    pub fn acquire(
        self: &Arc<Self>,
        key: &Arc<str>,
        limit: u32,
    ) -> Result<StreamSlot, GatewayError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return Err(GatewayError::TooManyStreams { limit });
        }
        *n += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            key: key.clone(),
        })
    }

    /// Streams `key` has open now.
    pub fn open(&self, key: &str) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
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
    fn slots_are_counted_per_key_and_released_on_drop() {
        let slots = Arc::new(StreamSlots::default());
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let one = slots.acquire(&a, 2).unwrap();
        let two = slots.acquire(&a, 2).unwrap();
        assert_eq!(
            slots.acquire(&a, 2).err(),
            Some(GatewayError::TooManyStreams { limit: 2 })
        );
        let _other = slots.acquire(&b, 2).unwrap();
        drop(one);
        assert_eq!(slots.open("a"), 1);
        let _three = slots.acquire(&a, 2).unwrap();
        drop(two);
        drop(_three);
        assert_eq!(slots.open("a"), 0);
        assert!(!slots.open.lock().unwrap().contains_key("a"));
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
