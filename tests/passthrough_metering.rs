//! Passthrough traffic counts against budgets and token limits even where the provider's
//! answer is hard to meter: a compressed answer (read from a decoded side copy, relayed to the
//! client byte for byte) and a stream without a usage chunk (estimated).

mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use switchyard::config::Config;
use switchyard::governance::keys::{self, KeySpec};
use switchyard::server::GatewayHandle;
use switchyard::store::{Store, StoreUrl};

struct Env {
    base: String,
    store: Store,
    handle: GatewayHandle,
    _dir: TempDir,
}

/// A temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway with a SQLite store and an `openai` provider at `upstream_url`; `gpt-4o` is
/// priced at 0.1 USD a token.
async fn start(upstream_url: &str) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-ptmeter-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store_url = format!("sqlite:{}/switchyard.db", dir.display());
    let port = free_port();
    let yaml = format!(
        r#"
server: {{listen: "127.0.0.1:{port}", threads: 2, access_log: false}}
auth:
  store: "{store_url}"
  refresh_seconds: 1
  keys:
    - {{user: alice, key: "{GATEWAY_KEY}"}}
providers:
  mock: {{}}
  openai:
    endpoint: "{upstream_url}"
    auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}"}}}}
pricing:
  gpt-4o: {{input: 100000, output: 100000}}
"#
    );
    let config = Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = tokio::task::spawn_blocking(move || GatewayHandle::start(Arc::new(config)))
        .await
        .unwrap();
    let store = Store::open(&StoreUrl::parse(&store_url).unwrap())
        .await
        .unwrap();
    Env {
        base: format!("http://127.0.0.1:{port}"),
        store,
        handle,
        _dir: TempDir(dir),
    }
}

impl Env {
    async fn key(&self, spec: KeySpec) -> String {
        let c = keys::create(&self.store, &spec).await.unwrap();
        let gov = self.handle.governance.clone();
        tokio::task::spawn_blocking(move || assert!(gov.refresh_now(Duration::from_secs(10))))
            .await
            .unwrap();
        c.secret
    }

    async fn post(&self, key: &str, path: &str, body: &str) -> reqwest::Response {
        client()
            .post(format!("{}/providers/openai{path}", self.base))
            .bearer_auth(key)
            .header("accept-encoding", "gzip, br;q=0.5, xz")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

/// Avoids starting a token-limit check within a few seconds of a minute boundary (windows are
/// aligned to minutes).
async fn away_from_minute_boundary() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if s > 50.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.5 - s)).await;
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

async fn refused(r: reqwest::Response, kind: &str) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_answer_is_metered_and_relayed_byte_exact() {
    let answer = gzip(&chat_completion("gpt-4o", "hi", 3, 5));
    let sent = answer.clone();
    let up = MockUpstream::start(move |_| {
        Reply::Full(
            200,
            vec![("content-encoding".into(), "gzip".into())],
            sent.clone(),
        )
    });
    let env = start(&up.url()).await;
    // 8 tokens at 0.1 USD: the first answer spends the 0.5 USD budget.
    let key = env
        .key(KeySpec {
            user: "erin".into(),
            budget_usd: Some(0.5),
            period: Some("day".into()),
            ..Default::default()
        })
        .await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let r = env.post(&key, "/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        answer,
        "the client gets the provider's compressed bytes"
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // settled after the answer
    refused(
        env.post(&key, "/v1/chat/completions", body).await,
        "insufficient_quota",
    )
    .await;
    assert_eq!(
        up.recorded().len(),
        1,
        "the refused request reached the provider"
    );
    assert_eq!(
        up.last().header("accept-encoding"),
        Some("gzip, br;q=0.5"),
        "only codings the meter reads are asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_usage_is_estimated_and_charged() {
    // An OpenAI stream as sent without `stream_options.include_usage`: no usage chunk.
    let mut stream = Vec::new();
    for piece in ["Hello", " there", ", friend"] {
        let chunk = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "created": 1717000000, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        stream.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    stream.extend_from_slice(b"data: [DONE]\n\n");
    let sent = stream.clone();
    let up = MockUpstream::start(move |_| Reply::Stream(vec![sent.clone()], Duration::ZERO));
    let env = start(&up.url()).await;
    away_from_minute_boundary().await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello to a friend"}]}"#;

    // A token limit: the estimate (about 25 prompt and 5 completion tokens) uses it up.
    let limited = env
        .key(KeySpec {
            user: "ivan".into(),
            tpm: Some(10),
            ..Default::default()
        })
        .await;
    let r = env.post(&limited, "/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        stream,
        "relayed unchanged"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    refused(
        env.post(&limited, "/v1/chat/completions", body).await,
        "tokens",
    )
    .await;

    // A budget: the estimate is priced like reported usage.
    let budgeted = env
        .key(KeySpec {
            user: "erin".into(),
            budget_usd: Some(0.5),
            period: Some("day".into()),
            ..Default::default()
        })
        .await;
    let r = env.post(&budgeted, "/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    refused(
        env.post(&budgeted, "/v1/chat/completions", body).await,
        "insufficient_quota",
    )
    .await;
    assert_eq!(up.recorded().len(), 2);
}
