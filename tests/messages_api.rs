//! The Anthropic Messages front door (`/v1/messages`, `/v1/messages/count_tokens`) through an
//! in-process gateway: the mock provider (through the OpenAI dialect), a scripted Anthropic
//! upstream (the same-dialect fast path: byte-exact bodies, beta headers, model rewritten,
//! count_tokens, fallback on 529), and every gateway error in Anthropic's envelope.

mod support;

use serde_json::{json, Value};
use support::*;

async fn post(gw: &Gateway, path: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if !headers.iter().any(|(k, _)| *k == "anthropic-version") {
        req = req.header("anthropic-version", "2023-06-01");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The `(event, data)` pairs of a Messages stream.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (ev, data) = e.split_once('\n').expect("event and data lines");
            (
                ev.strip_prefix("event: ").expect("event line").to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap(),
            )
        })
        .collect()
}

async fn assert_anthropic_error(resp: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers().contains_key("request-id"),
        "request-id header"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    v
}

const HELLO: &str = r#"{"model":"mock-fast","max_tokens":50,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":"Hello there"}]}"#;

#[tokio::test]
async fn the_mock_answers_messages_and_streams() {
    let gw = gateway("http://127.0.0.1:9", "");
    let resp = post(&gw, "/v1/messages", HELLO, &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "mock-fast");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Hello there"));
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let body = HELLO.replace("\"max_tokens\":50", "\"max_tokens\":3,\"stream\":true");
    let resp = post(&gw, "/v1/messages", &body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let evs = events(&resp.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(evs[0].1["message"]["model"], "mock-fast");
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 3);

    let metrics = metrics_containing(
        &gw.metrics_url,
        &[
            r#"ai_proxy_requests_total{model="mock-fast",provider="mock",status="200"} 2"#,
            r#"ai_proxy_messages_requests_total{target_provider="mock"} 2"#,
        ],
    )
    .await;
    assert!(!metrics.contains(r#"ai_proxy_openai_requests_total{target_provider="mock"}"#));
}

#[tokio::test]
async fn count_tokens_estimates_where_the_host_cannot_count() {
    let gw = gateway("http://127.0.0.1:9", "");
    let body = r#"{"model":"mock-fast","messages":[{"role":"user","content":"Count these words, please, all of them."}]}"#;
    let resp = post(&gw, "/v1/messages/count_tokens", body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-token-count"], "estimated");
    let v: Value = resp.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() >= 5, "{v}");
}

#[tokio::test]
async fn gateway_errors_use_anthropics_envelope() {
    let gw = gateway("http://127.0.0.1:9", "  max_request_body_bytes: 4096");
    // Wrong key: authentication_error.
    let resp = client()
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", "sk-wrong")
        .body(HELLO)
        .send()
        .await
        .unwrap();
    assert_anthropic_error(resp, 401, "authentication_error").await;
    // Unknown model: not_found_error.
    let body = HELLO.replace("mock-fast", "no-such-model");
    assert_anthropic_error(
        post(&gw, "/v1/messages", &body, &[]).await,
        404,
        "not_found_error",
    )
    .await;
    // Missing max_tokens, bad JSON, a URL-source document block on a non-Claude host: invalid_request_error.
    let body = HELLO.replace("\"max_tokens\":50,", "");
    let v = assert_anthropic_error(
        post(&gw, "/v1/messages", &body, &[]).await,
        400,
        "invalid_request_error",
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    assert_anthropic_error(
        post(&gw, "/v1/messages", "{not json", &[]).await,
        400,
        "invalid_request_error",
    )
    .await;
    let body = r#"{"model":"mock-fast","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}}]}]}"#;
    let v = assert_anthropic_error(
        post(&gw, "/v1/messages", body, &[]).await,
        400,
        "invalid_request_error",
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("document"));
    // Too large: request_too_large.
    let big = format!(
        r#"{{"model":"mock-fast","max_tokens":5,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8192)
    );
    assert_anthropic_error(
        post(&gw, "/v1/messages", &big, &[]).await,
        413,
        "request_too_large",
    )
    .await;
    // A provider's failures: rate_limit_error (with retry-after) and api_error.
    let body = HELLO.replace("mock-fast", "mock-error-429");
    assert_anthropic_error(
        post(&gw, "/v1/messages", &body, &[]).await,
        429,
        "rate_limit_error",
    )
    .await;
    let body = HELLO.replace("mock-fast", "mock-error-500");
    assert_anthropic_error(
        post(&gw, "/v1/messages", &body, &[]).await,
        500,
        "api_error",
    )
    .await;
    // GET: still the Anthropic envelope.
    let resp = client()
        .get(format!("{}/v1/messages", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
}

/// A Messages request the way a coding agent sends it, with fields a translation would lose.
const AGENT: &str = r#"{"model":"claude-agent","max_tokens":1024,
 "system":[{"type":"text","text":"You are a coding agent.","cache_control":{"type":"ephemeral"}}],
 "thinking":{"type":"enabled","budget_tokens":1.0e3},
 "metadata":{"user_id":"user-7"},
 "tools":[{"name":"read_file","description":"Read","input_schema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]},"cache_control":{"type":"ephemeral"}}],
 "messages":[{"role":"user","content":"Fix the bug"},
   {"role":"assistant","content":[{"type":"thinking","thinking":"Look first.","signature":"EqQBCkgIARABGAIiQ=="},{"type":"tool_use","id":"toolu_01","name":"read_file","input":{"path":"src/main.rs"}}]},
   {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"fn main() {}"}]}],
 "future_field":{"x":[1,2.50,"\u00e9"]}}"#;

fn message_answer(model: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": model, "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 300, "output_tokens": 4}
    }))
    .unwrap()
}

fn anthropic_gateway(primary: &str, fallback: bool) -> Gateway {
    let providers = format!(
        r#"  anthropic:
    endpoint: "{primary}"
    auth: {{method: api_key, config: {{api_key: "sk-ant-upstream"}}}}
"#
    );
    let routes = if fallback {
        "model_mappings:\n  claude-agent:\n    default_provider: anthropic\n    providers:\n      anthropic: {model: claude-sonnet-4-20250514}\n      mock: {model: mock-fast}\nrouting:\n  fallback: {enabled: true}\n"
    } else {
        "model_mappings:\n  claude-agent: {default_provider: anthropic, providers: {anthropic: {model: claude-sonnet-4-20250514}}}\n"
    };
    gateway_with("", &providers, routes)
}

#[tokio::test]
async fn claude_hosts_get_the_callers_body_with_only_the_model_changed() {
    let up = MockUpstream::start(|rec| {
        if rec.path == "/v1/messages/count_tokens" {
            return Reply::Full(200, vec![], br#"{"input_tokens":1234}"#.to_vec());
        }
        Reply::Full(200, vec![], message_answer("claude-sonnet-4-20250514"))
    });
    let gw = anthropic_gateway(&up.url(), false);
    let beta = "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31";
    let headers = [
        ("anthropic-beta", beta),
        ("anthropic-version", "2023-01-01"),
    ];
    let resp = post(&gw, "/v1/messages", AGENT, &headers).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-switchyard-dropped-params"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["model"], "claude-agent",
        "the client's model name comes back"
    );
    assert_eq!(v["usage"]["cache_read_input_tokens"], 300);

    let seen = up.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(seen.header("anthropic-beta"), Some(beta));
    assert_eq!(
        seen.header("anthropic-version"),
        Some("2023-01-01"),
        "the caller's version is forwarded"
    );
    seen.assert_no_gateway_key();
    let want = AGENT.replace("\"claude-agent\"", "\"claude-sonnet-4-20250514\"");
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        want,
        "every byte but the model's reaches the host"
    );

    let body = r#"{"model":"claude-agent","messages":[{"role":"user","content":"hi"}]}"#;
    let resp = post(&gw, "/v1/messages/count_tokens", body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-token-count"], "provider");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"input_tokens": 1234}));
    assert_eq!(up.last().json()["model"], "claude-sonnet-4-20250514");
}

#[tokio::test]
async fn anthropic_errors_pass_through_and_529_falls_back() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            529,
            vec![],
            serde_json::to_vec(
                &json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
            )
            .unwrap(),
        )
    });
    // Alone: the host's own 529 envelope reaches the client as it is.
    let gw = anthropic_gateway(&up.url(), false);
    let v = assert_anthropic_error(
        post(&gw, "/v1/messages", AGENT, &[]).await,
        529,
        "overloaded_error",
    )
    .await;
    assert_eq!(v["error"]["message"], "Overloaded");
    // With a fallback: the next provider answers before any byte reached the client.
    let gw = anthropic_gateway(&up.url(), true);
    let body = AGENT.replace("\"stream\":false", "");
    let resp = post(&gw, "/v1/messages", &body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "mock");
    let dropped = resp.headers()["x-switchyard-dropped-params"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in ["cache_control", "thinking"] {
        assert!(dropped.contains(name), "{dropped}");
    }
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "claude-agent");
    assert_eq!(v["type"], "message");
}

#[tokio::test]
async fn anthropic_streams_are_relayed_with_the_clients_model() {
    let sse = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCkgI\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let up = MockUpstream::start(move |_| {
        Reply::Full(
            200,
            vec![("content-type".into(), "text/event-stream".into())],
            sse.as_bytes().to_vec(),
        )
    });
    let gw = anthropic_gateway(&up.url(), false);
    let body = AGENT.replacen("{\"model\"", "{\"stream\":true,\"model\"", 1);
    let resp = post(&gw, "/v1/messages", &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let want = sse.replace("claude-sonnet-4-20250514", "claude-agent");
    assert_eq!(text, want, "only message_start's model changes");
    assert_eq!(up.last().json()["stream"], true);
    assert_tokens_metered(&gw, "anthropic", "claude-agent", 25, 15).await;
}

#[tokio::test]
async fn anthropic_clients_list_models_in_anthropics_shape() {
    let gw = gateway("http://127.0.0.1:9", "");
    let get = |path: &str, anthropic: bool| {
        let mut req = client()
            .get(format!("{}{path}", gw.base))
            .header("x-api-key", GATEWAY_KEY);
        if anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        req.send()
    };
    let v: Value = get("/v1/models", true).await.unwrap().json().await.unwrap();
    let data = v["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|m| m["type"] == "model"
        && m["display_name"].is_string()
        && m["created_at"].as_str().is_some_and(|t| t.ends_with('Z'))));
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], data[0]["id"]);
    let v: Value = get("/v1/models/gpt-4o-mini", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "model");
    assert_eq!(v["id"], "gpt-4o-mini");
    // OpenAI clients keep OpenAI's shape.
    let v: Value = get("/v1/models", false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
}

/// Messages clients on an OpenAI upstream (through the OpenAI dialect): the text arrives as
/// Messages events, and a stream the provider cuts ends with an `error` event. Claude Code's
/// `?beta=true` query routes like the bare path.
#[tokio::test]
async fn openai_upstreams_serve_messages_clients_and_cut_streams_end_in_an_error_event() {
    let up = MockUpstream::start(|rec| {
        let stream = chat_stream("gpt-4-0125-preview", &["Hel", "lo"], 9);
        if rec.body.windows(4).any(|w| w == b"CUT!") {
            let cut = stream[..stream.len() / 2].to_vec();
            return Reply::StreamCut(vec![cut]);
        }
        Reply::Stream(vec![stream], std::time::Duration::ZERO)
    });
    let gw = gateway(&up.url(), "");
    let body = r#"{"model":"gpt-4","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = post(&gw, "/v1/messages?beta=true", body, &[]).await;
    assert_eq!(resp.status(), 200);
    let evs = events(&resp.text().await.unwrap());
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(evs.last().unwrap().0, "message_stop");
    let sent = up.last().json();
    assert_eq!(sent["model"], "gpt-4-0125-preview");
    assert_eq!(sent["max_completion_tokens"], 20);
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let body = body.replace("\"hi\"", "\"CUT!\"");
    let resp = post(&gw, "/v1/messages", &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let evs = events(&resp.text().await.unwrap());
    let (name, last) = evs.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["type"], "api_error");
}

/// count_tokens on a hedged mapping whose hosts cannot count: the estimate, no upstream call
/// (hedging does not apply to token counts).
#[tokio::test]
async fn count_tokens_on_a_hedged_mapping_is_estimated_without_a_call() {
    let up = MockUpstream::start(|_| Reply::Full(500, vec![], b"{}".to_vec()));
    let providers = format!(
        "  primary:\n    type: openai\n    endpoint: \"{0}\"\n    auth: {{method: api_key, config: {{api_key: k}}}}\n  secondary:\n    type: openai\n    endpoint: \"{0}\"\n    auth: {{method: api_key, config: {{api_key: k}}}}\n",
        up.url()
    );
    let routes = "model_mappings:\n  m: {default_provider: primary, hedge_after_ms: 1, providers: {primary: {}, secondary: {}}}\n";
    let gw = gateway_with("", &providers, routes);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Count these words."}]}"#;
    let resp = post(&gw, "/v1/messages/count_tokens", body, &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-token-count"], "estimated");
    assert!(up.recorded().is_empty(), "no provider was called");
}
