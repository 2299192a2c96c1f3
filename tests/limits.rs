//! Client-side limits and protocol protections, each with its status and OpenAI envelope:
//! header count and bytes (431), connections (503, closed), streams per key (429, slots
//! released on normal end, client disconnect and upstream error), slowloris header deadline and
//! keep-alive idle timeout (connection closed), body read timeout (408), a client that stops
//! reading (write timeout, closed), request smuggling
//! (400, closed), caller headers that try to override credentials or the upstream, and
//! upstream redirects (relayed, not followed).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Raw HTTP/1.1 exchange: writes `request`, reads until the server closes (or 10 s pass).
/// Returns the status (0 if none), the whole response text and whether the server closed.
fn raw_exchange(base: &str, request: &[u8]) -> (u16, String, bool) {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    read_all(&mut s)
}

fn read_all(s: &mut TcpStream) -> (u16, String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text, closed)
}

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON envelope at the end of a raw response.
fn envelope(text: &str) -> Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["type"].is_string() && v["error"].get("param").is_some());
    v
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4", "stream": stream, "messages": [{"role": "user", "content": "x"}]})
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let gw = gateway(
        "http://127.0.0.1:9",
        "  max_header_count: 20\n  max_header_bytes: 2048\n",
    );
    let url = format!("{}/v1/chat/completions", gw.base);
    let mut req = client()
        .post(&url)
        .bearer_auth(GATEWAY_KEY)
        .json(&chat(false));
    for i in 0..25 {
        req = req.header(format!("x-pad-{i}"), "1");
    }
    let v = expect_error(
        req.send().await.unwrap(),
        431,
        "request_header_fields_too_large",
    )
    .await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = client()
        .post(&url)
        .bearer_auth(GATEWAY_KEY)
        .header("x-pad", "a".repeat(3000))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    expect_error(r, 431, "request_header_fields_too_large").await;
    // Within both limits: served.
    let r = client()
        .post(&url)
        .bearer_auth(GATEWAY_KEY)
        .header("x-pad", "a".repeat(1000))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_are_closed() {
    let gw = gateway(
        "http://127.0.0.1:9",
        "  max_connections: 2\n  client_header_timeout_seconds: 20\n",
    );
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // The start-up probe's connection may still be counted for a moment.
    // Generous: on a busy machine the gateway may take a while to pick the held ones up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (held, refused) = loop {
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let (status, text, closed) =
            raw_exchange(&gw.base, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        if status == 503 {
            break (held, (text, closed));
        }
        assert!(Instant::now() < deadline, "no 503 at the limit: {text}");
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
    };
    let (text, closed) = refused;
    assert!(closed, "a refused connection stays open");
    let v = envelope(&text);
    assert_eq!(v["error"]["code"], "too_many_connections");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(text.to_ascii_lowercase().contains("connection: close"));
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_limit_refusals_total{limit=\"connections\"}"],
    )
    .await;
    // A held connection still works, and a slot frees when one closes.
    let mut first = held.into_iter();
    let mut a = first.next().unwrap();
    a.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(read_all(&mut a).0, 200);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = raw_exchange(
            &gw.base,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(first);
    metrics_containing(&gw.metrics_url, &["ai_proxy_open_connections 0"]).await;
}

/// A slow OpenAI stream: the first event at once, the rest every 300 ms.
fn slow_stream() -> Reply {
    let body = chat_stream("gpt-4-0125-preview", &["a", "b", "c", "d", "e", "f"], 3);
    let text = String::from_utf8(body).unwrap();
    let pieces = text
        .split_inclusive("\n\n")
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Reply::Stream(pieces, Duration::from_millis(300))
}

async fn open_stream(base: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat(true))
        .send()
        .await
        .unwrap()
}

/// Polls until a new stream is accepted (the slot of an ended one was released).
async fn stream_accepted_within(base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = open_stream(base).await;
        if r.status() == 200 {
            let _ = read_chunks(r).await;
            return;
        }
        expect_error(r, 429, "too_many_streams").await;
        assert!(
            Instant::now() < deadline,
            "the stream slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streams_per_key_are_capped_and_released_however_they_end() {
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cut2 = cut.clone();
    let up = MockUpstream::start(move |_| {
        if cut2.load(std::sync::atomic::Ordering::SeqCst) {
            let body = chat_stream("gpt-4-0125-preview", &["a"], 1);
            Reply::StreamCut(vec![body[..20].to_vec()])
        } else {
            slow_stream()
        }
    });
    let gw = gateway(&up.url(), "  max_streams_per_key: 1\n");
    // 1. One stream open: a second is refused, a non-stream request is not.
    let mut first = open_stream(&gw.base).await;
    assert_eq!(first.status(), 200);
    assert!(first.chunk().await.unwrap().is_some());
    let v = expect_error(open_stream(&gw.base).await, 429, "too_many_streams").await;
    assert_eq!(v["error"]["type"], "requests");
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_limit_refusals_total{limit=\"streams\"} 1"],
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains('1'));
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 2. Normal end releases the slot.
    while first.chunk().await.unwrap().is_some() {}
    stream_accepted_within(&gw.base, Duration::from_secs(5)).await;
    // 3. Client disconnect releases it (the gateway notices the close at once).
    let mut second = open_stream(&gw.base).await;
    assert_eq!(second.status(), 200);
    assert!(second.chunk().await.unwrap().is_some());
    drop(second);
    stream_accepted_within(&gw.base, Duration::from_secs(10)).await;
    // 4. An upstream that cuts the stream releases it too.
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = open_stream(&gw.base).await;
    let _ = read_chunks(r).await;
    cut.store(false, std::sync::atomic::Ordering::SeqCst);
    stream_accepted_within(&gw.base, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_header_trickled_past_the_deadline_is_cut_off() {
    let gw = gateway("http://127.0.0.1:9", "  client_header_timeout_seconds: 1\n");
    let mut s = TcpStream::connect(gw.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nX-Slow: "
    );
    s.write_all(header.as_bytes()).unwrap();
    // One byte every 200 ms: never idle for a whole timeout, but never done either.
    let closed = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        if s.write_all(b"a").is_err() {
            break true;
        }
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => panic!("answered a half-sent header"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    assert!(closed);
    assert!(started.elapsed() >= Duration::from_millis(900));
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_limit_refusals_total{limit=\"header_timeout\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let gw = gateway("http://127.0.0.1:9", "  keepalive_timeout_seconds: 1\n");
    let mut s = TcpStream::connect(gw.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    // Nothing more is sent: the server closes the idle connection.
    let started = Instant::now();
    let (_, rest, closed) = read_all(&mut s);
    assert!(closed && rest.is_empty(), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    // An answer far larger than the socket buffers, so the gateway's writes stall.
    let big = vec![b'x'; 16 << 20];
    let up = MockUpstream::start(move |_| {
        Reply::Full(
            200,
            vec![("content-type".into(), "application/octet-stream".into())],
            big.clone(),
        )
    });
    let gw = gateway(
        &format!("http://{}", up.addr),
        "  client_write_timeout_seconds: 1\n",
    );
    let mut s = TcpStream::connect(gw.base.trim_start_matches("http://")).unwrap();
    s.write_all(
        format!(
            "GET /providers/openai/v1/files/file-1/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // The client never reads: once a write has waited the timeout, the gateway closes the
    // connection (without the write timeout it would wait forever).
    metrics_containing(&gw.metrics_url, &["ai_proxy_open_connections 1"]).await;
    metrics_containing(&gw.metrics_url, &["ai_proxy_open_connections 0"]).await;
    drop(s);
}

#[tokio::test]
async fn a_stalled_body_is_408_and_the_connection_closed() {
    let gw = gateway("http://127.0.0.1:9", "  client_body_timeout_seconds: 1\n");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    let started = Instant::now();
    let (status, text, closed) = raw_exchange(&gw.base, request.as_bytes());
    assert_eq!(status, 408, "{text}");
    assert!(closed);
    assert_eq!(envelope(&text)["error"]["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(8));
    // Passthrough streams the body through Pingora: the same 408 while nothing was answered.
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(&up.url(), "  client_body_timeout_seconds: 1\n");
    let request = request.replace(
        "/v1/chat/completions",
        "/providers/openai/v1/chat/completions",
    );
    let (status, text, closed) = raw_exchange(&gw.base, request.as_bytes());
    assert_eq!(status, 408, "{text}");
    assert!(closed);
    assert_eq!(envelope(&text)["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn ambiguous_framing_is_400_and_closes_the_connection() {
    let gw = gateway("http://127.0.0.1:9", "");
    let auth = format!("Authorization: Bearer {GATEWAY_KEY}\r\n");
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#;
    // Content-Length and Transfer-Encoding together: our envelope, then close.
    let smuggle = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    let (status, text, closed) = raw_exchange(&gw.base, smuggle.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(closed);
    assert_eq!(envelope(&text)["error"]["code"], "invalid_framing");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "a second request was served: {text}"
    );
    // Pingora's own refusals (bare 400, connection closed): differing lengths, a final
    // encoding other than chunked, Transfer-Encoding on HTTP/1.0.
    for head in [
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n",
        "POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let req =
            format!("{head}Host: x\r\n{auth}\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, text, closed) = raw_exchange(&gw.base, req.as_bytes());
        assert_eq!(status, 400, "{head}: {text}");
        assert!(closed, "{head}");
        assert_eq!(text.matches("HTTP/1.").count(), 1, "{head}: {text}");
    }
}

#[tokio::test]
async fn caller_headers_cannot_replace_the_credential_or_the_host() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(&up.url(), "");
    let r = client()
        .post(format!("{}/providers/openai/v1/chat/completions", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .header("authorization", "Basic Y2FsbGVyOnNlY3JldA==")
        .header("api-key", "sk-caller-own-key")
        .header("x-goog-api-key", "caller-goog-key")
        .header("x-switchyard-provider", "elsewhere")
        .header("host", "evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = up.last();
    assert_eq!(
        rec.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    for h in [
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "x-switchyard-provider",
    ] {
        assert_eq!(rec.header(h), None, "{h} reached the provider");
    }
    rec.assert_host(up.addr);
    rec.assert_no_gateway_key();
}

#[tokio::test]
async fn upstream_redirects_are_relayed_not_followed() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            302,
            vec![("location".into(), "http://evil.example/steal".into())],
            vec![],
        )
    });
    let gw = gateway(&up.url(), "");
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = no_follow
        .get(format!("{}/providers/openai/v1/models", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://evil.example/steal");
    // Unified API: a redirect is an upstream failure, not a hop to another host.
    let r = no_follow
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("location").is_none());
    let v = expect_error(r, 502, "upstream_unreachable").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("redirect"));
    for rec in up.recorded() {
        rec.assert_host(up.addr); // every request went to the configured endpoint only
    }
}

#[test]
fn limits_must_be_positive() {
    for key in [
        "max_header_count",
        "max_header_bytes",
        "max_connections",
        "max_streams_per_key",
        "max_requests_in_flight_per_key",
        "client_header_timeout_seconds",
        "client_body_timeout_seconds",
        "client_body_total_timeout_seconds",
        "keepalive_timeout_seconds",
    ] {
        let e = switchyard::config::Config::parse(&format!("server: {{{key}: 0}}\n"), &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{key}: 0 accepted"));
        assert!(
            e.0.iter().any(|p| p.path == format!("server.{key}")),
            "{key}: {e}"
        );
    }
    let e = switchyard::config::Config::parse("server: {max_header_count: 300}\n", &|_| None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("256"));
}

#[tokio::test]
async fn a_buffered_upstream_answer_over_the_limit_is_502() {
    // 20 KiB answer, 4 KiB limit: the gateway stops reading and answers in the envelope.
    let big = chat_completion("gpt-4-0125-preview", &"x".repeat(20 * 1024), 1, 1);
    let up = MockUpstream::start(move |_| Reply::Full(200, vec![], big.clone()));
    let gw = gateway(&up.url(), "  max_upstream_response_bytes: 4096\n");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 502, "upstream_unreachable").await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_upstream_response_bytes"));
    // A stream is relayed as it comes, whatever its total size.
    let up = MockUpstream::start(|_| {
        let pieces: Vec<String> = (0..200).map(|_| "y".repeat(100)).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Reply::Stream(
            vec![chat_stream("gpt-4-0125-preview", &refs, 1)],
            Duration::ZERO,
        )
    });
    let gw = gateway(&up.url(), "  max_upstream_response_bytes: 4096\n");
    let r = open_stream(&gw.base).await;
    assert_eq!(r.status(), 200);
    let (body, _) = read_chunks(r).await;
    assert!(body.len() > 20_000 && body.ends_with(b"data: [DONE]\n\n"));
}
