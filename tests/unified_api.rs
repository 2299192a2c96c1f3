//! The unified OpenAI-compatible API through an in-process gateway, against the mock
//! provider and a scripted OpenAI upstream on loopback.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]})
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

#[tokio::test]
async fn openai_route_rewrites_the_model_and_swaps_credentials() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            200,
            vec![("x-request-id".into(), "req_up".into())],
            chat_completion("gpt-4-0125-preview", "Hi!", 9, 3),
        )
    });
    let gw = gateway(&up.url(), "");
    let resp = post(&gw, "/v1/chat/completions", &chat_body("gpt-4", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream-request-id"], "req_up");
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(v["usage"]["total_tokens"], 12);

    let seen = up.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.json()["model"], "gpt-4-0125-preview");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(seen.header("openai-organization"), Some("org-test"));
    seen.assert_no_gateway_key();

    let metrics = metrics_containing(
        &gw.metrics_url,
        &[r#"ai_proxy_requests_total{model="gpt-4",provider="openai",status="200"} 1"#],
    )
    .await;
    assert!(metrics
        .contains(r#"ai_proxy_tokens_total{model="gpt-4",provider="openai",type="input"} 9"#));
    assert!(metrics
        .contains(r#"ai_proxy_tokens_total{model="gpt-4",provider="openai",type="output"} 3"#));
    assert!(metrics.contains("ai_proxy_cost_usd_total{model=\"gpt-4\",provider=\"openai\"}"));
    assert!(metrics.contains("ai_proxy_openai_requests_total{target_provider=\"openai\"} 1"));
    assert!(metrics
        .contains("ai_proxy_translation_duration_seconds_count{from=\"openai\",to=\"openai\"} 1"));
    for legacy in [
        "bedrock_proxy_requests_total",
        "bedrock_proxy_request_duration_seconds",
    ] {
        assert!(metrics.contains(legacy), "{legacy} missing");
    }
}

/// Splits `data` at pseudo-random offsets (deterministic per seed).
fn random_split(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = rng.usize(1..=40).min(data.len() - at);
        out.push(data[at..at + n].to_vec());
        at += n;
    }
    out
}

fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn streams_translate_identically_at_random_split_points() {
    // Multi-byte characters, so splits fall inside UTF-8 sequences too.
    let upstream_stream = chat_stream("gpt-4-0125-preview", &["Grüße", " from", " 東京", " 🚀"], 7);
    let mut expected: Option<String> = None;
    for seed in 0..6u64 {
        let pieces = random_split(&upstream_stream, seed);
        let up =
            MockUpstream::start(move |_| Reply::Stream(pieces.clone(), Duration::from_millis(1)));
        let gw = gateway(&up.url(), "");
        let resp = post(&gw, "/v1/chat/completions", &chat_body("gpt-4", true)).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let body = resp.text().await.unwrap();
        // The gateway always asks the upstream for usage...
        assert_eq!(up.last().json()["stream_options"]["include_usage"], true);
        let events = sse_payloads(&body);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let mut text = String::new();
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(e).unwrap();
            assert_eq!(v["model"], "gpt-4", "client model restored in every chunk");
            // ...but the client, who did not ask, sees no usage.
            assert!(
                v.get("usage").is_none(),
                "usage leaked to a client that did not ask: {e}"
            );
            assert!(!v["choices"].as_array().unwrap().is_empty());
            text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
        assert_eq!(text, "Grüße from 東京 🚀");
        match &expected {
            None => expected = Some(body),
            Some(first) => assert_eq!(&body, first, "seed {seed} differs"),
        }
        metrics_containing(
            &gw.metrics_url,
            &[r#"ai_proxy_tokens_total{model="gpt-4",provider="openai",type="output"} 4"#],
        )
        .await;
    }
}

#[tokio::test]
async fn stream_usage_is_kept_when_the_client_asks() {
    let s = chat_stream("gpt-4-0125-preview", &["a", "b"], 5);
    let up = MockUpstream::start(move |_| Reply::Stream(vec![s.clone()], Duration::ZERO));
    let gw = gateway(&up.url(), "");
    let mut body = chat_body("gpt-4", true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post(&gw, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_payloads(&text);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["model"], "gpt-4");
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event() {
    let s = chat_stream("gpt-4-0125-preview", &["partial"], 5);
    let cut = s[..s.len() / 2].to_vec();
    let up = MockUpstream::start(move |_| Reply::StreamCut(vec![cut.clone()]));
    let gw = gateway(&up.url(), "");
    let text = post(&gw, "/v1/chat/completions", &chat_body("gpt-4", true))
        .await
        .text()
        .await
        .unwrap();
    let events = sse_payloads(&text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn bodies_larger_than_pingoras_retry_buffer_are_forwarded() {
    let up = MockUpstream::start(|r| {
        let n = r.json()["messages"][0]["content"].as_str().unwrap().len();
        Reply::Full(
            200,
            vec![],
            chat_completion("gpt-4-0125-preview", &n.to_string(), 1, 1),
        )
    });
    let gw = gateway(&up.url(), "");
    let big = "x".repeat(300 * 1024);
    let body = json!({"model": "gpt-4", "messages": [{"role": "user", "content": big}]});
    let v: Value = post(&gw, "/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        (300 * 1024).to_string()
    );
}

#[tokio::test]
async fn completions_and_embeddings_reach_the_openai_route() {
    let up = MockUpstream::start(|r| {
        match r.path.as_str() {
        "/v1/completions" => Reply::Full(200, vec![], serde_json::to_vec(&json!({
            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "ok", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})).unwrap()),
        _ => Reply::Full(200, vec![], serde_json::to_vec(&json!({
            "object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}})).unwrap()),
    }
    });
    let gw = gateway(&up.url(), "");
    let v: Value = post(
        &gw,
        "/v1/completions",
        &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "x"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["text"], "ok");
    let v: Value = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"][0]["embedding"][1], 0.2);
    assert_eq!(up.last().path, "/v1/embeddings");
}

#[tokio::test]
async fn mock_provider_answers_without_a_network() {
    let gw = gateway("http://127.0.0.1:9", "");
    let v: Value = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "max_tokens": 4,
        "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "This is a mock");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["model"], "gpt-4o-mini");
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "mock-error-429", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
}

/// Issue 20.6: out-of-range sampling and length values and unknown roles are a 400
/// `invalid_request_error` naming the parameter, before any upstream is called — on the
/// mock, on the OpenAI route and on a translated one (Anthropic) alike.
#[tokio::test]
async fn out_of_range_parameters_are_refused_on_every_route() {
    let up = MockUpstream::start(|_| Reply::Full(500, vec![], b"must not be called".to_vec()));
    let providers = format!(
        "  openai:\n    endpoint: \"{0}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n  anthropic:\n    endpoint: \"{0}\"\n    auth: {{method: api_key, config: {{api_key: sk-ant-test}}}}\n",
        up.url()
    );
    let routes = "model_mappings:\n  claude: {providers: {anthropic: {model: claude-3-5-haiku-20241022}}}\nrouting:\n  patterns:\n    - {pattern: \"^gpt-\", default_provider: openai}\n    - {pattern: \"^mock-\", default_provider: mock}\n";
    let gw = gateway_with("", &providers, routes);
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for model in ["mock-fast", "gpt-4o", "claude"] {
        for (extra, param) in [
            (json!({"temperature": 5}), "temperature"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"top_p": 2}), "top_p"),
            (json!({"n": 0}), "n"),
            (json!({"presence_penalty": -3}), "presence_penalty"),
            (
                json!({"logprobs": true, "top_logprobs": 99}),
                "top_logprobs",
            ),
            (
                json!({"messages": [{"role": "wizard", "content": "hi"}]}),
                "messages[0].role",
            ),
        ] {
            let mut body = json!({"model": model, "messages": msgs});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let resp = post(&gw, "/v1/chat/completions", &body).await;
            assert_eq!(resp.status(), 400, "{model} {extra}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            assert_eq!(v["error"]["param"], param, "{model} {v}");
        }
    }
    let resp = post(
        &gw,
        "/v1/completions",
        &json!({"model": "mock-fast", "prompt": "x", "max_tokens": 0}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(up.recorded().is_empty(), "an upstream was called");
    // In range: answered.
    let body = json!({"model": "mock-fast", "messages": msgs, "temperature": 2, "top_p": 1, "max_tokens": 1, "n": 1});
    assert_eq!(post(&gw, "/v1/chat/completions", &body).await.status(), 200);
}
