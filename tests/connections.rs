//! Connections, streams and disconnects: the whole-body deadline (408 for a body trickled in
//! under the pause limit), per-key caps on requests in flight and open streams (none by
//! default; 429 with Retry-After when set), a client that closes its stream (499, not 500,
//! and the upstream call cancelled), and the lingering close after an early refusal (the
//! client still uploading reads the answer instead of a reset).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::AsyncReadExt;

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads a raw HTTP/1 response until the server closes (or `limit` passes, the hang guard).
fn read_response(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn envelope(text: &str) -> Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Sends `path`'s header (Content-Length 100), then one body byte every 400 ms — always under
/// the 3 s pause limit — until the server answers. Returns the answer and the bytes sent.
fn trickle(base: &str, path: &str) -> (String, usize) {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let t = std::thread::spawn(move || {
        // 100 bytes at 400 ms: 40 s if nothing stops it.
        for _ in 0..100 {
            if stop2.load(Ordering::SeqCst) || writer.write_all(b" ").is_err() {
                return;
            }
            sent2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    let text = read_response(&mut s, Duration::from_secs(25));
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    (text, sent.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_at_the_whole_body_deadline() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(
        &up.url(),
        "  client_body_timeout_seconds: 3\n  client_body_total_timeout_seconds: 2\n",
    );
    // Unified API (the gateway reads the body) and passthrough (Pingora streams it upstream).
    for path in [
        "/v1/chat/completions",
        "/providers/openai/v1/chat/completions",
    ] {
        let base = gw.base.clone();
        let (text, sent) = tokio::task::spawn_blocking(move || trickle(&base, path))
            .await
            .unwrap();
        assert_eq!(status_of(&text), 408, "{path}: {text}");
        assert_eq!(envelope(&text)["error"]["code"], "request_timeout");
        assert!(
            sent < 100,
            "{path}: the whole body was accepted ({sent} bytes)"
        );
    }
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_limit_refusals_total{limit=\"body_timeout\"} 2"],
    )
    .await;
}

#[test]
fn the_whole_body_deadline_is_validated() {
    for bad in ["0", "3601"] {
        let e = switchyard::config::Config::parse(
            &format!("server: {{client_body_total_timeout_seconds: {bad}}}\n"),
            &|_| None,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("client_body_total_timeout_seconds"));
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
}

async fn post(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 with `Retry-After` and the OpenAI envelope with this code.
async fn expect_429(r: reqwest::Response, code: &str) {
    assert_eq!(r.status(), 429);
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(retry.as_deref(), Some("1"), "no Retry-After");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["type"], "requests");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"].get("param").is_some());
}

/// A slow OpenAI stream: the first event at once, the rest every 300 ms (about 2.5 s).
fn slow_stream() -> Reply {
    let body = chat_stream("gpt-4-0125-preview", &["a", "b", "c", "d", "e", "f"], 3);
    let text = String::from_utf8(body).unwrap();
    let pieces = text
        .split_inclusive("\n\n")
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Reply::Stream(pieces, Duration::from_millis(300))
}

#[tokio::test]
async fn a_hundred_and_twenty_streams_on_one_key_need_no_configuration() {
    let up = MockUpstream::start(|_| slow_stream());
    let gw = gateway(&up.url(), "");
    let mut tasks = Vec::new();
    for _ in 0..120 {
        let base = gw.base.clone();
        tasks.push(tokio::spawn(async move {
            let r = post(&base, &chat("gpt-4", true)).await;
            let status = r.status().as_u16();
            let (body, _) = read_chunks(r).await;
            (status, body)
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(body.ends_with(b"data: [DONE]\n\n"));
    }
    // They were all open at once: each upstream stream lasts 2.5 s, and all 120 reached it.
    assert_eq!(up.recorded().len(), 120);
}

#[tokio::test]
async fn a_stream_cap_answers_429_with_retry_after() {
    let up = MockUpstream::start(|_| slow_stream());
    let gw = gateway(&up.url(), "  max_streams_per_key: 2\n");
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut r = post(&gw.base, &chat("gpt-4", true)).await;
        assert_eq!(r.status(), 200);
        assert!(r.chunk().await.unwrap().is_some());
        open.push(r);
    }
    expect_429(
        post(&gw.base, &chat("gpt-4", true)).await,
        "too_many_streams",
    )
    .await;
    // Requests that do not stream are not counted.
    let r = post(&gw.base, &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn requests_in_flight_per_key_are_capped_when_configured() {
    let up = MockUpstream::start(|_| {
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Full(
                200,
                vec![],
                chat_completion("gpt-4-0125-preview", "hi", 1, 1),
            )),
        )
    });
    let gw = gateway(&up.url(), "  max_requests_in_flight_per_key: 1\n");
    let base = gw.base.clone();
    let first = tokio::spawn(async move { post(&base, &chat("gpt-4", false)).await.status() });
    // Once the upstream holds the first request, the key has its one request in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.recorded().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_429(
        post(&gw.base, &chat("gpt-4o-mini", false)).await,
        "too_many_requests_in_flight",
    )
    .await;
    assert_eq!(first.await.unwrap(), 200);
    // The slot is free again once the first request has ended.
    let r = post(&gw.base, &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.status(), 200);
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_limit_refusals_total{limit=\"requests_in_flight\"} 1"],
    )
    .await;
}

/// An upstream that answers every request with the head of an SSE stream and `first` (one
/// chunk; nothing at all when it is empty), then holds the connection open (20 s at most) and
/// reports on the receiver when the gateway closes it.
fn holding_upstream(first: Vec<u8>) -> (std::net::SocketAddr, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(std::sync::Mutex::new(tx));
    let addr = spawn_server("127.0.0.1", move |mut sock| {
        let (tx, first) = (tx.clone(), first.clone());
        async move {
            let mut buf = Vec::new();
            if read_request(&mut sock, &mut buf)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                first.len()
            );
            let mut out = head.into_bytes();
            out.extend_from_slice(&first);
            out.extend_from_slice(b"\r\n");
            use tokio::io::AsyncWriteExt;
            if !first.is_empty() && sock.write_all(&out).await.is_err() {
                return;
            }
            let mut b = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(20), sock.read(&mut b)).await;
            if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                let _ = tx.lock().unwrap().send(());
            }
        }
    });
    (addr, rx)
}

/// Waits (15 s at most, a hang guard) for the holding upstream to see its connection closed.
async fn upstream_closed(closed: &mpsc::Receiver<()>, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while closed.try_recv().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the upstream connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_closes_its_stream_is_499_and_the_upstream_call_is_cancelled() {
    let body = chat_stream("gpt-4-0125-preview", &["a", "b"], 3);
    let first_event = String::from_utf8(body)
        .unwrap()
        .split_inclusive("\n\n")
        .next()
        .unwrap()
        .to_owned();
    let (addr, closed) = holding_upstream(first_event.into_bytes());
    let gw = gateway(&format!("http://{addr}"), "");
    for path in [
        "/v1/chat/completions",
        "/providers/openai/v1/chat/completions",
    ] {
        let mut r = client()
            .post(format!("{}{path}", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&chat("gpt-4", true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.chunk().await.unwrap().is_some());
        drop(r); // "Stop generating": the client closes the connection
                 // The upstream sees its connection closed while it still holds the stream open (it
                 // would wait 20 s); the wait here is only a hang guard.
        upstream_closed(&closed, path).await;
    }
    let text = metrics_containing(
        &gw.metrics_url,
        &[
            // Unified: the model as the client named it; passthrough: as the provider did.
            r#"ai_proxy_requests_total{model="gpt-4",provider="openai",status="499"} 1"#,
            r#"ai_proxy_requests_total{model="gpt-4-0125-preview",provider="openai",status="499"} 1"#,
        ],
    )
    .await;
    assert!(!text.contains(r#"status="500""#), "{text}");
}

#[tokio::test]
async fn a_request_abandoned_while_the_provider_thinks_is_499_and_cancelled() {
    // The provider never answers; the client gives up after a second (a load generator's
    // deadline, a user's Ctrl-C).
    let (addr, closed) = holding_upstream(Vec::new());
    let gw = gateway(&format!("http://{addr}"), "");
    let abandoned = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat("gpt-4", false))
        .send()
        .await;
    assert!(abandoned.is_err());
    upstream_closed(&closed, "waiting for the answer").await;
    let text = metrics_containing(
        &gw.metrics_url,
        &[r#"ai_proxy_requests_total{model="gpt-4",provider="openai",status="499"} 1"#],
    )
    .await;
    assert!(!text.contains(r#"status="5"#), "{text}");
}

#[tokio::test]
async fn a_translated_stream_closed_early_keeps_the_usage_seen_so_far() {
    use support::anthropic;
    // Anthropic reports the input tokens in its first event; the client leaves after it.
    let stream = anthropic::message_stream(&["Hello", " there"], 11, 5);
    let text = String::from_utf8(stream).unwrap();
    let first: String = text.split_inclusive("\n\n").take(4).collect();
    let (addr, closed) = holding_upstream(first.into_bytes());
    let gw = gateway_with(
        "",
        &format!(
            "  anthropic:\n    endpoint: \"http://{addr}\"\n    auth: {{method: api_key, config: {{api_key: \"{}\"}}}}\n",
            anthropic::ANTHROPIC_KEY
        ),
        "routing:\n  patterns:\n    - {pattern: \"^claude-\", default_provider: anthropic}\n",
    );
    let mut r = post(&gw.base, &chat(anthropic::MODEL, true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    upstream_closed(&closed, "translated stream").await;
    let model = anthropic::MODEL;
    metrics_containing(
        &gw.metrics_url,
        &[
            &format!(
                r#"ai_proxy_requests_total{{model="{model}",provider="anthropic",status="499"}} 1"#
            ),
            &tokens_total("anthropic", model, "input", 11),
        ],
    )
    .await;
}

/// Sends `head` and then all of `body` before reading anything — as Python's urllib, requests
/// or Java's HttpURLConnection do — and returns the answer. Before lingering close, the
/// gateway's early close reset the connection under the upload (broken pipe / reset).
fn upload_then_read(base: &str, head: &str, body: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(base.trim_start_matches("http://"))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_client_still_uploading_reads_the_early_refusal() {
    let gw = gateway("http://127.0.0.1:9", "");
    let base = gw.base.clone();
    let answers = tokio::task::spawn_blocking(move || {
        // 11 MiB against the 10 MiB limit: 413 as soon as the header is read.
        let big = vec![b'x'; 11 * 1024 * 1024];
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        let too_large = upload_then_read(&base, &head, &big);
        // A wrong key: 401 before the body is read.
        let body = vec![b'x'; 4 * 1024 * 1024];
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-wrong-key-123\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let unauthorized = upload_then_read(&base, &head, &body);
        (too_large, unauthorized)
    })
    .await
    .unwrap();
    let text = answers.0.expect("the upload of 11 MiB was reset");
    assert_eq!(status_of(&text), 413, "{text}");
    assert_eq!(envelope(&text)["error"]["code"], "request_too_large");
    let text = answers.1.expect("the upload under a wrong key was reset");
    assert_eq!(status_of(&text), 401, "{text}");
    assert_eq!(envelope(&text)["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn config_keys_and_store_keys_carry_their_own_stream_caps() {
    use switchyard::governance::keys::{self, KeySpec};
    use switchyard::store::{Store, StoreUrl};

    let up = MockUpstream::start(|_| slow_stream());
    let dir = std::process::Command::new("mktemp")
        .arg("-d")
        .output()
        .unwrap();
    let dir = String::from_utf8(dir.stdout).unwrap().trim().to_owned();
    let store_url = format!("sqlite:{dir}/switchyard.db");
    let port = free_port();
    // No server-wide cap: each key's own (1 stream) applies.
    let yaml = format!(
        r#"
server: {{listen: "127.0.0.1:{port}", threads: 2, access_log: false}}
auth:
  store: "{store_url}"
  keys:
    - {{user: alice, key: "{GATEWAY_KEY}", max_streams: 1}}
providers:
  openai:
    endpoint: "{}"
    auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}"}}}}
model_mappings:
  gpt-4: {{default_provider: openai, providers: {{openai: {{model: gpt-4-0125-preview}}}}}}
"#,
        up.url()
    );
    let config = switchyard::config::Config::parse(&yaml, &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = tokio::task::spawn_blocking(move || {
        switchyard::server::GatewayHandle::start(Arc::new(config))
    })
    .await
    .unwrap();
    let store = Store::open(&StoreUrl::parse(&store_url).unwrap())
        .await
        .unwrap();
    let created = keys::create(
        &store,
        &KeySpec {
            user: "bob".into(),
            max_streams: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(created.record.max_streams, Some(1));
    let gov = handle.governance.clone();
    tokio::task::spawn_blocking(move || assert!(gov.refresh_now(Duration::from_secs(10))))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for key in [GATEWAY_KEY, created.secret.as_str()] {
        let open = || {
            client()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat("gpt-4", true))
                .send()
        };
        let mut first = open().await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(first.chunk().await.unwrap().is_some());
        expect_429(open().await.unwrap(), "too_many_streams").await;
        drop(first);
    }
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
}
