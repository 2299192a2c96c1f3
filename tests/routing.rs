//! Routing and resilience through the unified API: fallback, retries with backoff and
//! Retry-After, no retry after the first streamed byte, load balancing, circuit breaking,
//! provider pinning, hedging and hot reload.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A provider block of kind openai named `name` pointing at `url`.
fn openai_provider(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    type: openai\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n"
    )
}

fn ok_reply(tag: &str) -> Reply {
    Reply::Full(200, vec![], chat_completion("m-up", tag, 1, 1))
}

fn status_reply(status: u16, retry_after: Option<&str>) -> Reply {
    let headers = retry_after
        .map(|r| vec![("retry-after".to_string(), r.to_string())])
        .unwrap_or_default();
    Reply::Full(status, headers, format!(r#"{{"error":{{"message":"upstream {status}","type":"server_error","param":null,"code":null}}}}"#).into_bytes())
}

async fn chat(gw: &Gateway, model: &str) -> reqwest::Response {
    chat_with(gw, model, None).await
}

async fn chat_with(gw: &Gateway, model: &str, pin: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(p) = pin {
        req = req.header("x-switchyard-provider", p);
    }
    req.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn content(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `primary` and `secondary` both serve model `m` (primary by default).
fn two_providers(primary: &MockUpstream, secondary: &str, routing_extra: &str) -> Gateway {
    let providers =
        openai_provider("primary", &primary.url()) + &openai_provider("secondary", secondary);
    let routes = format!(
        "model_mappings:\n  m:\n    default_provider: primary\n    providers:\n      primary: {{model: m-up}}\n      secondary: {{model: m-up}}\nrouting:\n  fallback: {{enabled: true}}\n{routing_extra}"
    );
    gateway_with("", &providers, &routes)
}

#[tokio::test]
async fn falls_back_to_the_next_provider_on_5xx_and_names_who_answered() {
    let primary = MockUpstream::start(|_| status_reply(503, None));
    let secondary = MockUpstream::start(|_| ok_reply("from secondary"));
    let gw = two_providers(&primary, &secondary.url(), "");
    let r = chat(&gw, "m").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-switchyard-provider"), "secondary");
    assert_eq!(header(&r, "x-switchyard-model"), "m-up");
    assert_eq!(header(&r, "x-switchyard-attempts"), "2");
    assert_eq!(content(r).await, "from secondary");
    assert_eq!(primary.recorded().len(), 1);
}

#[tokio::test]
async fn falls_back_on_refused_connections_and_reports_the_last_error_when_all_fail() {
    let secondary = MockUpstream::start(|_| ok_reply("ok"));
    let dead = MockUpstream::start(|_| ok_reply("unused"));
    let providers = openai_provider("primary", &format!("http://127.0.0.1:{}", free_port()))
        + &openai_provider("secondary", &secondary.url());
    let routes = "model_mappings:\n  m: {default_provider: primary, providers: {primary: {}, secondary: {}}}\nrouting:\n  fallback: {enabled: true}\n";
    let gw = gateway_with("", &providers, routes);
    let r = chat(&gw, "m").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-switchyard-provider")),
        (200, "secondary".into())
    );
    drop(dead);

    // Fallback off: the failure is the client's answer.
    let gw = gateway_with(
        "",
        &openai_provider("primary", &format!("http://127.0.0.1:{}", free_port())),
        "model_mappings:\n  m: {providers: {primary: {}}}\n",
    );
    assert_eq!(chat(&gw, "m").await.status(), 502);
}

#[tokio::test]
async fn retries_the_same_provider_with_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = MockUpstream::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            status_reply(500, None)
        } else {
            ok_reply("third time")
        }
    });
    let providers = openai_provider("only", &up.url());
    let routes = "model_mappings:\n  m: {providers: {only: {}}}\nrouting:\n  retries: {max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50}\n";
    let gw = gateway_with("", &providers, routes);
    let r = chat(&gw, "m").await;
    assert_eq!(header(&r, "x-switchyard-attempts"), "3");
    assert_eq!(content(r).await, "third time");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_or_the_next_provider_is_tried_at_once() {
    // Another provider exists: no waiting for the 30 s Retry-After.
    let primary = MockUpstream::start(|_| status_reply(429, Some("30")));
    let secondary = MockUpstream::start(|_| ok_reply("next"));
    let gw = two_providers(&primary, &secondary.url(), "  retries: {max_attempts: 3}\n");
    let started = Instant::now();
    let r = chat(&gw, "m").await;
    assert_eq!(header(&r, "x-switchyard-provider"), "secondary");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        started.elapsed()
    );

    // Alone: wait the provider's Retry-After, then succeed.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = MockUpstream::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            status_reply(429, Some("1"))
        } else {
            ok_reply("after waiting")
        }
    });
    let routes = "model_mappings:\n  m: {providers: {only: {}}}\nrouting:\n  retries: {max_attempts: 2, backoff_initial_ms: 1, backoff_max_ms: 1}\n";
    let gw = gateway_with("", &openai_provider("only", &up.url()), routes);
    let started = Instant::now();
    let r = chat(&gw, "m").await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After not honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(content(r).await, "after waiting");

    // Out of attempts: the client gets the provider's 429 and its Retry-After.
    let up = MockUpstream::start(|_| status_reply(429, Some("9")));
    let gw = gateway_with(
        "",
        &openai_provider("only", &up.url()),
        "model_mappings:\n  m: {providers: {only: {}}}\n",
    );
    let r = chat(&gw, "m").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "retry-after")),
        (429, "9".into())
    );
}

#[tokio::test]
async fn no_retry_after_the_first_streamed_byte() {
    let s = chat_stream("m-up", &["partial", " answer"], 3);
    let cut = s[..s.len() / 2].to_vec();
    let primary = MockUpstream::start(move |_| Reply::StreamCut(vec![cut.clone()]));
    let secondary = MockUpstream::start(|_| ok_reply("must not be used"));
    let gw = two_providers(&primary, &secondary.url(), "");
    let text = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("partial"), "{text}");
    assert!(
        text.trim_end().ends_with('}') && text.contains("\"error\""),
        "stream must end with an error event: {text}"
    );
    assert!(
        secondary.recorded().is_empty(),
        "retried after bytes reached the client"
    );
}

/// `n` healthy upstreams and their provider blocks, named `{prefix}0`, `{prefix}1`, ...
fn upstreams(prefix: &str, n: usize) -> (Vec<MockUpstream>, String) {
    let ups: Vec<MockUpstream> = (0..n)
        .map(|i| MockUpstream::start(move |_| ok_reply(&format!("u{i}"))))
        .collect();
    let providers = ups
        .iter()
        .enumerate()
        .map(|(i, u)| openai_provider(&format!("{prefix}{i}"), &u.url()))
        .collect();
    (ups, providers)
}

#[tokio::test]
async fn round_robin_is_exact_and_weighted_is_proportional() {
    let (ups, providers) = upstreams("p", 3);
    let routes = "model_mappings:\n  m: {providers: {p0: {}, p1: {}, p2: {}}}\nrouting:\n  load_balancing: {enabled: true, strategy: round_robin}\n";
    let gw = gateway_with("", &providers, routes);
    for _ in 0..30 {
        assert_eq!(chat(&gw, "m").await.status(), 200);
    }
    let counts: Vec<usize> = ups.iter().map(|u| u.recorded().len()).collect();
    assert_eq!(counts, vec![10, 10, 10]);

    let (ups, providers) = upstreams("w", 2);
    let routes = "model_mappings:\n  m: {load_balancing: weighted, providers: {w0: {weight: 3}, w1: {weight: 1}}}\n";
    let gw = gateway_with("", &providers, routes);
    for _ in 0..80 {
        assert_eq!(chat(&gw, "m").await.status(), 200);
    }
    let (a, b) = (
        ups[0].recorded().len() as f64,
        ups[1].recorded().len() as f64,
    );
    assert!(
        (a / (a + b) - 0.75).abs() < 0.05,
        "weighted 3:1 gave {a}:{b}"
    );
}

#[tokio::test]
async fn least_busy_and_least_latency_prefer_the_idle_and_the_fast() {
    let slow = MockUpstream::start(|_| {
        Reply::Delay(Duration::from_millis(300), Box::new(ok_reply("slow")))
    });
    let fast = MockUpstream::start(|_| ok_reply("fast"));
    let providers = openai_provider("slow", &slow.url()) + &openai_provider("fast", &fast.url());
    let routes =
        "model_mappings:\n  m: {load_balancing: least_latency, providers: {slow: {}, fast: {}}}\n";
    let gw = gateway_with("", &providers, routes);
    for _ in 0..10 {
        chat(&gw, "m").await;
    }
    assert!(
        fast.recorded().len() >= 8,
        "least_latency sent {} of 10 to the fast provider",
        fast.recorded().len()
    );

    let slow = MockUpstream::start(|_| {
        Reply::Delay(Duration::from_millis(500), Box::new(ok_reply("slow")))
    });
    let idle = MockUpstream::start(|_| {
        Reply::Delay(Duration::from_millis(500), Box::new(ok_reply("idle")))
    });
    let providers = openai_provider("a", &slow.url()) + &openai_provider("b", &idle.url());
    let routes = "model_mappings:\n  m: {load_balancing: least_busy, providers: {a: {}, b: {}}}\n";
    let gw = Arc::new(gateway_with("", &providers, routes));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30 * i)).await;
                chat(&gw, "m").await.status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        (slow.recorded().len(), idle.recorded().len()),
        (3, 3),
        "least_busy should alternate"
    );
}

#[tokio::test]
async fn the_circuit_opens_after_failures_skips_the_provider_and_all_down_is_a_fast_503() {
    let primary = MockUpstream::start(|_| status_reply(503, None));
    let secondary = MockUpstream::start(|_| ok_reply("healthy"));
    let gw = two_providers(
        &primary,
        &secondary.url(),
        "  health: {failure_threshold: 2, cooldown_seconds: 60}\n",
    );
    for _ in 0..6 {
        assert_eq!(chat(&gw, "m").await.status(), 200);
    }
    assert_eq!(
        primary.recorded().len(),
        2,
        "an open circuit must skip the provider"
    );
    let report: Value = client()
        .get(format!("{}/health/providers", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["providers"]["primary"]["health"]["state"], "open");
    assert_eq!(
        report["providers"]["secondary"]["health"]["state"],
        "closed"
    );
    let ready: Value = client()
        .get(format!("{}/ready", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["providers"]["primary"]["usable"], false);

    // Everything down: answered at once, not after timeouts.
    let a = MockUpstream::start(|_| status_reply(500, None));
    let b = MockUpstream::start(|_| status_reply(500, None));
    let gw = two_providers(
        &a,
        &b.url(),
        "  health: {failure_threshold: 1, cooldown_seconds: 60}\n",
    );
    assert_eq!(chat(&gw, "m").await.status(), 500);
    let started = Instant::now();
    let r = chat(&gw, "m").await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(500));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_unavailable");
    let m = metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_provider_up{provider=\"primary\"} 0"],
    )
    .await;
    assert!(m.contains("ai_proxy_provider_errors_total"), "{m}");
}

#[tokio::test]
async fn a_half_open_probe_closes_the_circuit_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = MockUpstream::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            status_reply(500, None)
        } else {
            ok_reply("recovered")
        }
    });
    let routes = "model_mappings:\n  m: {providers: {only: {}}}\nrouting:\n  health: {failure_threshold: 1, cooldown_seconds: 1}\n";
    let gw = gateway_with("", &openai_provider("only", &up.url()), routes);
    assert_eq!(chat(&gw, "m").await.status(), 500);
    assert_eq!(chat(&gw, "m").await.status(), 503, "circuit open");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(chat(&gw, "m").await.status(), 200, "half-open probe");
    assert_eq!(chat(&gw, "m").await.status(), 200, "closed again");
}

#[tokio::test]
async fn callers_can_pin_a_provider_among_the_models_own() {
    let primary = MockUpstream::start(|_| ok_reply("p"));
    let secondary = MockUpstream::start(|_| ok_reply("s"));
    let gw = two_providers(&primary, &secondary.url(), "");
    assert_eq!(
        content(chat_with(&gw, "m", Some("secondary")).await).await,
        "s"
    );
    let r = chat_with(&gw, "m", Some("mock")).await;
    assert_eq!(r.status(), 400);
    assert!(
        secondary.last().header("x-switchyard-provider").is_none(),
        "control header leaked upstream"
    );
}

#[tokio::test]
async fn hedging_takes_the_faster_of_two_providers() {
    let primary =
        MockUpstream::start(|_| Reply::Delay(Duration::from_secs(3), Box::new(ok_reply("slow"))));
    let secondary = MockUpstream::start(|_| ok_reply("hedged"));
    let providers = openai_provider("primary", &primary.url())
        + &openai_provider("secondary", &secondary.url());
    let routes = "model_mappings:\n  m: {default_provider: primary, hedge_after_ms: 200, providers: {primary: {}, secondary: {}}}\n";
    let gw = gateway_with("", &providers, routes);
    let started = Instant::now();
    let r = chat(&gw, "m").await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "hedge did not cut the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(header(&r, "x-switchyard-attempts"), "2");
    assert_eq!(header(&r, "x-switchyard-provider"), "secondary");
    assert_eq!(content(r).await, "hedged");
}

#[tokio::test]
async fn the_total_timeout_bounds_retries() {
    let up =
        MockUpstream::start(|_| Reply::Delay(Duration::from_secs(5), Box::new(ok_reply("late"))));
    let routes = "model_mappings:\n  m: {providers: {only: {}}}\nrouting:\n  timeout_seconds: 1\n  retries: {max_attempts: 5}\n";
    let gw = gateway_with("", &openai_provider("only", &up.url()), routes);
    let started = Instant::now();
    let r = chat(&gw, "m").await;
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reload_under_load_drops_nothing_and_applies_new_mappings() {
    let up = MockUpstream::start(|_| ok_reply("ok"));
    let providers = openai_provider("only", &up.url());
    let gw = Arc::new(gateway_with(
        "",
        &providers,
        "model_mappings:\n  m: {providers: {only: {}}}\n",
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, failures, sent) =
                (gw.clone(), stop.clone(), failures.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if chat(&gw, "m").await.status() != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let base_yaml = || {
        let port: u16 = gw.base.rsplit(':').next().unwrap().parse().unwrap();
        format!(
            "server: {{listen: \"127.0.0.1:{port}\"}}\nauth: {{keys: [{{user: alice, key: \"{GATEWAY_KEY}\"}}]}}\nproviders:\n{providers}model_mappings:\n  m: {{providers: {{only: {{}}}}}}\n"
        )
    };
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let extra = format!("  m{i}: {{providers: {{only: {{}}}}}}\n");
        let yaml = base_yaml().replace("model_mappings:\n", &format!("model_mappings:\n{extra}"));
        let next = switchyard::config::Config::parse(&yaml, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        gw.handle.live.replace(next);
    }
    // An invalid file is refused and the running config kept.
    let dir = std::env::temp_dir().join(format!("switchyard-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "server: {listen: nowhere}\n").unwrap();
    assert!(gw.handle.live.reload_from(&bad).is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(
        sent.load(Ordering::Relaxed) > 20,
        "too little load to prove anything"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert_eq!(
        chat(&gw, "m4").await.status(),
        200,
        "the last reload's mapping is live"
    );
    assert_eq!(chat(&gw, "m").await.status(), 200);
}

#[tokio::test]
async fn active_health_checks_open_and_close_the_circuit_without_client_traffic() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let up = MockUpstream::start(move |r| {
        if r.path == "/v1/models" && !h.load(Ordering::SeqCst) {
            status_reply(503, None)
        } else {
            Reply::Full(200, vec![], br#"{"object":"list","data":[]}"#.to_vec())
        }
    });
    let providers = openai_provider("checked", &up.url())
        + "    health_check: {path: /v1/models, interval_seconds: 1}\n";
    let routes = "model_mappings:\n  m: {providers: {checked: {}}}\nrouting:\n  health: {failure_threshold: 2, cooldown_seconds: 300}\n";
    let gw = gateway_with("", &providers, routes);
    let state = || async {
        let v: Value = client()
            .get(format!("{}/health/providers", gw.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["providers"]["checked"]["health"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    while state().await != "open" {
        assert!(
            Instant::now() < deadline,
            "two failed checks did not open the circuit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let checks = up.recorded();
    assert!(
        checks
            .iter()
            .all(|r| r.method == "GET" && r.path == "/v1/models"),
        "only checks were sent"
    );
    assert_eq!(
        checks[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
        "checks are authenticated"
    );
    healthy.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(4);
    while state().await != "closed" {
        assert!(
            Instant::now() < deadline,
            "a passing check did not close the circuit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(chat(&gw, "m").await.status(), 200);
}

/// Issue 20.1: a model mapped to one provider is never sent to a global fallback provider that
/// has no way of knowing it; the primary's own failure (a 429 with its Retry-After) is what the
/// client gets, not that provider's 400, and the failure is counted for the primary.
#[tokio::test]
async fn global_fallback_skips_providers_that_do_not_know_the_model() {
    let primary = MockUpstream::start(|_| status_reply(429, Some("7")));
    let other = MockUpstream::start(|_| status_reply(400, None));
    let providers =
        openai_provider("primary", &primary.url()) + &openai_provider("other", &other.url());
    let routes = "model_mappings:\n  gpt-4o: {providers: {primary: {}}}\nrouting:\n  fallback: {enabled: true, providers: [other]}\n";
    let gw = gateway_with("", &providers, routes);
    let r = chat(&gw, "gpt-4o").await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "7");
    assert_eq!(header(&r, "x-switchyard-provider"), "primary");
    assert!(other.recorded().is_empty(), "the model went to `other`");
    metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_provider_errors_total{error_type=\"rate_limit\",provider=\"primary\"} 1"],
    )
    .await;
}

/// Issue 20.1: when every attempt fails the client gets the most telling failure — the
/// primary's 429 (with Retry-After) rather than a later 503 or a fallback's 400 — and every
/// failed attempt is counted under the provider that failed.
#[tokio::test]
async fn the_most_telling_failure_wins_and_every_attempt_is_counted() {
    for (later, label) in [(503, "server_error"), (400, "client_error")] {
        let primary = MockUpstream::start(|_| status_reply(429, Some("7")));
        let secondary = MockUpstream::start(move |_| status_reply(later, None));
        let gw = two_providers(&primary, &secondary.url(), "");
        let r = chat(&gw, "m").await;
        assert_eq!(r.status(), 429, "after a {later}");
        assert_eq!(header(&r, "retry-after"), "7");
        assert_eq!(header(&r, "x-switchyard-attempts"), "2");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(secondary.recorded().len(), 1);
        let primary_line =
            "ai_proxy_provider_errors_total{error_type=\"rate_limit\",provider=\"primary\"} 1";
        let secondary_line = format!(
            "ai_proxy_provider_errors_total{{error_type=\"{label}\",provider=\"secondary\"}} 1"
        );
        metrics_containing(&gw.metrics_url, &[primary_line, secondary_line.as_str()]).await;
    }

    // A primary 503 then a secondary 429: the rate limit says more.
    let primary = MockUpstream::start(|_| status_reply(503, None));
    let secondary = MockUpstream::start(|_| status_reply(429, Some("3")));
    let gw = two_providers(&primary, &secondary.url(), "");
    let r = chat(&gw, "m").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "retry-after")),
        (429, "3".into())
    );
    metrics_containing(
        &gw.metrics_url,
        &[
            "ai_proxy_provider_errors_total{error_type=\"server_error\",provider=\"primary\"} 1",
            "ai_proxy_provider_errors_total{error_type=\"rate_limit\",provider=\"secondary\"} 1",
        ],
    )
    .await;
}

/// Issue 20.8: `load_balancing: cheapest` sends the request to the provider with the lowest
/// expected cost from the price table, and to the other one while the cheap one is unhealthy.
#[tokio::test]
async fn cheapest_prefers_the_cheaper_provider_while_it_is_healthy() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let cheap = MockUpstream::start(move |_| {
        if h.load(Ordering::SeqCst) {
            ok_reply("cheap")
        } else {
            status_reply(503, None)
        }
    });
    let dear = MockUpstream::start(|_| ok_reply("dear"));
    let providers = openai_provider("cheap", &cheap.url()) + &openai_provider("dear", &dear.url());
    let routes = "model_mappings:\n  m:\n    default_provider: dear\n    load_balancing: cheapest\n    providers:\n      dear: {model: m-dear}\n      cheap: {model: m-cheap}\nrouting:\n  health: {failure_threshold: 1, cooldown_seconds: 60}\npricing:\n  m-cheap: {input: 0.5, output: 1.5}\n  m-dear: {input: 5, output: 15}\n";
    let gw = gateway_with("", &providers, routes);
    for _ in 0..3 {
        let r = chat(&gw, "m").await;
        assert_eq!(header(&r, "x-switchyard-provider"), "cheap");
        assert_eq!(content(r).await, "cheap");
    }
    assert!(dear.recorded().is_empty());

    // The cheap one fails (its circuit opens): this request falls back, the next ones go to
    // the other provider first.
    healthy.store(false, Ordering::SeqCst);
    let r = chat(&gw, "m").await;
    assert_eq!(header(&r, "x-switchyard-provider"), "dear");
    let calls_to_cheap = cheap.recorded().len();
    for _ in 0..2 {
        let r = chat(&gw, "m").await;
        assert_eq!(header(&r, "x-switchyard-attempts"), "1");
        assert_eq!(content(r).await, "dear");
    }
    assert_eq!(cheap.recorded().len(), calls_to_cheap, "skipped while open");
}
