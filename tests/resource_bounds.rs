//! Resource bounds a caller cannot push past: model names (length, characters, metric
//! labels, response headers), the mock provider's output, and the memory taken by request
//! bodies in flight.

mod support;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use serde_json::{json, Value};
use support::*;

/// The `/metrics` text once `ai_proxy_requests_total` has counted `want` requests (5 s at most).
async fn metrics_after(gw: &Gateway, want: u64) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = client()
            .get(&gw.metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = text
            .lines()
            .filter(|l| l.starts_with("ai_proxy_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
        if counted >= want || Instant::now() > until {
            assert_eq!(counted, want, "requests counted:\n{text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The series (sample lines) of the request-related families, by name, sorted.
fn series(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with("ai_proxy_"))
        // Gauges and families that never carry a model.
        .filter(|l| !l.starts_with("ai_proxy_provider_up") && !l.starts_with("ai_proxy_in_flight"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_owned())
        .collect();
    out.sort();
    out
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// One round of every kind of traffic a caller names its model for, `name(i)` choosing the
/// model: mock chat, mock stream, mock completions, mock embeddings, a mock failure and an
/// upstream failure. Returns the number of requests sent.
async fn one_round(gw: &Gateway, i: usize, filler: &str) -> u64 {
    let mock = format!("mock-{i}-{filler}");
    let upstream = format!("gpt-{i}-{filler}");
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": mock, "messages": msgs}),
            200,
        ),
        (
            "/v1/chat/completions",
            json!({"model": mock, "messages": msgs, "stream": true}),
            200,
        ),
        (
            "/v1/completions",
            json!({"model": mock, "prompt": "hi"}),
            200,
        ),
        ("/v1/embeddings", json!({"model": mock, "input": "hi"}), 200),
        (
            "/v1/chat/completions",
            json!({"model": "mock-error-503", "messages": msgs}),
            503,
        ),
        (
            "/v1/chat/completions",
            json!({"model": upstream, "messages": msgs}),
            500,
        ),
    ];
    for (path, body, status) in &cases {
        let r = post(gw, path, body).await;
        assert_eq!(r.status().as_u16(), *status, "{path}");
        let model = r
            .headers()
            .get("x-switchyard-model")
            .map(|v| v.len())
            .unwrap_or(0);
        assert!(model <= 256, "x-switchyard-model is {model} bytes");
        r.bytes().await.unwrap();
    }
    cases.len() as u64
}

/// Distinct caller-chosen model names through `routing.patterns` (mock and an upstream that
/// fails) add no metric series: the label is the pattern (or a priced name), never the name.
#[tokio::test]
async fn pattern_routed_names_do_not_add_metric_series() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            500,
            vec![],
            br#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#
                .to_vec(),
        )
    });
    let providers = format!(
        "  openai:\n    endpoint: \"{}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n",
        up.url()
    );
    // A circuit that never opens: every round meets the same states.
    let routes = r#"routing:
  health: {failure_threshold: 100000}
  patterns:
    - {pattern: "^gpt-", default_provider: openai}
    - {pattern: "^mock-", default_provider: mock}
"#;
    let gw = gateway_with("", &providers, routes);
    // Long but valid names: 240 bytes.
    let filler = "C".repeat(230);
    let mut sent = 0;
    for i in 0..2 {
        sent += one_round(&gw, i, &filler).await;
    }
    let first = series(&metrics_after(&gw, sent).await);
    for i in 2..40 {
        sent += one_round(&gw, i, &filler).await;
    }
    let text = metrics_after(&gw, sent).await;
    let last = series(&text);
    assert_eq!(first, last, "new series appeared");
    assert!(
        !text.contains("CCCC"),
        "a caller's name became a label:\n{text}"
    );
    assert!(
        text.contains(r#"ai_proxy_requests_total{model="^mock-",provider="mock",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ai_proxy_requests_total{model="^gpt-",provider="openai",status="500"}"#),
        "{text}"
    );
    // A name the price table knows keeps its own label.
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 500);
    r.bytes().await.unwrap();
    let text = metrics_after(&gw, sent + 1).await;
    assert!(
        text.contains(
            r#"ai_proxy_requests_total{model="gpt-4o-mini",provider="openai",status="500"} 1"#
        ),
        "{text}"
    );
}

/// A name over 256 bytes, or with spaces or control characters, is a 400 naming `model` on
/// every front door, and the answer does not repeat it.
#[tokio::test]
async fn overlong_or_odd_model_names_are_refused() {
    let gw = gateway("http://127.0.0.1:9", "");
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for name in [
        format!("mock-1-{}", "C".repeat(1_000_000)),
        format!("mock-{}", "C".repeat(252)),
        "mock-a b".to_owned(),
        "mock-\u{1}".to_owned(),
        "mock-é".to_owned(),
    ] {
        for (path, body) in [
            (
                "/v1/chat/completions",
                json!({"model": name, "messages": msgs}),
            ),
            (
                "/v1/chat/completions",
                json!({"model": name, "messages": msgs, "stream": true}),
            ),
            ("/v1/completions", json!({"model": name, "prompt": "hi"})),
            ("/v1/embeddings", json!({"model": name, "input": "hi"})),
        ] {
            let r = post(&gw, path, &body).await;
            assert_eq!(r.status(), 400, "{path}");
            assert!(r.headers().get("x-switchyard-model").is_none());
            let text = r.text().await.unwrap();
            assert!(text.len() < 1000, "{path}: {} bytes", text.len());
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            assert_eq!(v["error"]["param"], "model", "{v}");
        }
    }
    // Exactly 256 bytes is fine.
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": format!("mock-{}", "C".repeat(251)), "messages": msgs}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // GET /v1/models/{id} checks the id the same way.
    let r = client()
        .get(format!("{}/v1/models/{}", gw.base, "m".repeat(300)))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// One streamed request with an 8 MB prompt to the mock provider gets a bounded answer (the
/// mock echoes a bounded prefix, 256 words by default), and `/health` answers while that
/// stream is open. Three at once, to be sure no worker is taken.
#[tokio::test]
async fn mock_answers_an_8_mb_prompt_with_a_bounded_stream() {
    let gw = gateway("http://127.0.0.1:9", "");
    let prompt = "word ".repeat((8 << 20) / 5); // 8 MiB, 1.6 M words
    let body = serde_json::to_vec(&json!({
        "model": "mock-big", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prompt}],
    }))
    .unwrap();
    assert!(body.len() > 8 << 20);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    // Every stream has started and none is read to the end: /health still answers.
    let mut firsts = Vec::new();
    for r in &mut streams {
        firsts.push(r.chunk().await.unwrap().unwrap());
    }
    for _ in 0..5 {
        let h = client()
            .get(format!("{}/health", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
    }
    for (r, first) in streams.into_iter().zip(firsts) {
        let (rest, _) = read_chunks(r).await;
        let total = first.len() + rest.len();
        assert!(total < 256 * 1024, "the answer is {total} bytes");
        let text = String::from_utf8_lossy(&rest);
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(text.contains(r#""completion_tokens":256"#), "{text}");
        assert!(text.contains(r#""prompt_tokens":1677721"#), "{text}");
        assert!(text.contains(r#""finish_reason":"length""#), "{text}");
    }
}

/// The request bodies held at once are bounded (`server.max_inflight_body_bytes`): while one
/// 700 KB body waits on a slow upstream, a second that would exceed 1 MiB is refused at once
/// with 503 and `Retry-After`; once the first is answered its bytes are free again.
#[tokio::test]
async fn bodies_in_flight_share_one_memory_budget() {
    let up = MockUpstream::start(|_| {
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Full(
                200,
                vec![],
                chat_completion("gpt-4-0125-preview", "ok", 1, 1),
            )),
        )
    });
    let gw = gateway(
        &up.url(),
        "  max_request_body_bytes: 1048576\n  max_inflight_body_bytes: 1048576\n",
    );
    let body = serde_json::to_vec(&json!({
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "x".repeat(700 * 1024)}],
    }))
    .unwrap();
    let send = |body: Vec<u8>| {
        client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = tokio::spawn(send(body.clone()));
    // The first body is held once the upstream has it.
    let until = Instant::now() + Duration::from_secs(10);
    while up.recorded().is_empty() {
        assert!(
            Instant::now() < until,
            "the first request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_bodies_over_budget", "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    // A small body still fits beside the first.
    let small = send(
        serde_json::to_vec(
            &json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    let third = send(body).await.unwrap();
    assert_eq!(third.status(), 200);
    metrics_containing(
        &gw.metrics_url,
        &[r#"ai_proxy_limit_refusals_total{limit="body_memory"} 1"#],
    )
    .await;
}

/// Opens a connection that declares a `len`-byte chat body and sends one byte of it.
async fn stalled_upload(addr: &str, len: usize) -> tokio::net::TcpStream {
    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    held.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{",
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    held
}

/// A body sent in chunks without a length takes its bytes as they arrive: refused once the
/// budget is spent.
#[tokio::test]
async fn a_chunked_body_is_held_to_the_budget_too() {
    let gw = gateway(
        "http://127.0.0.1:9",
        "  max_request_body_bytes: 1048576\n  max_inflight_body_bytes: 1048576\n",
    );
    // Hold 700 KB with a stalled upload: Content-Length declared, body never finished.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut held = stalled_upload(&addr, 700 * 1024).await;
    // Chunked: 3 × 128 KB; the budget has 324 KB left, so the third chunk does not fit.
    let piece = "x".repeat(128 * 1024);
    let chunks = [
        format!(r#"{{"model":"mock-a","messages":[{{"role":"user","content":"{piece}"#),
        piece.clone(),
        format!(r#"{piece}"}}]}}"#),
    ];
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let parts: Vec<Result<String, std::io::Error>> = chunks.iter().cloned().map(Ok).collect();
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            )))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
            break;
        }
        // The stalled upload may not be holding its bytes yet: try again. If its headers were
        // read while a chunked body held part of the budget, it was refused (503, connection
        // closed) and holds nothing: open it again.
        assert_eq!(r.status(), 200);
        assert!(Instant::now() < until, "never refused");
        let mut answer = [0u8; 64];
        match held.try_read(&mut answer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => held = stalled_upload(&addr, 700 * 1024).await,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
}
