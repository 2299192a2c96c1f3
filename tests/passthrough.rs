//! Native passthrough: byte-exact both ways, caller key swapped for the provider's, and no
//! path or header trick reaching anything but the configured endpoint.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn requests_and_responses_pass_byte_exact_with_the_key_swapped() {
    // Odd formatting on purpose: a re-serializing proxy would change these bytes.
    let response = b"{ \"id\" : \"chatcmpl-x\",\n  \"model\":\"gpt-4o\", \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 5, \"total_tokens\": 8}, \"pad\":\"\xc3\xa9\" }".to_vec();
    let r2 = response.clone();
    let up = MockUpstream::start(move |_| {
        Reply::Full(
            200,
            vec![
                ("x-request-id".into(), "req_native".into()),
                ("openai-processing-ms".into(), "12".into()),
            ],
            r2.clone(),
        )
    });
    let gw = gateway(&up.url(), "");
    let request = b"{\"model\":  \"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}] , \"x\": 1.50}".to_vec();
    let resp = client()
        .post(format!(
            "{}/providers/openai/v1/chat/completions?api-version=x&a=%20b",
            gw.base
        ))
        .header("x-api-key", GATEWAY_KEY)
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("x-switchyard-debug", "1")
        .header("openai-beta", "assistants=v2")
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-request-id"],
        "req_native",
        "the provider's own request id is kept"
    );
    assert_eq!(resp.headers()["openai-processing-ms"], "12");
    assert!(resp.headers().contains_key("x-switchyard-request-id"));
    assert_eq!(
        resp.bytes().await.unwrap().to_vec(),
        response,
        "response bytes changed"
    );

    let seen = up.last();
    assert_eq!(seen.path, "/v1/chat/completions?api-version=x&a=%20b");
    assert_eq!(seen.body, request, "request bytes changed");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        seen.header("openai-beta"),
        Some("assistants=v2"),
        "other headers pass through"
    );
    seen.assert_host(up.addr);
    assert!(seen.header("x-api-key").is_none() && seen.header("x-switchyard-debug").is_none());
    seen.assert_no_gateway_key();

    metrics_containing(
        &gw.metrics_url,
        &[r#"ai_proxy_tokens_total{model="gpt-4o",provider="openai",type="output"} 5"#],
    )
    .await;
}

#[tokio::test]
async fn streams_pass_through_unchanged_and_are_metered() {
    let stream = chat_stream("gpt-4o", &["one", " two", " ✓"], 6);
    let pieces: Vec<Vec<u8>> = stream.chunks(17).map(<[u8]>::to_vec).collect();
    let up = MockUpstream::start(move |_| Reply::Stream(pieces.clone(), Duration::from_millis(1)));
    let gw = gateway(&up.url(), "");
    let resp = client()
        .post(format!("{}/transparent/openai/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .body(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), stream);
    metrics_containing(
        &gw.metrics_url,
        &[r#"ai_proxy_tokens_total{model="gpt-4o",provider="openai",type="input"} 6"#],
    )
    .await;
}

#[tokio::test]
async fn upstream_statuses_pass_through_unchanged() {
    let up = MockUpstream::start(|_| {
        Reply::Full(429, vec![("retry-after".into(), "3".into())], br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.to_vec())
    });
    let gw = gateway(&up.url(), "");
    let r = client()
        .get(format!("{}/providers/openai/v1/models", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert!(r.text().await.unwrap().contains("slow down"));
}

/// Sends a raw HTTP/1.1 request (so nothing normalizes the path) and returns status and body.
fn raw(base: &str, request: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[test]
fn no_path_or_header_trick_leaves_the_configured_endpoint() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(&up.url(), "");
    let key = format!("Authorization: Bearer {GATEWAY_KEY}\r\n");
    for target in [
        "/providers/openai/v1/../../admin",
        "/providers/openai/v1/%2e%2e/%2e%2e/admin",
        "/providers/openai/%2F%2Fevil.example/x",
        "/providers/openai//evil.example/x",
        "/providers/openai/v1/..%5c..%5cadmin",
        "http://evil.example/providers/openai/v1/models",
        "/providers/openai",
    ] {
        let (status, body) = raw(
            &gw.base,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: evil.example\r\n{key}Connection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, 400, "{target}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{target}");
    }
    assert!(
        up.recorded().is_empty(),
        "a rejected request reached the upstream"
    );

    // A hostile Host header does not change where the request goes or what Host it carries.
    let (status, _) = raw(&gw.base, &format!("GET /providers/openai/v1/models HTTP/1.1\r\nHost: evil.example\r\n{key}Connection: close\r\n\r\n"));
    assert_eq!(status, 200);
    up.last().assert_host(up.addr);

    let (status, _) = raw(
        &gw.base,
        &format!(
            "GET /providers/nope/v1/models HTTP/1.1\r\nHost: x\r\n{key}Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 404);
    let (status, _) = raw(
        &gw.base,
        &format!(
            "GET /providers/mock/v1/models HTTP/1.1\r\nHost: x\r\n{key}Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 404);
    let (status, _) = raw(
        &gw.base,
        "GET /providers/openai/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_502_envelope() {
    let gw = gateway(&format!("http://127.0.0.1:{}", free_port()), "");
    let r = client()
        .get(format!("{}/providers/openai/v1/models", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
}
