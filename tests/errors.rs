//! Every refusal in the OpenAI envelope with the right status: bad input, auth, routing,
//! size limits, and upstream failures.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

async fn expect_error(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "x"}]})
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let gw = gateway("http://127.0.0.1:9", "");
    let url = format!("{}/v1/chat/completions", gw.base);
    let v = expect_error(
        client()
            .post(&url)
            .json(&chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let v = expect_error(
        client()
            .post(&url)
            .bearer_auth("sk-wrong-key-000")
            .json(&chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert!(
        !v.to_string().contains("sk-wrong"),
        "the presented key is echoed"
    );
    for header in ["x-api-key", "api-key", "x-goog-api-key"] {
        let r = client()
            .post(&url)
            .header(header, GATEWAY_KEY)
            .json(&chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{header}");
    }
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_parameter() {
    let gw = gateway("http://127.0.0.1:9", "");
    let url = format!("{}/v1/chat/completions", gw.base);
    let send = |body: &'static str| {
        client()
            .post(&url)
            .bearer_auth(GATEWAY_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, param) in [
        ("{not json", Value::Null),
        ("[]", Value::Null),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            json!("model"),
        ),
        (
            r#"{"model":42,"messages":[{"role":"user","content":"x"}]}"#,
            json!("model"),
        ),
        (r#"{"model":"gpt-4o-mini"}"#, json!("messages")),
        (
            r#"{"model":"gpt-4o-mini","messages":{}}"#,
            json!("messages"),
        ),
        (
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            json!("stream"),
        ),
        ("\u{0}\u{1}", Value::Null),
    ] {
        let v = expect_error(send(body).await.unwrap(), 400).await;
        assert_eq!(v["error"]["param"], param, "{body}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let r = client()
        .post(format!("{}/v1/embeddings", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "mock-e", "input": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(r, 400).await["error"]["param"], "input");
}

#[tokio::test]
async fn unknown_models_and_routes_are_404_and_wrong_methods_405() {
    let gw = gateway("http://127.0.0.1:9", "");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat("gpt4o-mini"))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 404).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o-mini"),
        "suggestion missing: {v}"
    );
    let call = |method: reqwest::Method, path: &str| {
        client()
            .request(method, format!("{}{path}", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .send()
    };
    expect_error(call(reqwest::Method::GET, "/v1/nope").await.unwrap(), 404).await;
    expect_error(
        call(reqwest::Method::GET, "/v1/models/ghost-model")
            .await
            .unwrap(),
        404,
    )
    .await;
    let r = call(reqwest::Method::GET, "/v1/chat/completions")
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    expect_error(r, 405).await;
    expect_error(
        call(reqwest::Method::DELETE, "/v1/models").await.unwrap(),
        405,
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    let gw = gateway("http://127.0.0.1:9", "  max_request_body_bytes: 1024");
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "y".repeat(4096)}]});
    let url = format!("{}/v1/chat/completions", gw.base);
    let v = expect_error(
        client()
            .post(&url)
            .bearer_auth(GATEWAY_KEY)
            .json(&big)
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    assert_eq!(v["error"]["code"], "request_too_large");
    // Chunked, so no Content-Length announces the size.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = client()
        .post(&url)
        .bearer_auth(GATEWAY_KEY)
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(r, 413).await;
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_is_504() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = gateway(&closed, "");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat("gpt-4"))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 502).await;
    assert_eq!(v["error"]["code"], "upstream_unreachable");

    let slow = MockUpstream::start(|_| {
        Reply::Delay(
            Duration::from_secs(5),
            Box::new(Reply::Full(200, vec![], b"{}".to_vec())),
        )
    });
    let gw = gateway(&slow.url(), "  upstream_read_timeout_seconds: 1");
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&chat("gpt-4"))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 504).await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_errors_keep_status_and_retry_after() {
    let up = MockUpstream::start(|r| {
        match r.json()["model"].as_str() {
        Some("gpt-limited") => Reply::Full(429, vec![("retry-after".into(), "7".into()), ("x-ratelimit-remaining-requests".into(), "0".into())],
            br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_vec()),
        Some("gpt-down") => Reply::Full(503, vec![], b"<html>bad gateway</html>".to_vec()),
        _ => Reply::Full(401, vec![], br#"{"error":{"message":"Incorrect API key provided: sk-up***42","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#.to_vec()),
    }
    });
    let gw = gateway(&up.url(), "");
    let send = |m: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&chat(m))
            .send()
    };
    let r = send("gpt-limited").await.unwrap();
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let v = expect_error(r, 429).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let v = expect_error(send("gpt-down").await.unwrap(), 503).await;
    assert_eq!(v["error"]["type"], "server_error");
    // The provider refusing the gateway's own key is not the caller's fault: 502, and the
    // provider's message (which quotes part of that key) is not relayed.
    let v = expect_error(send("gpt-4").await.unwrap(), 502).await;
    assert_eq!(v["error"]["code"], "upstream_credentials_rejected");
    assert!(!v.to_string().contains("sk-up"));
}
