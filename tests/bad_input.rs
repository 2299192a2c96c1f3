//! The bad-input suite: malformed HTTP, oversize and too many headers, invalid UTF-8, deeply
//! nested JSON, huge arrays, unknown fields and wrong types, each answered with the right
//! status (in the OpenAI envelope whenever the gateway's hooks run), never a panic or a hang.
//!
//! Where Pingora's HTTP/1 parser refuses a request before any hook runs (malformed request
//! line or header syntax, more than 256 header fields, a header block over 1 MiB), the answer
//! is Pingora's bare `400 Bad Request` and the connection is closed; the tests pin that.

mod support;

use serde_json::{json, Value};
use support::*;

async fn post(base: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Asserts a 400 `invalid_request_error` envelope and returns its `param`.
async fn invalid(resp: reqwest::Response, what: &str) -> Value {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{what}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(v["error"].get("code").is_some(), "{what}: {v}");
    v["error"]["param"].clone()
}

#[tokio::test]
async fn malformed_http_gets_a_bare_400_and_a_closed_connection() {
    let gw = gateway("http://127.0.0.1:9", "");
    let many: String = (0..300).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1_100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("no version", b"GET /health\r\nHost: x\r\n\r\n".to_vec()),
        (
            "bad version",
            b"GET /health HTTP/9.x\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "header without colon",
            b"GET /health HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "space before colon",
            b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
        ),
        (
            "control byte in a header",
            b"GET /health HTTP/1.1\r\nX-A: a\x01b\r\n\r\n".to_vec(),
        ),
        (
            "obs-fold",
            b"GET /health HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
        ),
        (
            "too many headers (over Pingora's 256)",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
        ),
        ("header block over 1 MiB", huge.into_bytes()),
    ];
    for (what, req) in cases {
        let (status, text) = raw_http(&gw.base, &req);
        assert_eq!(status, 400, "{what}: {}", &text[..text.len().min(300)]);
    }
    // The gateway is still serving.
    let (status, _) = raw_http(
        &gw.base,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

#[tokio::test]
async fn headers_over_our_limits_but_under_pingoras_are_431_envelopes() {
    let gw = gateway("http://127.0.0.1:9", "");
    let many: String = (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let big = "a".repeat(40 * 1024);
    for (what, extra) in [
        ("150 fields", many),
        ("40 KiB", format!("X-Big: {big}\r\n")),
    ] {
        let req = format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\n{extra}Connection: close\r\n\r\n"
        );
        let (status, text) = raw_http(&gw.base, req.as_bytes());
        assert_eq!(status, 431, "{what}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["error"]["code"], "request_header_fields_too_large",
            "{what}"
        );
        assert!(!text.contains(GATEWAY_KEY));
    }
}

#[tokio::test]
async fn broken_json_bodies_are_400_envelopes() {
    let gw = gateway("http://127.0.0.1:9", "");
    let mut bad_utf8 = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    let mut nested = br#"{"model":"gpt-4o-mini","messages":"#.to_vec();
    nested.extend(std::iter::repeat_n(b'[', 100_000));
    let mut nested_objects =
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"metadata":"#
            .to_vec();
    for _ in 0..50_000 {
        nested_objects.extend_from_slice(br#"{"a":"#);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 in a string", bad_utf8),
        ("100k nested arrays", nested),
        ("50k nested objects", nested_objects),
        (
            "truncated",
            br#"{"model":"gpt-4o-mini","messages":[{"#.to_vec(),
        ),
        (
            "trailing garbage",
            br#"{"model":"gpt-4o-mini","messages":[]} x"#.to_vec(),
        ),
        ("not an object", b"[1,2,3]".to_vec()),
        ("empty", Vec::new()),
        (
            "NaN",
            br#"{"model":"gpt-4o-mini","temperature":NaN,"messages":[]}"#.to_vec(),
        ),
    ];
    for (what, body) in cases {
        invalid(post(&gw.base, body).await, what).await;
    }
}

#[tokio::test]
async fn huge_arrays_within_the_body_limit_are_handled() {
    let gw = gateway("http://127.0.0.1:9", "");
    // 1M wrongly typed elements (2 MB): refused, naming the first bad one.
    let mut body = br#"{"model":"gpt-4o-mini","messages":["#.to_vec();
    for i in 0..1_000_000 {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'0');
    }
    body.extend_from_slice(b"]}");
    let param = invalid(post(&gw.base, body).await, "1M numbers").await;
    assert!(
        param.as_str().is_some_and(|p| p.starts_with("messages")),
        "{param}"
    );
    // 100k valid messages (about 3 MB): answered.
    let msgs: Vec<Value> = (0..100_000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let body = serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": msgs})).unwrap();
    let r = post(&gw.base, body).await;
    assert_eq!(r.status(), 200);
    // Over the body limit (11 MB sent): 413 before any of it is read. The whole body is
    // written before the answer is read, as HTTP clients do: the gateway's lingering close
    // reads and drops it, so the answer is not reset away.
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        11 * 1024 * 1024
    )
    .into_bytes();
    request.resize(request.len() + 11 * 1024 * 1024, b' ');
    let base = gw.base.clone();
    let (status, text) = tokio::task::spawn_blocking(move || raw_http(&base, &request))
        .await
        .unwrap();
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("request_too_large"), "{text}");
}

#[tokio::test]
async fn unknown_fields_are_accepted() {
    // docs/OPENAI-COMPATIBILITY.md: unknown fields go to OpenAI-shaped upstreams unchanged and
    // are dropped (and listed in x-switchyard-dropped-params) for translated providers.
    let up = MockUpstream::start(|_| {
        Reply::Full(
            200,
            vec![],
            chat_completion("gpt-4-0125-preview", "hi", 1, 1),
        )
    });
    let gw = gateway(&up.url(), "");
    let body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}],
        "frobnicate": {"deep": [1, 2]}, "x_vendor": true});
    let r = post(&gw.base, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().json()["frobnicate"], json!({"deep": [1, 2]}));
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
        "frobnicate": 1});
    let r = post(&gw.base, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn wrong_types_are_400_naming_the_field() {
    // The fields every request needs are checked for any provider. The others are checked
    // when the gateway translates (here for Anthropic, never reached: port 9); to an
    // OpenAI-shaped upstream they go unchanged, and that upstream answers for them.
    let gw = gateway_with(
        "",
        r#"  anthropic:
    endpoint: "http://127.0.0.1:9"
    auth: {method: api_key, config: {api_key: "sk-ant-unused-0000"}}
"#,
        "routing:\n  patterns:\n    - {pattern: \"^claude-\", default_provider: anthropic}\n",
    );
    let base =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("gpt-4o-mini", "model", json!(["gpt-4o-mini"]), "model"),
        ("gpt-4o-mini", "messages", json!("hello"), "messages"),
        ("gpt-4o-mini", "stream", json!(1), "stream"),
        (
            "claude-3-5-sonnet",
            "temperature",
            json!("hot"),
            "temperature",
        ),
        ("claude-3-5-sonnet", "top_p", json!([0.5]), "top_p"),
        (
            "claude-3-5-sonnet",
            "max_tokens",
            json!("many"),
            "max_tokens",
        ),
        ("claude-3-5-sonnet", "stop", json!(5), "stop"),
        (
            "claude-3-5-sonnet",
            "tools",
            json!({"type": "function"}),
            "tools",
        ),
    ];
    for (model, field, value, param) in cases {
        let mut body = base(model);
        body[field] = value;
        let got = invalid(
            post(&gw.base, serde_json::to_vec(&body).unwrap()).await,
            field,
        )
        .await;
        assert!(
            got.as_str().is_some_and(|p| p.starts_with(param)),
            "{field}: param {got}"
        );
    }
    for (what, message, param) in [
        ("role", json!({"role": 5, "content": "x"}), "messages[0]"),
        (
            "content",
            json!({"role": "user", "content": 5}),
            "messages[0]",
        ),
        ("message", json!("hi"), "messages[0]"),
    ] {
        let mut body = base("claude-3-5-sonnet");
        body["messages"] = json!([message]);
        let got = invalid(
            post(&gw.base, serde_json::to_vec(&body).unwrap()).await,
            what,
        )
        .await;
        assert!(
            got.as_str().is_some_and(|p| p.starts_with(param)),
            "{what}: param {got}"
        );
    }
}
