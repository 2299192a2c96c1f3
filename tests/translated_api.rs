//! The unified API on providers with their own APIs, through an in-process gateway: the exact
//! upstream requests (paths, headers, signatures checked by independent verifying mocks), the
//! translated answers and streams, provider errors as OpenAI errors, dropped parameters, and
//! streams the provider cuts short. (The openai SDK drives every provider in
//! tests/sdk/test_unified_providers.py.)

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::anthropic::{message, message_stream, split, ANTHROPIC_KEY};
use support::bedrock::{
    AwsKey, MockBedrock, ACCESS_KEY_ID, MODEL_ID, MODEL_PATH, REGION, SECRET_ACCESS_KEY,
    SESSION_TOKEN,
};
use support::*;

fn anthropic_gateway(url: &str) -> Gateway {
    gateway_with(
        "",
        &format!(
            "  anthropic:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: \"{ANTHROPIC_KEY}\"}}}}\n"
        ),
        "model_mappings:\n  claude: {providers: {anthropic: {model: claude-3-5-haiku-20241022}}}\n",
    )
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn anthropic_request_answer_and_dropped_params() {
    let up = MockUpstream::start(|rec| {
        if let Err(reply) = support::anthropic::verify(rec, ANTHROPIC_KEY) {
            return reply;
        }
        Reply::Full(
            200,
            vec![("request-id".into(), "req_a1".into())],
            message("Bonjour!", 21, 3),
        )
    });
    let gw = anthropic_gateway(&up.url());
    let resp = post(
        &gw,
        &json!({"model": "claude", "max_tokens": 50, "logit_bias": {"1": 1}, "seed": 4,
                "messages": [{"role": "system", "content": "Be French."},
                             {"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    let dropped = resp.headers()["x-switchyard-dropped-params"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(dropped.split(',').any(|p| p == "logit_bias"), "{dropped}");
    assert!(dropped.split(',').any(|p| p == "seed"), "{dropped}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 21);
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let seen = up.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    seen.assert_no_gateway_key();
    let body = seen.json();
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["system"], "Be French.");
    let first = &body["messages"][0];
    assert_eq!(first["role"], "user");
    let text = first["content"]
        .as_str()
        .or(first["content"][0]["text"].as_str());
    assert_eq!(text, Some("Hello"), "{body}");
    assert!(body.get("logit_bias").is_none() && body.get("seed").is_none());
    assert_tokens_metered(&gw, "anthropic", "claude", 21, 3).await;
}

#[tokio::test]
async fn anthropic_stream_is_translated_incrementally() {
    let stream = message_stream(&["Hel", "lo ", "wörld"], 9, 4);
    let up =
        MockUpstream::start(move |_| Reply::Stream(split(&stream, 7), Duration::from_millis(1)));
    let gw = anthropic_gateway(&up.url());
    let resp = post(
        &gw,
        &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (body, _) = read_chunks(resp).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut content = String::new();
    let mut usage = None;
    for ev in text
        .split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
    {
        let v: Value = serde_json::from_str(ev.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["model"], "claude");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    assert_eq!(content, "Hello wörld");
    let usage = usage.expect("usage chunk");
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(9), Some(4))
    );
    assert_tokens_metered(&gw, "anthropic", "claude", 9, 4).await;
}

#[tokio::test]
async fn a_provider_stream_cut_short_ends_with_an_error_event() {
    let stream = message_stream(&["one", " two", " three"], 9, 4);
    let cut = stream[..stream.len() / 2].to_vec();
    let up = MockUpstream::start(move |_| Reply::StreamCut(split(&cut, 11)));
    let gw = anthropic_gateway(&up.url());
    let resp = post(&gw, &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(resp.status(), 200);
    let (body, _) = read_chunks(resp).await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(v["error"]["message"].is_string(), "{text}");
}

#[tokio::test]
async fn the_first_translated_bytes_leave_before_the_stream_ends() {
    let stream = message_stream(&["early", " late"], 9, 2);
    let early_at = stream.windows(5).position(|w| w == b"early").unwrap();
    let head_end = early_at
        + stream[early_at..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap()
        + 2;
    let pieces = vec![stream[..head_end].to_vec(), stream[head_end..].to_vec()];
    // The second piece comes 5 s after the first: the first content must not wait for it.
    let up = MockUpstream::start(move |_| Reply::Stream(pieces.clone(), Duration::from_secs(5)));
    let gw = anthropic_gateway(&up.url());
    let mut resp = post(&gw, &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})).await;
    let mut seen = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(4), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            seen.extend_from_slice(&chunk);
            if seen.windows(5).any(|w| w == b"early") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(early, Ok(true), "{}", String::from_utf8_lossy(&seen));
}

#[tokio::test]
async fn provider_errors_become_openai_errors() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            529,
            vec![("retry-after".into(), "2".into())],
            support::anthropic::error_body("overloaded_error", "Overloaded"),
        )
    });
    let gw = anthropic_gateway(&up.url());
    let resp = post(
        &gw,
        &json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Overloaded");
    assert!(v["error"]["type"].is_string());
}

#[tokio::test]
async fn untranslatable_requests_are_refused_before_any_upstream_call() {
    let up = MockUpstream::start(|_| Reply::Full(500, vec![], b"should not be called".to_vec()));
    let gw = anthropic_gateway(&up.url());
    for (body, param) in [
        (
            json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "Hi"}]}),
            "n",
        ),
        (
            json!({"model": "claude", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            // A forced JSON answer cannot also force the caller's tool.
            json!({"model": "claude", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "response_format",
        ),
    ] {
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert!(up.recorded().is_empty());
}

fn bedrock_gateway(url: &str, api: &str) -> Gateway {
    gateway_with(
        "",
        &format!(
            "  bedrock:\n    region: {REGION}\n    endpoint: \"{url}\"\n    auth: {{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: \"{SECRET_ACCESS_KEY}\", session_token: \"{SESSION_TOKEN}\"}}}}\n"
        ),
        &format!("model_mappings:\n  haiku: {{providers: {{bedrock: {{model: \"{MODEL_ID}\"{api}}}}}}}\n"),
    )
}

#[tokio::test]
async fn bedrock_converse_is_signed_over_the_translated_body() {
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&mock.url(), "");
    let resp = post(
        &gw,
        &json!({"model": "haiku", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "haiku");
    assert_eq!(v["usage"]["prompt_tokens"], 13);
    let seen = mock.last();
    assert_eq!(seen.refused, None, "SigV4 verification failed");
    assert_eq!(seen.target, format!("/model/{MODEL_PATH}/converse"));
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["messages"][0]["content"][0]["text"], "Hi");

    let resp = post(
        &gw,
        &json!({"model": "haiku", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let (body, _) = read_chunks(resp).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(mock.last().target.ends_with("/converse-stream"));
    assert_eq!(mock.last().refused, None);
}

#[tokio::test]
async fn bedrock_invoke_serves_claude_when_the_mapping_asks() {
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&mock.url(), ", api: invoke");
    let resp = post(
        &gw,
        &json!({"model": "haiku", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let (body, _) = read_chunks(resp).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let seen = mock.last();
    assert_eq!(seen.refused, None);
    assert_eq!(
        seen.target,
        format!("/model/{MODEL_PATH}/invoke-with-response-stream")
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
    assert!(body.get("model").is_none() && body.get("stream").is_none());
}

#[tokio::test]
async fn azure_uses_the_deployment_path_and_api_version() {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            200,
            vec![],
            chat_completion("gpt-4o-2024-08-06", "Hi!", 5, 2),
        )
    });
    let gw = gateway_with(
        "",
        &format!(
            "  azure:\n    endpoint: \"{}/\"\n    api_version: \"2024-10-21\"\n    auth: {{method: api_key, config: {{api_key: azure-secret-key}}}}\n",
            up.url()
        ),
        "model_mappings:\n  gpt-4o: {providers: {azure: {deployment: my-gpt4o}}}\n  gpt-4o-preview: {providers: {azure: {deployment: my-gpt4o, api_version: 2025-01-01-preview}}}\n",
    );
    let v: Value = post(
        &gw,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["model"], "gpt-4o");
    let seen = up.last();
    assert_eq!(
        seen.path,
        "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some("azure-secret-key"));
    seen.assert_no_gateway_key();
    post(
        &gw,
        &json!({"model": "gpt-4o-preview", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert!(up.last().path.ends_with("?api-version=2025-01-01-preview"));
}

#[test]
fn mappings_to_watsonx_and_oci_need_their_project() {
    let yaml = r#"
server: {listen: "127.0.0.1:1", metrics_listen: "127.0.0.1:2"}
auth: {keys: [{user: a, key: "sk-long-enough-key"}]}
providers:
  watsonx: {endpoint: "https://us-south.ml.cloud.ibm.com", auth: {method: ibm_iam, config: {api_key: k}}}
model_mappings:
  granite: {providers: {watsonx: {model: ibm/granite-3-8b-instruct}}}
"#;
    let Err(err) = switchyard::config::Config::parse(yaml, &|_| None) else {
        panic!("the config was accepted");
    };
    let err = err.to_string();
    assert!(err.contains("model_mappings.granite.providers.watsonx: provider `watsonx` (watsonx) needs `project_id`"), "{err}");
}

#[tokio::test]
async fn fallback_crosses_provider_apis() {
    let anthropic = MockUpstream::start(|_| {
        Reply::Full(
            529,
            vec![],
            support::anthropic::error_body("overloaded_error", "Overloaded"),
        )
    });
    let bedrock = MockBedrock::start(AwsKey::session());
    let gw = gateway_with(
        "",
        &format!(
            "  anthropic:\n    endpoint: \"{}\"\n    auth: {{method: api_key, config: {{api_key: \"{ANTHROPIC_KEY}\"}}}}\n  bedrock:\n    region: {REGION}\n    endpoint: \"{}\"\n    auth: {{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: \"{SECRET_ACCESS_KEY}\", session_token: \"{SESSION_TOKEN}\"}}}}\n",
            anthropic.url(),
            bedrock.url()
        ),
        &format!(
            "model_mappings:\n  claude:\n    default_provider: anthropic\n    providers:\n      anthropic: {{model: claude-3-5-haiku-20241022}}\n      bedrock: {{model: \"{MODEL_ID}\"}}\nrouting:\n  fallback: {{enabled: true, providers: []}}\n"
        ),
    );
    let resp = post(
        &gw,
        &json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "bedrock");
    assert_eq!(resp.headers()["x-switchyard-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from Converse");
    assert_eq!(anthropic.recorded().len(), 1);
    assert_eq!(bedrock.last().refused, None);
}
