//! Governance end to end, against SQLite always and PostgreSQL / Redis when tests/run.sh
//! provides them (`SWITCHYARD_TEST_POSTGRES`, `SWITCHYARD_TEST_REDIS`; the tests say loudly
//! when they skip): store keys beside config keys, scopes (403), budgets per key and per
//! user (429 insufficient_quota), rate limits (429 with Retry-After and x-ratelimit-*),
//! revocation taking effect, usage records and audit events, the admin API with TOTP, and
//! a SIGTERM flush that loses no usage record.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client, free_port, GATEWAY_KEY};
use switchyard::config::Config;
use switchyard::governance::keys::{self, KeySpec};
use switchyard::governance::totp;
use switchyard::server::GatewayHandle;
use switchyard::store::{GroupBy, Store, StoreUrl};

const ADMIN_KEY: &str = "sy-admin-key-0123456789abcdef";

struct Env {
    base: String,
    admin: String,
    store: Store,
    handle: GatewayHandle,
}

fn sqlite_url() -> (String, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    (format!("sqlite:{}/switchyard.db", dir.path()), dir)
}

/// A tiny temporary directory (removed on drop) without another dependency.
mod tempdir {
    pub struct Dir(String);
    impl Dir {
        pub fn new() -> Dir {
            let out = std::process::Command::new("mktemp")
                .arg("-d")
                .output()
                .unwrap();
            Dir(String::from_utf8(out.stdout).unwrap().trim().to_owned())
        }
        pub fn path(&self) -> &str {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn start(store_url: &str, redis: Option<&str>) -> Env {
    start_with(store_url, redis, "").await
}

/// `extra`: more top-level YAML (e.g. an `audit:` section).
async fn start_with(store_url: &str, redis: Option<&str>, extra: &str) -> Env {
    let (port, admin_port) = (free_port(), free_port());
    let limits = redis.map_or(String::new(), |r| format!("limits: {{redis: \"{r}\"}}\n"));
    let yaml = format!(
        r#"
server: {{listen: "127.0.0.1:{port}", threads: 2, access_log: false}}
auth:
  store: "{store_url}"
  refresh_seconds: 1
  keys:
    - {{user: alice, key: "{GATEWAY_KEY}"}}
admin: {{listen: "127.0.0.1:{admin_port}", key: "{ADMIN_KEY}"}}
{limits}providers:
  mock: {{}}
model_mappings:
  gpt-4o-mini: {{default_provider: mock, providers: {{mock: {{}}}}}}
routing:
  patterns:
    - {{pattern: "^mock-", default_provider: mock}}
    - {{pattern: "^claude-", default_provider: mock}}
    - {{pattern: "^gpt-", default_provider: mock}}
pricing:
  mock-priced: {{input: 100000, output: 100000}}
{extra}
"#
    );
    let config = Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = tokio::task::spawn_blocking(move || GatewayHandle::start(Arc::new(config)))
        .await
        .unwrap();
    let store = Store::open(&StoreUrl::parse(store_url).unwrap())
        .await
        .unwrap();
    Env {
        base: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        store,
        handle,
    }
}

impl Env {
    async fn key(&self, spec: KeySpec) -> (String, String) {
        let c = keys::create(&self.store, &spec).await.unwrap();
        self.refresh().await;
        (c.record.id, c.secret)
    }

    async fn refresh(&self) {
        let gov = self.handle.governance.clone();
        tokio::task::spawn_blocking(move || assert!(gov.refresh_now(Duration::from_secs(10))))
            .await
            .unwrap();
    }

    async fn flush(&self) {
        let gov = self.handle.governance.clone();
        tokio::task::spawn_blocking(move || assert!(gov.flush(Duration::from_secs(10))))
            .await
            .unwrap();
    }

    async fn chat(&self, key: &str, model: &str) -> reqwest::Response {
        client()
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "two words"}]}))
            .send()
            .await
            .unwrap()
    }

    async fn usage_of(&self, key_id: &str) -> i64 {
        self.store
            .usage_report(GroupBy::Key, 0)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.group == key_id)
            .map_or(0, |r| r.requests)
    }
}

fn spec(user: &str) -> KeySpec {
    KeySpec {
        user: user.into(),
        ..Default::default()
    }
}

/// The first of `key`'s requests for `model` that is refused, within 3 s: spend and tokens are
/// recorded after an answer (in the logging phase), so on a loaded machine the next request
/// may come before them. (A later 200 would fail the caller's status assertion.)
async fn refused_soon(env: &Env, key: &str, model: &str) -> reqwest::Response {
    let mut r = env.chat(key, model).await;
    for _ in 0..30 {
        if r.status() == 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = env.chat(key, model).await;
    }
    r
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Avoids starting a rate-limit check within a second of a minute boundary (windows are
/// aligned to minutes; straddling one makes the expected counts fuzzy).
async fn away_from_minute_boundary() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if s > 56.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.5 - s)).await;
    }
}

async fn keys_scopes_and_revocation(env: &Env) {
    // Config keys keep working beside the store.
    assert_eq!(env.chat(GATEWAY_KEY, "mock-a").await.status(), 200);

    let (id, key) = env
        .key(KeySpec {
            models: vec!["mock-*".into(), "gpt-4o-mini".into()],
            ..spec("carol")
        })
        .await;
    assert!(key.starts_with("sk-sy-"));
    let stored = env.store.get_key(&id).await.unwrap().unwrap();
    assert!(
        !format!("{stored:?}").contains(&key),
        "the key itself must not be stored"
    );
    assert_eq!(env.chat(&key, "mock-fast").await.status(), 200);
    assert_eq!(env.chat(&key, "gpt-4o-mini").await.status(), 200);

    // Out of scope: 403 in the OpenAI envelope.
    let (status, body) = error_of(env.chat(&key, "claude-3").await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(body["error"]["code"], "permission_denied");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("claude-3"));

    // Provider scope: a key limited to another provider cannot reach mock.
    let (_, only_openai) = env
        .key(KeySpec {
            providers: vec!["openai".into()],
            ..spec("carol")
        })
        .await;
    assert_eq!(env.chat(&only_openai, "mock-fast").await.status(), 403);

    // Expired keys are refused.
    let (exp_id, expiring) = env
        .key(KeySpec {
            expires: Some("2099-01-01".into()),
            ..spec("dave")
        })
        .await;
    assert_eq!(env.chat(&expiring, "mock-x").await.status(), 200);
    assert!(env
        .store
        .get_key(&exp_id)
        .await
        .unwrap()
        .unwrap()
        .expires_at
        .is_some());

    // Rotation: the old secret stops, the new one works.
    let rotated = keys::rotate(&env.store, &id).await.unwrap().unwrap();
    env.refresh().await;
    assert_eq!(env.chat(&key, "mock-fast").await.status(), 401);
    assert_eq!(env.chat(&rotated.secret, "mock-fast").await.status(), 200);

    // Revocation takes effect within the refresh interval (1 s here), without a nudge.
    let now = keys::now_secs();
    assert!(env.store.revoke_key(&id, now).await.unwrap());
    let t = Instant::now();
    loop {
        let s = env.chat(&rotated.secret, "mock-fast").await.status();
        if s == 401 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "revocation not effective after 4 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Usage: one record per request of the key, auth failures audited (never the key).
    env.flush().await;
    assert!(env.usage_of(&id).await >= 4);
    let audit = env.store.audit_since(0, 10_000).await.unwrap();
    let failures: Vec<_> = audit.iter().filter(|e| e.event == "auth_failure").collect();
    assert!(!failures.is_empty());
    let all = format!("{audit:?}");
    assert!(!all.contains(&key) && !all.contains(&rotated.secret));
}

async fn budgets(env: &Env) {
    // mock-priced costs 0.1 USD per token: about 1 USD a request.
    let (id, key) = env
        .key(KeySpec {
            budget_usd: Some(0.5),
            period: Some("day".into()),
            ..spec("erin")
        })
        .await;
    assert_eq!(env.chat(&key, "mock-priced").await.status(), 200);
    let (status, body) = error_of(refused_soon(env, &key, "mock-priced").await).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    // Still refused once the spend is in the store and the snapshot (no double counting
    // either way: the refusal is stable).
    env.flush().await;
    env.refresh().await;
    assert_eq!(env.chat(&key, "mock-priced").await.status(), 429);
    let report = env.store.usage_report(GroupBy::Key, 0).await.unwrap();
    let row = report.iter().find(|r| r.group == id).unwrap();
    assert!(row.cost_usd > 0.5, "{row:?}");

    // A user budget covers all of the user's keys.
    env.store
        .set_user_budget("frank", Some(0.5), Some("month"), keys::now_secs())
        .await
        .unwrap();
    let (_, k1) = env.key(spec("frank")).await;
    let (_, k2) = env.key(spec("frank")).await;
    assert_eq!(env.chat(&k1, "mock-priced").await.status(), 200);
    let (status, body) = error_of(refused_soon(env, &k2, "mock-priced").await).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("frank"));
    // A model without a price would cost nothing and never exhaust a budget: refused to a
    // budgeted key (403 naming the model), served to others and counted in a metric.
    let (_, k3) = env
        .key(KeySpec {
            budget_usd: Some(0.5),
            ..spec("gina")
        })
        .await;
    let (status, body) = error_of(env.chat(&k3, "mock-free").await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mock-free") && message.contains("no price"),
        "{message}"
    );
    // The same for a user's budget.
    assert_eq!(env.chat(&k1, "mock-free").await.status(), 403);
    let unpriced_before = unpriced_count(env);
    assert_eq!(env.chat(GATEWAY_KEY, "mock-free").await.status(), 200);
    // Counted once the answer is logged, just after it is sent.
    let t = Instant::now();
    while unpriced_count(env) != unpriced_before + 1 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "unpriced request not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A dated snapshot takes its base model's price (gpt-4o here): the budget is spent by
    // the first request, not bypassed.
    let (_, k4) = env
        .key(KeySpec {
            budget_usd: Some(0.000_01),
            period: Some("day".into()),
            ..spec("hal")
        })
        .await;
    assert_eq!(env.chat(&k4, "gpt-4o-2024-11-20").await.status(), 200);
    assert_eq!(
        refused_soon(env, &k4, "gpt-4o-2024-11-20").await.status(),
        429
    );
    for _ in 0..4 {
        let (status, body) = error_of(env.chat(&k4, "gpt-4o-2024-11-20").await).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_quota");
    }
}

/// `ai_proxy_unpriced_requests_total{provider="mock"}`.
fn unpriced_count(env: &Env) -> u64 {
    let text = String::from_utf8(env.handle.metrics.render()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ai_proxy_unpriced_requests_total{provider=\"mock\"} "))
        .map_or(0, |v| v.parse().unwrap())
}

async fn rate_limits(env: &Env) {
    away_from_minute_boundary().await;
    let (_, key) = env
        .key(KeySpec {
            rpm: Some(2),
            ..spec("hank")
        })
        .await;
    let r = env.chat(&key, "mock-a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "1");
    assert!(r.headers().contains_key("x-ratelimit-reset-requests"));
    assert_eq!(env.chat(&key, "mock-a").await.status(), 200);
    let r = env.chat(&key, "mock-a").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");

    // Tokens per minute: the first answer uses them up, the next request is refused.
    let (_, key) = env
        .key(KeySpec {
            tpm: Some(5),
            ..spec("ivan")
        })
        .await;
    assert_eq!(env.chat(&key, "mock-a").await.status(), 200);
    // Tokens are counted after the answer (and a Redis call over its 50 ms budget on a loaded
    // machine falls back to the local window): the next requests are refused soon.
    let r = refused_soon(env, &key, "mock-a").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
}

async fn admin_api(env: &Env) {
    let http = client();
    let secret = {
        let (s, _) = totp::new_secret("ops").unwrap();
        env.store.set_totp_secret(&s).await.unwrap();
        s
    };
    let now = keys::now_secs() as u64;
    let get = |code: Option<String>, key: &str| {
        let mut r = http
            .get(format!("{}/admin/keys", env.admin))
            .bearer_auth(key);
        if let Some(c) = code {
            r = r.header("x-switchyard-totp", c);
        }
        r.send()
    };
    // Wrong admin key, missing code, expired code: 401.
    let code = totp::code_at(&secret, now).unwrap();
    assert_eq!(
        get(Some(code.clone()), "nope-nope-nope-nope")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(get(None, ADMIN_KEY).await.unwrap().status(), 401);
    let expired = totp::code_at(&secret, now - 120).unwrap();
    if expired != code {
        let r = get(Some(expired), ADMIN_KEY).await.unwrap();
        assert_eq!(r.status(), 401);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "totp_invalid");
    }
    // Valid once, then a replay.
    let r = get(Some(code.clone()), ADMIN_KEY).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = get(Some(code), ADMIN_KEY).await.unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "totp_replayed");

    // A session from the next code (clock skew allows one step ahead) serves several calls.
    let next = totp::code_at(&secret, now + totp::STEP_SECS).unwrap();
    let r = http
        .post(format!("{}/admin/session", env.admin))
        .bearer_auth(ADMIN_KEY)
        .header("x-switchyard-totp", next)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let session = r.json::<Value>().await.unwrap()["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", env.admin))
            .bearer_auth(ADMIN_KEY)
            .header("x-switchyard-session", &session)
    };
    let r = call(reqwest::Method::POST, "/admin/keys")
        .json(&json!({"user": "judy", "models": ["mock-*"], "rpm": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    env.refresh().await;
    assert_eq!(env.chat(&key, "mock-b").await.status(), 200);
    let shown: Value = call(reqwest::Method::GET, &format!("/admin/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["user"], "judy");
    assert!(shown.get("key").is_none() && !shown.to_string().contains(&key));
    let list = call(reqwest::Method::GET, "/admin/keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains(&id) && !list.contains(&key));
    let r = call(reqwest::Method::POST, &format!("/admin/keys/{id}/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.refresh().await;
    assert_eq!(env.chat(&key, "mock-b").await.status(), 401);
    env.flush().await;
    let usage: Value = call(reqwest::Method::GET, "/admin/usage?by=user&since=1h")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == "judy"),
        "{usage}"
    );
    let r = call(reqwest::Method::PUT, "/admin/users/judy/budget")
        .json(&json!({"budget_usd": 5, "period": "week"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.flush().await;
    let audit = env.store.audit_since(0, 10_000).await.unwrap();
    for kind in [
        "key_created",
        "key_revoked",
        "admin_action",
        "admin_auth_failure",
        "user_budget_set",
    ] {
        assert!(audit.iter().any(|e| e.event == kind), "no {kind} event");
    }
    let all = format!("{audit:?}");
    assert!(!all.contains(&key) && !all.contains(ADMIN_KEY) && !all.contains(&session));
}

/// A batch larger than one usage block (8,192 records), its daily spend roll-up, time
/// filtering and the records read back field by field.
async fn store_batches(env: &Env) {
    let key_id = format!("key_batch{}", keys::now_secs() % 100_000);
    let now = switchyard::governance::audit::now_ms();
    const N: i64 = 9_000;
    let usage: Vec<_> = (0..N)
        .map(|i| switchyard::store::UsageRecord {
            // The first 1,000 an hour ago, the rest now.
            ts_ms: if i < 1_000 { now - 3_600_000 } else { now + i },
            request_id: format!("r{i}"),
            user: "batch".into(),
            key_id: key_id.as_str().into(),
            provider: if i % 2 == 0 { "mock" } else { "openai" }.into(),
            model: format!("m{}", i % 3),
            route: "chat_completions",
            status: if i == 4_321 { 429 } else { 200 },
            input_tokens: 2,
            output_tokens: 3,
            cost_usd: 0.01,
            cached: false,
            trace_id: (i == 4_321).then_some(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
        })
        .collect();
    let before = env.store.count_usage().await.unwrap();
    env.store.write_batch(&usage, &[]).await.unwrap();
    assert_eq!(env.store.count_usage().await.unwrap(), before + N);
    let row = env
        .store
        .usage_report(GroupBy::Key, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.group == key_id)
        .unwrap();
    assert_eq!(
        (row.requests, row.input_tokens, row.output_tokens),
        (N, 2 * N, 3 * N)
    );
    assert!((row.cost_usd - 90.0).abs() < 1e-6, "{row:?}");
    let recent = env
        .store
        .usage_report(GroupBy::Key, now - 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.group == key_id)
        .unwrap();
    assert_eq!(recent.requests, N - 1_000);
    let mut back = Vec::new();
    env.store
        .each_usage_since(0, |u| {
            if u.key_id == key_id {
                back.push(u)
            }
        })
        .await
        .unwrap();
    assert_eq!(back.len(), N as usize);
    let r = back.iter().find(|u| u.request_id == "r4321").unwrap();
    assert_eq!(
        (
            r.ts_ms,
            r.user.as_str(),
            r.provider.as_str(),
            r.model.as_str()
        ),
        (now + 4_321, "batch", "openai", "m1")
    );
    assert_eq!((r.route.as_str(), r.status), ("chat_completions", 429));
    assert_eq!(
        r.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert!(back
        .iter()
        .all(|u| u.trace_id.is_none() || u.request_id == "r4321"));
    let (keys, users) = env.store.spend_since(0).await.unwrap();
    assert!((keys[&key_id] - 90.0).abs() < 1e-6);
    assert!(users["batch"] >= 90.0 - 1e-6);
}

/// Issue 20.6: `/v1/models` lists every usable name (mappings and the mock's declared
/// `mock-fast`, `mock-embed`) with a real `created`, and only what the key's model scopes allow.
async fn models_listed_by_scope(env: &Env) {
    let list = |key: String| async move {
        let r = client()
            .get(format!("{}/v1/models", env.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["data"].as_array().unwrap().clone()
    };
    let all = list(GATEWAY_KEY.to_owned()).await;
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "mock-fast", "mock-embed"]);
    for m in &all {
        assert!(m["created"].as_u64().unwrap() > 1_700_000_000, "{m}");
        assert_eq!(m["owned_by"], "mock");
    }

    let (_, key) = env
        .key(KeySpec {
            models: vec!["mock-*".into()],
            ..spec("dave")
        })
        .await;
    let ids: Vec<String> = list(key.clone())
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["mock-fast", "mock-embed"]);
    let get = |id: &'static str| {
        client()
            .get(format!("{}/v1/models/{id}", env.base))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(get("mock-fast").await.unwrap().status(), 200);
    assert_eq!(get("gpt-4o-mini").await.unwrap().status(), 404);
}

async fn everything(store_url: &str, redis: Option<&str>) {
    let env = start(store_url, redis).await;
    store_batches(&env).await;
    models_listed_by_scope(&env).await;
    keys_scopes_and_revocation(&env).await;
    budgets(&env).await;
    rate_limits(&env).await;
    admin_api(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_on_sqlite() {
    let (url, _dir) = sqlite_url();
    everything(&url, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_on_postgres_with_redis_limits() {
    let Ok(pg) = std::env::var("SWITCHYARD_TEST_POSTGRES") else {
        eprintln!("\n!!! SKIPPED: SWITCHYARD_TEST_POSTGRES is not set; tests/run.sh starts PostgreSQL on loopback and sets it\n");
        return;
    };
    let redis = std::env::var("SWITCHYARD_TEST_REDIS").ok();
    if redis.is_none() {
        eprintln!(
            "\n!!! SWITCHYARD_TEST_REDIS is not set: PostgreSQL runs with local rate limits only\n"
        );
    }
    let env = start(&pg, redis.as_deref()).await;
    if redis.is_some() {
        let t = Instant::now();
        while !env.handle.governance.limiter.uses_redis() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "never connected to Redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    store_batches(&env).await;
    keys_scopes_and_revocation(&env).await;
    budgets(&env).await;
    rate_limits(&env).await;
    admin_api(&env).await;
    if let Some(url) = redis {
        // The counters really are in Redis (shared by replicas).
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("sy:rl:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "no rate-limit counters in Redis");
    }
}

/// Avoids starting a TOTP burst in the last seconds of a 30 s time step (failures are
/// counted per step).
async fn early_in_a_totp_step() {
    let s = keys::now_secs() as u64 % totp::STEP_SECS;
    if s > 20 {
        tokio::time::sleep(Duration::from_secs(totp::STEP_SECS - s + 1)).await;
    }
}

fn audit_events(audit: &[switchyard::store::AuditEvent], kind: &str) -> Vec<Value> {
    audit
        .iter()
        .filter(|e| e.event == kind)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect()
}

/// Brute-forcing the admin TOTP: after a handful of wrong codes in a time step the source
/// gets 429 with Retry-After, and then even the right code is refused; the lockout is
/// audited and counted in a metric; the refusals do not flood the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_totp_wrong_codes_lock_the_source_out() {
    use switchyard::governance::totp_throttle::{FIRST_BACKOFF_SECS, PER_SOURCE};
    let (url, _dir) = sqlite_url();
    let env = start(&url, None).await;
    let (secret, _) = totp::new_secret("ops").unwrap();
    env.store.set_totp_secret(&secret).await.unwrap();
    early_in_a_totp_step().await;
    let now = keys::now_secs() as u64;
    let valid: Vec<String> = [now - 30, now, now + 30, now + 60]
        .iter()
        .map(|t| totp::code_at(&secret, *t).unwrap())
        .collect();
    let wrong = (0..)
        .map(|i: u32| format!("{:06}", (i * 7919 + 123_457) % 1_000_000))
        .filter(|c| !valid.contains(c));
    let http = client();
    let get = |code: String| {
        http.get(format!("{}/admin/keys", env.admin))
            .bearer_auth(ADMIN_KEY)
            .header("x-switchyard-totp", code)
            .send()
    };
    let mut statuses = Vec::new();
    for code in wrong.take(PER_SOURCE as usize + 20) {
        statuses.push(get(code).await.unwrap().status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(refused, PER_SOURCE as usize, "{statuses:?}");
    assert!(
        statuses[PER_SOURCE as usize..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // The right code is refused too while the lockout lasts.
    let r = get(valid[1].clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=FIRST_BACKOFF_SECS).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "totp_locked");
    assert_eq!(body["error"]["type"], "requests");

    let metrics = String::from_utf8(env.handle.metrics.render()).unwrap();
    assert!(
        metrics.contains("ai_proxy_admin_totp_lockouts_total{scope=\"source\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ai_proxy_admin_totp_failures_total{reason=\"throttled\"} 21"));
    env.flush().await;
    let audit = env.store.audit_since(0, 10_000).await.unwrap();
    let lockouts = audit_events(&audit, "admin_totp_lockout");
    assert_eq!(lockouts.len(), 1, "{audit:?}");
    assert_eq!(lockouts[0]["scope"], "source");
    // 26 refusals: one event at once, one summary with the count of the rest.
    let failures = audit_events(&audit, "admin_auth_failure");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[1]["count"], PER_SOURCE as u64 + 20);
    assert_eq!(failures[1]["reasons"]["totp_throttled"], 21);
}

/// A flood of wrong gateway keys from one source writes O(1) audit rows and audit-file
/// lines, the count in a summary; audit rows older than `audit.retention_days` are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_floods_are_summarised_and_old_audit_rows_expire() {
    let (url, dir) = sqlite_url();
    let file = format!("{}/audit.jsonl", dir.path());
    // Rows written before the gateway starts: one past the retention, one within it.
    let store = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    let day_ms = 86_400_000;
    let now = switchyard::governance::audit::now_ms();
    let old = |ts_ms, subject: &str| switchyard::store::AuditEvent {
        ts_ms,
        event: "key_created".into(),
        actor: "test".into(),
        subject: subject.into(),
        detail: "{}".into(),
    };
    store
        .write_batch(
            &[],
            &[
                old(now - 31 * day_ms, "expired"),
                old(now - 29 * day_ms, "kept"),
            ],
        )
        .await
        .unwrap();
    let env = start_with(
        &url,
        None,
        &format!("audit: {{file: \"{file}\", retention_days: 30}}"),
    )
    .await;

    const N: usize = 300;
    let http = client();
    for i in 0..N {
        let r = http
            .post(format!("{}/v1/chat/completions", env.base))
            .bearer_auth(format!("sk-wrong-{i}"))
            .json(&json!({"model": "mock-a", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    env.flush().await;
    let audit = env.store.audit_since(0, 100_000).await.unwrap();
    let rows = audit_events(&audit, "auth_failure");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["reason"], "unknown_key");
    assert_eq!(rows[1]["count"], N as u64 - 1);
    assert_eq!(rows[1]["reasons"]["unknown_key"], N as u64 - 1);
    // The audit file: the same two lines (its writer thread is asynchronous).
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines = text
            .lines()
            .filter(|l| l.contains("\"auth_failure\""))
            .count();
        if lines == 2 && text.contains(&format!("\"count\":{}", N - 1)) {
            break;
        }
        assert!(lines <= 2, "{text}");
        assert!(t.elapsed() < Duration::from_secs(10), "audit file:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Retention: the row past 30 days goes (the writer prunes at start, then hourly).
    let t = Instant::now();
    loop {
        let audit = env.store.audit_since(0, 100_000).await.unwrap();
        let subjects: Vec<_> = audit.iter().map(|e| e.subject.as_str()).collect();
        assert!(subjects.contains(&"kept"), "{subjects:?}");
        if !subjects.contains(&"expired") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "old audit row not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis unreachable: limits fall back to local counters and still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_fall_back_to_local_without_redis() {
    let (url, _dir) = sqlite_url();
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let env = start(&url, Some(&dead)).await;
    rate_limits(&env).await;
}

/// SIGTERM: the batch writer flushes before the process exits; records == requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_usage_record() {
    let (url, dir) = sqlite_url();
    let port = free_port();
    let conf = format!("{}/gw.yaml", dir.path());
    std::fs::write(
        &conf,
        format!(
            "server: {{listen: \"127.0.0.1:{port}\", threads: 2, access_log: false, grace_period_seconds: 10, pid_file: \"{d}/pid\", upgrade_sock: \"{d}/up.sock\"}}\nauth: {{store: \"{url}\", refresh_seconds: 1}}\nproviders: {{mock: {{}}}}\nrouting: {{patterns: [{{pattern: \"^mock-\", default_provider: mock}}]}}\n",
            d = dir.path()
        ),
    )
    .unwrap();
    let store = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    let created = keys::create(&store, &spec("sig")).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c", &conf])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while client().get(format!("{base}/health")).send().await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Four clients send requests back to back; SIGTERM arrives after 100 answers, while
    // requests are in flight. Every request that got an answer must have its record.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (base, key, answered) = (base.clone(), created.secret.clone(), answered.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            for i in 0.. {
                let r = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "mock-x", "messages": [{"role": "user", "content": format!("request {w} {i}")}]}))
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        let _ = r.bytes().await;
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(answered >= 100, "only {answered} answered");
    let recorded = store
        .usage_report(GroupBy::Key, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.group == created.record.id)
        .map_or(0, |r| r.requests);
    assert_eq!(
        recorded as usize, answered,
        "usage records vs answered requests"
    );
}

/// Issue 18: a usage record carries its request's trace id — the caller's, whether the
/// caller sampled it or not, else the one the gateway started — as `switchyard usage
/// --records` and reports read it back (32 lowercase hex digits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_carry_the_trace_id() {
    let (url, _dir) = sqlite_url();
    // Spans go nowhere (a closed port): the record does not depend on their export.
    let telemetry = format!(
        "telemetry: {{otlp_endpoint: \"http://127.0.0.1:{}\", sample_ratio: 0, response_header: x-trace-id}}\n",
        free_port()
    );
    let env = start_with(&url, None, &telemetry).await;
    let (key_id, key) = env.key(spec("traced")).await;
    let send = |traceparent: Option<&'static str>| {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", env.base))
            .bearer_auth(&key)
            .json(&json!({"model": "mock-a", "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        req.send()
    };
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let mut want = Vec::new();
    for (tp, trace) in [
        (
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some(sampled),
        ),
        (
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            Some(unsampled),
        ),
        (None, None),
    ] {
        let r = send(tp).await.unwrap();
        assert_eq!(r.status(), 200);
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let header = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
        if let Some(t) = trace {
            assert_eq!(header, t);
        }
        r.bytes().await.unwrap();
        want.push((request_id, header));
    }
    // Records are made in the logging phase, just after the answer: wait for all three.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want.len() {
        assert!(Instant::now() < deadline, "records: {got:?}");
        env.flush().await;
        got.clear();
        env.store
            .each_usage_since(0, |u| {
                if u.key_id == key_id {
                    got.push((u.request_id, u.trace_id.unwrap_or_default()))
                }
            })
            .await
            .unwrap();
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let fresh = &want
        .iter()
        .find(|(_, t)| t != sampled && t != unsampled)
        .unwrap()
        .1;
    assert_eq!(fresh.len(), 32);
    assert!(fresh
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}
