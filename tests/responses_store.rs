//! The Responses API's conversation state in the governance store: two gateways sharing one
//! store continue each other's conversations (a fleet), a restarted gateway still has them,
//! deletion and expiry hold on every replica, and another key never sees them. SQLite always;
//! PostgreSQL when tests/run.sh provides it (`SWITCHYARD_TEST_POSTGRES`; said loudly when
//! skipped). (The in-memory store without `auth.store` is covered by tests/sdk/test_responses.py.)

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use support::{client, free_port, GATEWAY_KEY};
use switchyard::config::Config;
use switchyard::server::GatewayHandle;
use switchyard::store::responses::ResponseRow;
use switchyard::store::{Store, StoreUrl};

const BOB_KEY: &str = "sk-gw-bob-9876543210";

async fn gateway(store_url: &str) -> (GatewayHandle, String) {
    let port = free_port();
    let yaml = format!(
        r#"
server: {{listen: "127.0.0.1:{port}", threads: 2, access_log: false}}
auth:
  store: "{store_url}"
  keys:
    - {{user: alice, key: "{GATEWAY_KEY}"}}
    - {{user: bob, key: "{BOB_KEY}"}}
providers:
  mock: {{}}
model_mappings:
  mock-fast: {{default_provider: mock, providers: {{mock: {{}}}}}}
"#
    );
    let config = Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = tokio::task::spawn_blocking(move || GatewayHandle::start(Arc::new(config)))
        .await
        .unwrap();
    (handle, format!("http://127.0.0.1:{port}"))
}

async fn create(base: &str, key: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(base: &str, key: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn delete(base: &str, key: &str, id: &str) -> u16 {
    client()
        .delete(format!("{base}/v1/responses/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "message")
        .flat_map(|o| o["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect()
}

async fn fleet(store_url: &str) {
    let (a, base_a) = gateway(store_url).await;
    let (b, base_b) = gateway(store_url).await;

    // A conversation started on one replica continues on the other.
    let (s, one) = create(
        &base_a,
        GATEWAY_KEY,
        json!({"model": "mock-fast", "input": "My name is Ada"}),
    )
    .await;
    assert_eq!(s, 200, "{one}");
    let id1 = one["id"].as_str().unwrap().to_owned();
    let (s, two) = create(
        &base_b,
        GATEWAY_KEY,
        json!({"model": "mock-fast", "input": "Who am I?", "previous_response_id": id1}),
    )
    .await;
    assert_eq!(s, 200, "{two}");
    assert_eq!(two["previous_response_id"], id1.as_str());
    // The mock counts the words it was sent: the whole conversation arrived.
    let alone = create(
        &base_b,
        GATEWAY_KEY,
        json!({"model": "mock-fast", "input": "Who am I?", "store": false}),
    )
    .await
    .1;
    assert!(
        two["usage"]["input_tokens"].as_u64() > alone["usage"]["input_tokens"].as_u64(),
        "{two} vs {alone}"
    );
    let id2 = two["id"].as_str().unwrap().to_owned();
    let (s, got) = get(&base_a, GATEWAY_KEY, &format!("/v1/responses/{id2}")).await;
    assert_eq!(s, 200);
    assert_eq!(text(&got), text(&two));
    let (s, items) = get(
        &base_a,
        GATEWAY_KEY,
        &format!("/v1/responses/{id2}/input_items?order=asc"),
    )
    .await;
    assert_eq!(s, 200);
    let roles: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{items}");

    // Another key: not found anywhere, and cannot continue the conversation.
    assert_eq!(
        get(&base_b, BOB_KEY, &format!("/v1/responses/{id2}"))
            .await
            .0,
        404
    );
    assert_eq!(delete(&base_a, BOB_KEY, &id2).await, 404);
    let (s, e) = create(
        &base_a,
        BOB_KEY,
        json!({"model": "mock-fast", "input": "x", "previous_response_id": id2}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "previous_response_not_found");

    // A restarted replica still has the conversation.
    drop(a);
    let (a2, base_a2) = gateway(store_url).await;
    assert_eq!(
        get(&base_a2, GATEWAY_KEY, &format!("/v1/responses/{id1}"))
            .await
            .0,
        200
    );

    // Deleted on one replica: gone on every replica.
    assert_eq!(delete(&base_a2, GATEWAY_KEY, &id1).await, 200);
    assert_eq!(
        get(&base_b, GATEWAY_KEY, &format!("/v1/responses/{id1}"))
            .await
            .0,
        404
    );

    // Expired rows are never returned.
    let store = Store::open(&StoreUrl::parse(store_url).unwrap())
        .await
        .unwrap();
    let now = switchyard::response_store::now();
    store
        .put_response(&ResponseRow {
            id: "resp_expired0".into(),
            owner: "cfg:ignored".into(),
            created_at: now - 100,
            expires_at: now - 1,
            input_items: "[]".into(),
            response: "{}".into(),
        })
        .await
        .unwrap();
    assert!(store
        .get_response("resp_expired0", "cfg:ignored", now)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.delete_expired_responses(now).await.unwrap(), 1);
    drop((a2, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_shared_by_replicas_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("sy-responses-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    fleet(&format!("sqlite:{}/switchyard.db", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_shared_by_replicas_on_postgres() {
    let Ok(pg) = std::env::var("SWITCHYARD_TEST_POSTGRES") else {
        eprintln!("\n!!! SKIPPED: SWITCHYARD_TEST_POSTGRES is not set; tests/run.sh starts PostgreSQL on loopback and sets it\n");
        return;
    };
    fleet(&pg).await;
}
