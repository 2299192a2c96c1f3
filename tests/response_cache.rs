//! The response cache end to end (issue 19): hit / miss / bypass on every front door
//! (chat, legacy completions, embeddings, Messages, Responses; streamed and not), streamed
//! hits replaying the original events with only ids and times changed, scope isolation, TTL
//! expiry, `Cache-Control` no-cache / no-store, errors and cut streams never stored, 100
//! identical requests in flight making one upstream call, a cancelled leader's followers
//! still answered, the memory bound under a flood, accounting (metrics, cost saved), and
//! Redis shared by two gateways and stopped mid-test (misses, not errors).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{chat_completion, chat_stream, client, free_port, MockUpstream, Recorded, Reply};
use switchyard::config::Config;
use switchyard::server::GatewayHandle;

const ALICE: &str = "sk-cache-alice-0001";
const ALICE2: &str = "sk-cache-alice-0002";
const BOB: &str = "sk-cache-bob-0003";
const KEYED: &str = "sk-cache-keyed-0004";

struct Gw {
    base: String,
    metrics: String,
    _handle: GatewayHandle,
}

/// The upstream: OpenAI chat (streamed or not), completions, embeddings and Responses, by
/// path; `slow` delays every answer; a request whose last user message says `fail` gets a
/// 400, `cut` a stream cut short, `big:N` an N-byte incompressible answer.
fn upstream(slow: Duration) -> (MockUpstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = MockUpstream::start(move |r: &Recorded| {
        c.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let stream = body["stream"].as_bool().unwrap_or(false);
        let text = body.to_string();
        let reply = if text.contains("fail") {
            Reply::Full(
                400,
                vec![],
                br#"{"error":{"message":"no","type":"invalid_request_error"}}"#.to_vec(),
            )
        } else if r.path.ends_with("/embeddings") {
            Reply::Full(
                200,
                vec![],
                json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,0.5]}],
                       "model":"text-embedding-3-small","usage":{"prompt_tokens":3,"total_tokens":3}})
                .to_string()
                .into_bytes(),
            )
        } else if r.path.ends_with("/completions") && !r.path.ends_with("/chat/completions") {
            Reply::Full(
                200,
                vec![],
                json!({"id":"cmpl-up1","object":"text_completion","created":1717000000,"model":"gpt-4o",
                       "choices":[{"text":"legacy","index":0,"logprobs":null,"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}})
                .to_string()
                .into_bytes(),
            )
        } else if r.path.ends_with("/responses") {
            let resp = json!({"id":"resp_up1","object":"response","created_at":1717000000,
                "status":"completed","model":"gpt-4o","output":[{"type":"message","id":"msg_up1",
                "status":"completed","role":"assistant","content":[{"type":"output_text",
                "text":"from responses","annotations":[]}]}],
                "usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}});
            if stream {
                let ev = |name: &str, data: Value| {
                    format!("event: {name}\ndata: {data}\n\n").into_bytes()
                };
                let mut created = resp.clone();
                created["status"] = json!("in_progress");
                created["output"] = json!([]);
                Reply::Stream(
                    vec![
                        ev(
                            "response.created",
                            json!({"type":"response.created","sequence_number":0,"response":created}),
                        ),
                        ev(
                            "response.output_text.delta",
                            json!({"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_up1","output_index":0,"content_index":0,"delta":"from responses"}),
                        ),
                        ev(
                            "response.completed",
                            json!({"type":"response.completed","sequence_number":2,"response":resp}),
                        ),
                    ],
                    Duration::ZERO,
                )
            } else {
                Reply::Full(200, vec![], resp.to_string().into_bytes())
            }
        } else if text.contains("slow stream") {
            let all = chat_stream("gpt-4o", &["Hello", " there", "!"], 9);
            let events: Vec<Vec<u8>> = all
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| [l, b"\n\n"].concat())
                .collect();
            Reply::Stream(events, Duration::from_millis(150))
        } else if text.contains("cut") {
            let all = chat_stream("gpt-4o", &["a", "b"], 3);
            Reply::StreamCut(vec![all[..120].to_vec()])
        } else if let Some(n) = text
            .split("big:")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse::<usize>().ok())
        {
            let mut s = String::with_capacity(n);
            while s.len() < n {
                s.push_str(&format!("{:016x}", fastrand_u64()));
            }
            Reply::Full(200, vec![], chat_completion("gpt-4o", &s, 10, 1000))
        } else if stream {
            let pieces = chat_stream("gpt-4o", &["Hello", " there", "!"], 9);
            // Split mid-event on purpose: the gateway records what it sends, whatever the split.
            let (a, b) = pieces.split_at(pieces.len() / 3);
            let (b, c) = b.split_at(b.len() / 2);
            Reply::Stream(
                vec![a.to_vec(), b.to_vec(), c.to_vec()],
                Duration::from_millis(20),
            )
        } else {
            Reply::Full(200, vec![], chat_completion("gpt-4o", "Hello there!", 9, 3))
        };
        if slow.is_zero() {
            reply
        } else {
            Reply::Delay(slow, Box::new(reply))
        }
    });
    (up, calls)
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

fn gateway(upstream_url: &str, cache_section: &str) -> Gw {
    let (port, mport) = (free_port(), free_port());
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:{port}"
  metrics_listen: "127.0.0.1:{mport}"
  threads: 2
  access_log: false
  max_streams_per_key: 1000
  max_requests_in_flight_per_key: 1000
auth:
  keys:
    - {{user: alice, key: "{ALICE}"}}
    - {{user: alice, key: "{ALICE2}"}}
    - {{user: bob, key: "{BOB}"}}
    - {{user: carol, key: "{KEYED}", cache: {{ttl_seconds: 60}}}}
{cache_section}
providers:
  mock: {{}}
  openai:
    endpoint: "{upstream_url}"
    auth: {{method: api_key, config: {{api_key: "sk-up"}}}}
model_mappings:
  cached: {{default_provider: openai, providers: {{openai: {{model: gpt-4o}}}}, cache: {{ttl_seconds: 60}}}}
  cached-user: {{default_provider: openai, providers: {{openai: {{model: gpt-4o}}}}, cache: {{ttl_seconds: 60, scope: user}}}}
  cached-shared: {{default_provider: openai, providers: {{openai: {{model: gpt-4o}}}}, cache: {{ttl_seconds: 60, scope: shared}}}}
  plain: {{default_provider: openai, providers: {{openai: {{model: gpt-4o}}}}}}
  text-embedding-3-small: {{default_provider: openai, providers: {{openai: {{}}}}, cache: {{ttl_seconds: 60}}}}
routing:
  retries: {{max_attempts: 1}}
"#
    );
    let config = Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = GatewayHandle::start(Arc::new(config));
    Gw {
        base: format!("http://127.0.0.1:{port}"),
        metrics: format!("http://127.0.0.1:{mport}/metrics"),
        _handle: handle,
    }
}

struct Answer {
    status: u16,
    cache: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(gw: &Gw, key: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = client()
        .post(format!("{}{path}", gw.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-switchyard-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.bytes().await.unwrap().to_vec();
    Answer {
        status,
        cache,
        body,
    }
}

/// Ids and times blanked, for comparing a replay with the original.
fn without_identity(s: &str) -> String {
    regex_created(&regex_lite(s, &["\"id\":\""]))
}

/// Blanks the first id's value everywhere it occurs (the answer's own id).
fn regex_lite(s: &str, keys: &[&str]) -> String {
    let mut out = s.to_owned();
    for k in keys {
        if let Some(at) = out.find(k) {
            let start = at + k.len();
            let end = start + out[start..].find('"').unwrap();
            let id = out[start..end].to_owned();
            out = out.replace(&format!("\"{id}\""), "\"ID\"");
        }
    }
    out
}

fn regex_created(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let next = ["\"created\":", "\"created_at\":"]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((i, n)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + n]);
        rest = &rest[i + n..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        out.push('T');
        rest = &rest[digits..];
    }
}

fn first_id(a: &Answer) -> String {
    let t = a.text();
    let at = t.find("\"id\":\"").expect("an id") + 6;
    t[at..at + t[at..].find('"').unwrap()].to_owned()
}

async fn metric(gw: &Gw, name_and_labels: &str) -> f64 {
    let text = client()
        .get(&gw.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Each front door and endpoint: the first request misses and calls upstream, an identical
/// one (keys reordered, whitespace, `user` and `metadata` changed) hits without a call and
/// answers the same with a fresh id; `no-cache` bypasses and calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_door_hits_misses_and_bypasses() {
    let (up, calls) = upstream(Duration::ZERO);
    let gw = gateway(&up.url(), "");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "/v1/chat/completions",
            r#"{"model":"cached","messages":[{"role":"user","content":"hi"}],"user":"u1"}"#.into(),
            r#"{ "user": "u2", "messages": [ {"content": "hi", "role": "user"} ], "model": "cached" }"#.into(),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"cached","stream":true,"messages":[{"role":"user","content":"hi"}]}"#.into(),
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"cached","metadata":{"a":"b"}}"#.into(),
        ),
        (
            "/v1/completions",
            r#"{"model":"cached","prompt":"say"}"#.into(),
            r#"{"prompt":"say","model":"cached"}"#.into(),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"embed me"}"#.into(),
            r#"{"input":"embed me","model":"text-embedding-3-small"}"#.into(),
        ),
        (
            "/v1/messages",
            r#"{"model":"cached","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#.into(),
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"model":"cached"}"#.into(),
        ),
        (
            "/v1/messages",
            r#"{"model":"cached","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#.into(),
            r#"{"stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"model":"cached"}"#.into(),
        ),
        (
            "/v1/responses",
            r#"{"model":"cached","input":"hello","store":false}"#.into(),
            r#"{"input":"hello","model":"cached","store":false}"#.into(),
        ),
        (
            "/v1/responses",
            r#"{"model":"cached","input":"hello","stream":true,"store":false}"#.into(),
            r#"{"stream":true,"input":"hello","model":"cached","store":false}"#.into(),
        ),
    ];
    for (path, first, second) in &cases {
        let before = calls.load(Ordering::SeqCst);
        let a = send(&gw, ALICE, path, first, &[]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert_eq!(a.cache.as_deref(), Some("miss"), "{path}");
        assert_eq!(calls.load(Ordering::SeqCst), before + 1, "{path}");
        let b = send(&gw, ALICE, path, second, &[]).await;
        assert_eq!(b.status, 200, "{path}");
        assert_eq!(b.cache.as_deref(), Some("hit"), "{path} {second}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 1,
            "{path}: a hit calls nobody"
        );
        assert_eq!(
            without_identity(&a.text()),
            without_identity(&b.text()),
            "{path}: the replay is the original but for ids and times"
        );
        if !path.ends_with("embeddings") {
            assert_ne!(first_id(&a), first_id(&b), "{path}: a fresh id");
        }
        if !a.text().contains("data:") {
            // A JSON answer stays valid JSON with the client's model name.
            let (ja, jb) = (a.json(), b.json());
            assert_eq!(ja["model"], jb["model"], "{path}");
        }
        let c = send(&gw, ALICE, path, second, &[("cache-control", "no-cache")]).await;
        assert_eq!(c.status, 200);
        assert_eq!(c.cache.as_deref(), Some("bypass"), "{path}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 2,
            "{path}: bypass calls"
        );
    }
    // A model without `cache:` and a key without it: no header, no caching.
    let body = r#"{"model":"plain","messages":[{"role":"user","content":"hi"}]}"#;
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..2 {
        let a = send(&gw, ALICE, "/v1/chat/completions", body, &[]).await;
        assert_eq!((a.status, a.cache), (200, None));
    }
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);
    // A key with `cache:` caches any model it calls.
    let a = send(&gw, KEYED, "/v1/chat/completions", body, &[]).await;
    let b = send(&gw, KEYED, "/v1/chat/completions", body, &[]).await;
    assert_eq!(
        (a.cache.as_deref(), b.cache.as_deref()),
        (Some("miss"), Some("hit"))
    );
    assert!(metric(&gw, "ai_proxy_cache_requests_total{result=\"hit\"}").await >= 9.0);
    assert!(metric(&gw, "ai_proxy_cache_requests_total{result=\"bypass\"}").await >= 8.0);
    // gpt-4o is priced: the hits saved its cost.
    assert!(metric(&gw, "ai_proxy_cost_saved_usd_total").await > 0.0);
    assert!(metric(&gw, "ai_proxy_cache_bytes").await > 0.0);
    assert!(
        metric(
            &gw,
            "ai_proxy_requests_total{model=\"cached\",provider=\"cache\",status=\"200\"}"
        )
        .await
            >= 7.0
    );
}

/// A streamed hit is the original stream event for event (ids and times aside), ends with
/// `[DONE]`, and a Responses hit that is stored can be fetched under its fresh id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_hit_replays_the_original_events() {
    let (up, _calls) = upstream(Duration::ZERO);
    let gw = gateway(&up.url(), "");
    let body = r#"{"model":"cached","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream please"}]}"#;
    let a = send(&gw, ALICE, "/v1/chat/completions", body, &[]).await;
    let b = send(&gw, ALICE, "/v1/chat/completions", body, &[]).await;
    assert_eq!(b.cache.as_deref(), Some("hit"));
    let (ta, tb) = (a.text(), b.text());
    let events = |t: &str| t.split("\n\n").filter(|e| !e.is_empty()).count();
    assert_eq!(events(&ta), events(&tb));
    assert!(events(&ta) >= 6, "{ta}");
    assert!(tb.ends_with("data: [DONE]\n\n"));
    assert_eq!(without_identity(&ta), without_identity(&tb));
    // Every chunk of the replay carries the same fresh id.
    let id_b = first_id(&b);
    assert_ne!(id_b, first_id(&a));
    assert_eq!(
        tb.matches(&format!("\"id\":\"{id_b}\"")).count(),
        events(&tb) - 1
    );
    // Without include_usage the stream differs (no usage chunk): its own entry.
    let plain = r#"{"model":"cached","stream":true,"messages":[{"role":"user","content":"stream please"}]}"#;
    let c = send(&gw, ALICE, "/v1/chat/completions", plain, &[]).await;
    assert_eq!(c.cache.as_deref(), Some("miss"));

    // Responses with store: the hit's answer is stored under its own id.
    let body = r#"{"model":"cached","input":"remember me"}"#;
    let a = send(&gw, ALICE, "/v1/responses", body, &[]).await;
    let b = send(&gw, ALICE, "/v1/responses", body, &[]).await;
    assert_eq!(
        (a.cache.as_deref(), b.cache.as_deref()),
        (Some("miss"), Some("hit"))
    );
    let id = b.json()["id"].as_str().unwrap().to_owned();
    assert_ne!(id, a.json()["id"].as_str().unwrap());
    let got = client()
        .get(format!("{}/v1/responses/{id}", gw.base))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        200,
        "the hit was stored for previous_response_id"
    );
}

/// Scope `key` (the default) isolates keys, even of one user; `user` shares among a user's
/// keys; `shared` among everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_isolate_callers() {
    let (up, _calls) = upstream(Duration::ZERO);
    let gw = gateway(&up.url(), "");
    let chat = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"scoped"}}]}}"#)
    };
    let path = "/v1/chat/completions";
    let r = |a: Answer| a.cache.unwrap();
    assert_eq!(
        r(send(&gw, ALICE, path, &chat("cached"), &[]).await),
        "miss"
    );
    assert_eq!(r(send(&gw, ALICE, path, &chat("cached"), &[]).await), "hit");
    assert_eq!(
        r(send(&gw, ALICE2, path, &chat("cached"), &[]).await),
        "miss"
    );
    assert_eq!(r(send(&gw, BOB, path, &chat("cached"), &[]).await), "miss");

    assert_eq!(
        r(send(&gw, ALICE, path, &chat("cached-user"), &[]).await),
        "miss"
    );
    assert_eq!(
        r(send(&gw, ALICE2, path, &chat("cached-user"), &[]).await),
        "hit"
    );
    assert_eq!(
        r(send(&gw, BOB, path, &chat("cached-user"), &[]).await),
        "miss"
    );

    assert_eq!(
        r(send(&gw, ALICE, path, &chat("cached-shared"), &[]).await),
        "miss"
    );
    assert_eq!(
        r(send(&gw, BOB, path, &chat("cached-shared"), &[]).await),
        "hit"
    );
}

/// The per-request TTL header shortens an entry's life; no-store keeps an answer out;
/// `x-switchyard-cache-ttl: 0` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_no_store() {
    let (up, calls) = upstream(Duration::ZERO);
    let gw = gateway(&up.url(), "");
    let path = "/v1/chat/completions";
    let body = r#"{"model":"cached","messages":[{"role":"user","content":"short-lived"}]}"#;
    let ttl = [("x-switchyard-cache-ttl", "1")];
    assert_eq!(
        send(&gw, ALICE, path, body, &ttl).await.cache.unwrap(),
        "miss"
    );
    assert_eq!(
        send(&gw, ALICE, path, body, &[]).await.cache.unwrap(),
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        send(&gw, ALICE, path, body, &[]).await.cache.unwrap(),
        "miss",
        "expired"
    );
    assert_eq!(
        send(&gw, ALICE, path, body, &[]).await.cache.unwrap(),
        "hit"
    );

    for h in [
        ("cache-control", "no-store"),
        ("x-switchyard-cache-ttl", "0"),
    ] {
        let body = format!(
            r#"{{"model":"cached","messages":[{{"role":"user","content":"never kept {}"}}]}}"#,
            h.0
        );
        let before = calls.load(Ordering::SeqCst);
        assert_eq!(
            send(&gw, ALICE, path, &body, &[h]).await.cache.unwrap(),
            "miss"
        );
        assert_eq!(
            send(&gw, ALICE, path, &body, &[]).await.cache.unwrap(),
            "miss"
        );
        assert_eq!(calls.load(Ordering::SeqCst), before + 2);
    }
    let bad = send(
        &gw,
        ALICE,
        path,
        body,
        &[("x-switchyard-cache-ttl", "soon")],
    )
    .await;
    assert_eq!(bad.status, 400);
}

/// Errors and streams cut short are never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_cut_streams_are_not_stored() {
    let (up, calls) = upstream(Duration::ZERO);
    let gw = gateway(&up.url(), "");
    let path = "/v1/chat/completions";
    let fail = r#"{"model":"cached","messages":[{"role":"user","content":"fail"}]}"#;
    let cut = r#"{"model":"cached","stream":true,"messages":[{"role":"user","content":"cut"}]}"#;
    for body in [fail, cut] {
        let before = calls.load(Ordering::SeqCst);
        for _ in 0..2 {
            let a = send(&gw, ALICE, path, body, &[]).await;
            assert_eq!(a.cache.as_deref(), Some("miss"), "{body}: {}", a.text());
        }
        assert_eq!(calls.load(Ordering::SeqCst), before + 2, "{body}");
    }
}

/// 100 identical requests at once make one upstream call, streamed and not; every caller
/// gets the whole answer (with its own id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_in_flight_share_one_call() {
    let (up, calls) = upstream(Duration::from_millis(400));
    let gw = Arc::new(gateway(&up.url(), ""));
    for (n, stream) in [(0, false), (1, true)] {
        let body = format!(
            r#"{{"model":"cached","stream":{stream},"messages":[{{"role":"user","content":"together {n}"}}]}}"#
        );
        let before = calls.load(Ordering::SeqCst);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (gw, body) = (gw.clone(), body.clone());
                tokio::spawn(
                    async move { send(&gw, ALICE, "/v1/chat/completions", &body, &[]).await },
                )
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        let mut texts = std::collections::HashSet::new();
        for t in tasks {
            let a = t.await.unwrap();
            assert_eq!(a.status, 200, "{}", a.text());
            assert!(matches!(a.cache.as_deref(), Some("hit" | "miss")));
            ids.insert(first_id(&a));
            texts.insert(without_identity(&a.text()));
            if stream {
                assert!(a.text().ends_with("data: [DONE]\n\n"), "{}", a.text());
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), before + 1, "stream: {stream}");
        assert_eq!(ids.len(), 100, "each caller its own id");
        assert_eq!(texts.len(), 1, "one answer");
    }
}

/// A leader whose client goes away does not fail its followers: one of them makes the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_leader_leaves_its_followers_answered() {
    let (up, calls) = upstream(Duration::from_millis(600));
    let gw = Arc::new(gateway(&up.url(), ""));
    for stream in [false, true] {
        let body = format!(
            r#"{{"model":"cached","stream":{stream},"messages":[{{"role":"user","content":"leader leaves"}}]}}"#
        );
        let before = calls.load(Ordering::SeqCst);
        let leader = {
            let (gw, body) = (gw.clone(), body.clone());
            tokio::spawn(async move { send(&gw, ALICE, "/v1/chat/completions", &body, &[]).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let followers: Vec<_> = (0..5)
            .map(|_| {
                let (gw, body) = (gw.clone(), body.clone());
                tokio::spawn(
                    async move { send(&gw, ALICE, "/v1/chat/completions", &body, &[]).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
        leader.abort();
        for f in followers {
            let a = f.await.unwrap();
            assert_eq!(a.status, 200, "{}", a.text());
            if stream {
                assert!(a.text().ends_with("data: [DONE]\n\n"), "{}", a.text());
            } else {
                assert_eq!(a.json()["choices"][0]["message"]["content"], "Hello there!");
            }
        }
        let made = calls.load(Ordering::SeqCst) - before;
        assert_eq!(
            made, 2,
            "the leader's call and one follower's (stream: {stream})"
        );
    }
}

/// Distinct large answers flooding a small memory cache: the bound holds, entries are
/// evicted, recent ones still hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bound_holds_under_a_flood() {
    let (up, _calls) = upstream(Duration::ZERO);
    let max = 300_000;
    let gw = gateway(&up.url(), &format!("cache: {{max_bytes: {max}}}"));
    for i in 0..40 {
        let body = format!(
            r#"{{"model":"cached","messages":[{{"role":"user","content":"flood {i} big:30000"}}]}}"#
        );
        let a = send(&gw, ALICE, "/v1/chat/completions", &body, &[]).await;
        assert_eq!(a.status, 200);
        assert!(a.body.len() > 30_000);
        let held = metric(&gw, "ai_proxy_cache_bytes").await;
        assert!(held <= max as f64, "held {held} > {max}");
    }
    assert!(metric(&gw, "ai_proxy_cache_evictions_total").await > 0.0);
    assert!(metric(&gw, "ai_proxy_cache_bytes").await > 100_000.0);
}

/// `cache:` settings are checked.
#[test]
fn cache_settings_are_validated() {
    let base = |extra: &str| {
        format!(
            "providers: {{mock: {{}}}}\nmodel_mappings:\n  m: {{default_provider: mock, providers: {{mock: {{}}}}{extra}}}\n"
        )
    };
    let bad = [
        (
            base(", cache: {ttl_seconds: 0}"),
            "model_mappings.m.cache.ttl_seconds",
        ),
        (
            base(", cache: {ttl_seconds: 5, scope: team}"),
            "model_mappings.m.cache.scope",
        ),
        (base("") + "cache: {backend: disk}\n", "cache.backend"),
        (base("") + "cache: {backend: redis}\n", "cache.redis_url"),
        (base("") + "cache: {max_bytes: 10}\n", "cache.max_bytes"),
    ];
    for (yaml, path) in bad {
        let e = Config::parse(&yaml, &|_| None).err().unwrap().to_string();
        assert!(e.contains(path), "{path}: {e}");
    }
    let ok = base(", cache: {ttl_seconds: 5, scope: shared}")
        + "cache: {backend: redis, redis_url: \"redis://127.0.0.1:1\", compress_min_bytes: 0}\n";
    Config::parse(&ok, &|_| None).unwrap();
}

fn redis_gateway(upstream_url: &str, redis: &str) -> Gw {
    gateway(
        upstream_url,
        &format!("cache: {{backend: redis, redis_url: \"{redis}\"}}"),
    )
}

async fn until_hit(gw: &Gw, body: &str) -> Answer {
    let t = Instant::now();
    loop {
        let a = send(gw, ALICE, "/v1/chat/completions", body, &[]).await;
        if a.cache.as_deref() == Some("hit") || t.elapsed() > Duration::from_secs(5) {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two gateways on one Redis share entries (`SWITCHYARD_TEST_REDIS`, from tests/services.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_shared_between_gateways() {
    let Ok(redis) = std::env::var("SWITCHYARD_TEST_REDIS") else {
        eprintln!(
            "\n!!! SWITCHYARD_TEST_REDIS is not set: the shared Redis cache test is SKIPPED\n"
        );
        return;
    };
    let (up, calls) = upstream(Duration::ZERO);
    let (one, two) = (
        redis_gateway(&up.url(), &redis),
        redis_gateway(&up.url(), &redis),
    );
    let unique = |what: &str| {
        format!(
            r#"{{"model":"cached-shared","messages":[{{"role":"user","content":"{what} {}"}}]}}"#,
            fastrand_u64()
        )
    };
    // Each gateway connects to Redis on first use, and a lookup slower than its bound is a
    // miss by design: connect both first, so the counted requests meet a warm connection.
    for gw in [&one, &two] {
        let warm = unique("warm");
        send(gw, ALICE, "/v1/chat/completions", &warm, &[]).await;
        until_hit(gw, &warm).await;
    }
    let base = calls.load(Ordering::SeqCst);
    let body = unique("fleet");
    let a = send(&one, ALICE, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(a.cache.as_deref(), Some("miss"));
    // Stored (gateway one, which keeps nothing locally, finds it in Redis): now the other.
    assert_eq!(until_hit(&one, &body).await.cache.as_deref(), Some("hit"));
    let b = send(&two, ALICE, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(
        b.cache.as_deref(),
        Some("hit"),
        "the other gateway sees the entry"
    );
    assert_eq!(calls.load(Ordering::SeqCst) - base, 1);
    assert_eq!(without_identity(&a.text()), without_identity(&b.text()));
}

/// A Redis that stops answering mid-test: misses, never errors; back, hits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_misses() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("\n!!! redis-server is not installed: the Redis outage test is SKIPPED\n");
        return;
    }
    let port = free_port();
    let start = || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = start();
    let url = format!("redis://127.0.0.1:{port}");
    let (up, calls) = upstream(Duration::ZERO);
    let gw = redis_gateway(&up.url(), &url);
    let body = r#"{"model":"cached","messages":[{"role":"user","content":"outage"}]}"#;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = send(&gw, ALICE, "/v1/chat/completions", body, &[]).await;
    assert_eq!((a.status, a.cache.as_deref()), (200, Some("miss")));
    assert_eq!(until_hit(&gw, body).await.cache.as_deref(), Some("hit"));
    server.kill().unwrap();
    server.wait().unwrap();
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        let t = Instant::now();
        let a = send(&gw, ALICE, "/v1/chat/completions", body, &[]).await;
        assert_eq!(
            (a.status, a.cache.as_deref()),
            (200, Some("miss")),
            "{}",
            a.text()
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "an outage does not stall requests"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), before + 3);
    // Redis back: stored and hit again (after the retry pause).
    let mut server = start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    let mut hit = false;
    while t.elapsed() < Duration::from_secs(10) && !hit {
        hit = send(&gw, ALICE, "/v1/chat/completions", body, &[])
            .await
            .cache
            .as_deref()
            == Some("hit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.kill().unwrap();
    let _ = server.wait();
    assert!(hit, "hits again once Redis is back");
}

/// A leader whose client leaves mid-stream keeps relaying for the requests that joined it:
/// they get the whole stream, and the one upstream call suffices.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_leaving_mid_stream_still_feeds_its_followers() {
    let (up, calls) = upstream(Duration::ZERO);
    let gw = Arc::new(gateway(&up.url(), ""));
    let body =
        r#"{"model":"cached","stream":true,"messages":[{"role":"user","content":"slow stream"}]}"#;
    let leader = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let resp = client()
                .post(format!("{}/v1/chat/completions", gw.base))
                .bearer_auth(ALICE)
                .body(body)
                .send()
                .await
                .unwrap();
            let mut resp = resp;
            // Read the first piece, wait for the followers to join, then go away.
            let first = resp.chunk().await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            drop(resp);
            first
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { send(&gw, ALICE, "/v1/chat/completions", body, &[]).await })
        })
        .collect();
    assert!(leader.await.unwrap().is_some());
    for f in followers {
        let a = f.await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.text().ends_with("data: [DONE]\n\n"), "{}", a.text());
        assert!(a.text().contains(" there"), "{}", a.text());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call for all");
    // The answer was complete: it was stored.
    assert_eq!(
        send(&gw, ALICE, "/v1/chat/completions", body, &[])
            .await
            .cache
            .as_deref(),
        Some("hit")
    );
}
