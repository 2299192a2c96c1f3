//! Anthropic native passthrough: `/providers/anthropic/v1/messages` reaches a mock that checks
//! `x-api-key` like api.anthropic.com; bytes pass unchanged both ways (SSE too), the caller's
//! gateway key never reaches the mock, `anthropic-version` is added only when missing, and
//! usage is metered.

mod support;

use support::anthropic::*;
use support::*;

fn anthropic_gateway(upstream_url: &str, key: &str) -> Gateway {
    gateway_with(
        "",
        &format!(
            r#"  anthropic:
    endpoint: "{upstream_url}"
    auth: {{method: api_key, config: {{api_key: "{key}"}}}}
"#
        ),
        "",
    )
}

/// Sends a Messages request the way the anthropic SDK does (gateway key as `x-api-key`).
async fn post(
    gw: &Gateway,
    body: &[u8],
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client()
        .post(format!("{}/providers/anthropic/v1/messages", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn messages_pass_byte_exact_with_the_key_swapped_and_usage_metered() {
    let reply = message("Hello from the mock Claude!", 12, 7);
    let r2 = reply.clone();
    let mock = MockAnthropic::start(move |_| {
        Reply::Full(
            200,
            vec![
                ("request-id".into(), "req_011CMock".into()),
                ("anthropic-ratelimit-requests-remaining".into(), "49".into()),
            ],
            r2.clone(),
        )
    });
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    // Odd spacing on purpose: a re-serializing proxy would change these bytes.
    let body = br#"{"model": "claude-3-5-sonnet-20241022",  "max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude \u00e9"}]}"#;
    let (status, headers, got) = post(
        &gw,
        body,
        &[
            (
                "anthropic-beta",
                "prompt-caching-2024-07-31,pdfs-2024-09-25",
            ),
            ("x-stainless-lang", "python"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
    assert_eq!(got, reply, "response bytes changed");
    assert_eq!(headers["request-id"], "req_011CMock");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "49");

    assert_eq!(mock.verdicts(), vec![Verdict::Accepted]);
    let seen = mock.upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.body, body.to_vec(), "request bytes changed");
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(
        seen.header("anthropic-version"),
        Some("2023-06-01"),
        "added when the caller sent none"
    );
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,pdfs-2024-09-25"),
        "anthropic-beta passes through"
    );
    assert_eq!(seen.header("x-stainless-lang"), Some("python"));
    seen.assert_host(mock.upstream.addr);
    seen.assert_no_gateway_key();

    assert_tokens_metered(&gw, "anthropic", MODEL, 12, 7).await;
}

#[tokio::test]
async fn streams_pass_byte_exact_as_they_arrive_and_are_metered() {
    let stream = message_stream(&["Hello", " from", " a", " stream", "!"], 25, 15);
    // Every event name Anthropic documents is there, in its order.
    let text = String::from_utf8(stream.clone()).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let s2 = stream.clone();
    // 7-byte pieces: boundaries fall mid-line and mid-event.
    let mock = MockAnthropic::start(move |_| stream_reply(&s2, 7));
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    let body = br#"{"model":"claude-3-5-sonnet-20241022","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Stream please"}]}"#;
    let resp = client()
        .post(format!("{}/providers/anthropic/v1/messages", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (got, chunks) = read_chunks(resp).await;
    assert_eq!(got, stream, "SSE bytes changed");
    assert!(chunks > 1, "the stream was buffered into one piece");
    let seen = mock.upstream.last();
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    seen.assert_no_gateway_key();
    assert_tokens_metered(&gw, "anthropic", MODEL, 25, 15).await;
}

#[tokio::test]
async fn the_callers_anthropic_version_is_kept_not_duplicated() {
    let mock = MockAnthropic::start(|_| Reply::Full(200, vec![], message("ok", 1, 1)));
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    let (status, _, _) = post(&gw, b"{}", &[("anthropic-version", "2024-10-22")]).await;
    assert_eq!(status, 200);
    let seen = mock.upstream.last();
    let versions: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "anthropic-version")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(versions, ["2024-10-22"]);
}

#[tokio::test]
async fn every_caller_key_header_is_removed_and_cannot_override_the_key() {
    let mock = MockAnthropic::start(|_| Reply::Full(200, vec![], message("ok", 1, 1)));
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    // The caller authenticates with Authorization and also tries to smuggle its own x-api-key
    // and api-key: none of them may reach Anthropic.
    let resp = client()
        .post(format!("{}/providers/anthropic/v1/messages", gw.base))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("api-key", "sk-ant-callers-own-key")
        .header("x-goog-api-key", GATEWAY_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.upstream.last();
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert!(seen.header("authorization").is_none());
    assert!(seen.header("api-key").is_none() && seen.header("x-goog-api-key").is_none());
    seen.assert_no_gateway_key();
    assert!(!seen.everything().contains("sk-ant-callers-own-key"));
}

#[tokio::test]
async fn a_wrong_key_is_rejected_by_the_verifying_mock_and_the_error_passes_unchanged() {
    let mock = MockAnthropic::start(|_| Reply::Full(200, vec![], message("ok", 1, 1)));
    // A tampered credential: one character off.
    let tampered = format!("{}x", &ANTHROPIC_KEY[..ANTHROPIC_KEY.len() - 1]);
    let gw = anthropic_gateway(&mock.upstream.url(), &tampered);
    let (status, headers, body) = post(&gw, b"{}", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        error_body("authentication_error", "invalid x-api-key")
    );
    assert_eq!(headers["request-id"], "req_mock_401");
    assert_eq!(mock.verdicts(), vec![Verdict::Rejected("x-api-key")]);
    // The verifying mock itself: no key, or the caller's gateway key, is refused too.
    for key in [None, Some(GATEWAY_KEY)] {
        let mut req = client()
            .post(format!("{}/v1/messages", mock.upstream.url()))
            .header("anthropic-version", "2023-06-01")
            .body("{}");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
}

#[tokio::test]
async fn upstream_errors_keep_status_body_and_retry_after() {
    let err = error_body(
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
    );
    let e2 = err.clone();
    let mock = MockAnthropic::start(move |_| {
        Reply::Full(429, vec![("retry-after".into(), "17".into())], e2.clone())
    });
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    let (status, headers, body) = post(&gw, b"{}", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "17");
    assert_eq!(body, err);
}

#[tokio::test]
async fn the_gateway_key_is_still_required() {
    let mock = MockAnthropic::start(|_| Reply::Full(200, vec![], message("ok", 1, 1)));
    let gw = anthropic_gateway(&mock.upstream.url(), ANTHROPIC_KEY);
    // The provider's own key is not a gateway key.
    let resp = client()
        .post(format!("{}/providers/anthropic/v1/messages", gw.base))
        .header("x-api-key", ANTHROPIC_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(mock.upstream.recorded().is_empty());
}
