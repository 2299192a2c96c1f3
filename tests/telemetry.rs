//! OpenTelemetry tracing end to end: a real OTLP/HTTP receiver on loopback decodes the
//! protobuf the gateway's exporter sends, and the tests check the spans of a request that
//! was retried once and then fell back, the caller's `traceparent` honoured and propagated
//! upstream, sampling, a full export queue, and `check` refusing a bad `telemetry:` section.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::*;

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
    /// A string-array attribute (`gen_ai.response.finish_reasons`), element by element.
    fn strings(&self, key: &str) -> Option<Vec<String>> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::ArrayValue(a) => a
                .values
                .iter()
                .map(|v| match v.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
}

/// An OTLP/HTTP receiver: every `POST /v1/traces` body decoded as an
/// `ExportTraceServiceRequest`, its spans kept.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, p) = (spans.clone(), paths.clone());
        let addr = spawn_server("127.0.0.1", move |mut sock| {
            let (s, p) = (s.clone(), p.clone());
            async move {
                let mut buf = Vec::new();
                while let Ok(Some(req)) = read_request(&mut sock, &mut buf).await {
                    p.lock().unwrap().push(req.path.clone());
                    let export = ExportTraceServiceRequest::decode(&req.body[..])
                        .expect("the exporter sends valid OTLP protobuf");
                    for rs in export.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                s.lock().unwrap().push(Received {
                                    service: service.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    let reply = Reply::Full(
                        200,
                        vec![("content-type".into(), "application/x-protobuf".into())],
                        Vec::new(),
                    );
                    if !write_reply(&mut sock, reply).await.unwrap_or(false) {
                        break;
                    }
                }
            }
        });
        Receiver {
            url: format!("http://{addr}"),
            spans,
            paths,
        }
    }

    /// Waits until `n` spans have arrived (at most 10 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.spans.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} spans arrived, wanted {n}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn openai_provider(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    type: openai\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n"
    )
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_retried_then_fallen_back_request_is_one_server_span_and_three_attempt_spans() {
    let otlp = Receiver::start();
    let primary = MockUpstream::start(|_| {
        Reply::Full(
            503,
            vec![],
            br#"{"error":{"message":"busy","type":"server_error","param":null,"code":null}}"#
                .to_vec(),
        )
    });
    let secondary =
        MockUpstream::start(|_| Reply::Full(200, vec![], chat_completion("m-up", "hello", 11, 3)));
    let providers = openai_provider("primary", &primary.url())
        + &openai_provider("secondary", &secondary.url());
    let routes = format!(
        "model_mappings:\n  m:\n    default_provider: primary\n    providers:\n      primary: {{model: m-up}}\n      secondary: {{model: m-up-2}}\n\
         routing:\n  fallback: {{enabled: true}}\n  retries: {{max_attempts: 2, backoff_initial_ms: 1, backoff_max_ms: 5}}\n\
         telemetry:\n  otlp_endpoint: \"{}\"\n  service_name: gw-under-test\n  response_header: x-trace-id\n",
        otlp.url
    );
    let gw = gateway_with("", &providers, &routes);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=abc")
        .json(&json!({"model": "m", "max_tokens": 7, "temperature": 0.5,
                      "messages": [{"role": "user", "content": "a secret prompt"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-attempts"], "3");
    assert_eq!(r.headers()["x-trace-id"], CALLER_TRACE);

    let spans = otlp.wait_for(4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert!(otlp.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
    assert!(spans.iter().all(|s| s.service == "gw-under-test"));
    assert!(spans.iter().all(|s| s.trace_id() == CALLER_TRACE));

    // One server span, child of the caller's span.
    let servers: Vec<_> = spans.iter().filter(|s| s.span.kind == 2).collect();
    assert_eq!(servers.len(), 1, "{spans:#?}");
    let server = servers[0];
    assert_eq!(server.parent(), CALLER_SPAN);
    assert_eq!(server.span.name, "POST /v1/chat/completions");
    assert_eq!(server.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        server.attr("http.route").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attr("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(server.attr("enduser.id").as_deref(), Some("alice"));
    assert!(server.attr("switchyard.key_id").is_some());
    assert!(server.span.trace_state.contains("vendor=abc"));

    // Three attempt spans under it, in order.
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.span.kind == 3).collect();
    attempts.sort_by_key(|s| s.attr("switchyard.attempt.number"));
    assert_eq!(attempts.len(), 3);
    let want = [
        ("1", "first", "primary", "m-up", "failed"),
        ("2", "retry", "primary", "m-up", "failed"),
        ("3", "fallback", "secondary", "m-up-2", "won"),
    ];
    for (a, (n, reason, provider, model, outcome)) in attempts.iter().zip(want) {
        assert_eq!(a.parent(), server.span_id());
        assert_eq!(a.attr("switchyard.attempt.number").as_deref(), Some(n));
        assert_eq!(a.attr("switchyard.attempt.reason").as_deref(), Some(reason));
        assert_eq!(a.attr("switchyard.provider").as_deref(), Some(provider));
        assert_eq!(
            a.attr("switchyard.attempt.outcome").as_deref(),
            Some(outcome)
        );
        assert_eq!(a.attr("gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(a.attr("gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(a.attr("gen_ai.request.model").as_deref(), Some(model));
        assert_eq!(a.attr("gen_ai.request.max_tokens").as_deref(), Some("7"));
        assert_eq!(a.attr("gen_ai.request.temperature").as_deref(), Some("0.5"));
        assert_eq!(a.span.name, format!("chat {model}"));
        assert!(a.span.start_time_unix_nano >= server.span.start_time_unix_nano);
        assert!(a.span.end_time_unix_nano <= server.span.end_time_unix_nano);
        assert!(a.span.start_time_unix_nano <= a.span.end_time_unix_nano);
    }
    for a in &attempts[..2] {
        assert_eq!(a.attr("error.type").as_deref(), Some("server_error"));
        assert_eq!(a.attr("http.response.status_code").as_deref(), Some("503"));
        assert_eq!(a.span.status.as_ref().map(|s| s.code), Some(2));
    }
    let won = attempts[2];
    assert_eq!(won.attr("error.type"), None);
    assert_eq!(won.attr("gen_ai.usage.input_tokens").as_deref(), Some("11"));
    assert_eq!(won.attr("gen_ai.usage.output_tokens").as_deref(), Some("3"));
    assert_eq!(won.attr("gen_ai.response.model").as_deref(), Some("m-up"));
    assert_eq!(
        won.attr("gen_ai.response.id").as_deref(),
        Some("chatcmpl-upstream1")
    );
    assert!(
        won.attr("gen_ai.response.finish_reasons")
            .is_some_and(|r| r.contains("\"stop\"")),
        "{:?}",
        won.attr("gen_ai.response.finish_reasons")
    );
    assert!(won.span.events.iter().any(|e| e.name == "response_headers"));
    // Attempts follow one another.
    assert!(attempts[0].span.end_time_unix_nano <= attempts[1].span.start_time_unix_nano);
    assert!(attempts[1].span.end_time_unix_nano <= attempts[2].span.start_time_unix_nano);

    // No prompt in any span.
    let dump = format!("{spans:?}");
    assert!(!dump.contains("a secret prompt"));
    assert!(!dump.contains(GATEWAY_KEY));

    // Each upstream call carried its attempt's span as `traceparent`, and the caller's
    // tracestate.
    let mut sent: Vec<_> = primary.recorded();
    sent.extend(secondary.recorded());
    assert_eq!(sent.len(), 3);
    for (req, a) in sent.iter().zip(&attempts) {
        assert_eq!(
            req.header("traceparent"),
            Some(format!("00-{CALLER_TRACE}-{}-01", a.span_id()).as_str())
        );
        assert_eq!(req.header("tracestate"), Some("vendor=abc"));
    }
}

#[tokio::test]
async fn sampling_follows_the_ratio_and_the_callers_flag() {
    let otlp = Receiver::start();
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], chat_completion("m-up", "hi", 1, 1)));
    let routes = format!(
        "model_mappings:\n  m: {{providers: {{only: {{model: m-up}}}}}}\n\
         telemetry:\n  otlp_endpoint: \"{}\"\n  sample_ratio: 0\n",
        otlp.url
    );
    let gw = gateway_with("", &openai_provider("only", &up.url()), &routes);
    let send = |traceparent: Option<String>| {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        req.send()
    };
    // Ratio 0, no caller context: nothing recorded, but the upstream still gets a context.
    assert_eq!(send(None).await.unwrap().status(), 200);
    let tp = up.last().header("traceparent").unwrap().to_owned();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    // The caller's unsampled trace: continued, not recorded.
    let r = send(Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tp = up.last().header("traceparent").unwrap().to_owned();
    assert!(
        tp.starts_with(&format!("00-{CALLER_TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    // The caller's sampled trace (parent_based): recorded despite ratio 0.
    let sampled = "0af7651916cd43dd8448eb211c80319c";
    let r = send(Some(format!("00-{sampled}-b7ad6b7169203331-01")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = otlp.wait_for(2).await;
    // A probe, even with a sampled parent, sends no span.
    let probe = client()
        .get(format!("{}/health", gw.base))
        .header("traceparent", format!("00-{sampled}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    // Give a stray export of the first two requests (or the probe) time to show up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let spans_later = otlp.spans.lock().unwrap().clone();
    assert_eq!(spans_later.len(), 2, "{spans_later:#?}");
    assert!(spans.iter().all(|s| s.trace_id() == sampled));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_spans_without_blocking_requests() {
    // A collector that accepts connections and never answers: the export thread is stuck on
    // its first batch while the queue (two spans: one request's) overflows.
    let addr = spawn_server("127.0.0.1", |sock| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(sock);
    });
    let routes = format!(
        "model_mappings:\n  m: {{providers: {{mock: {{}}}}}}\n\
         telemetry:\n  otlp_endpoint: \"http://{addr}\"\n  max_queue_spans: 2\n  export_timeout_seconds: 30\n"
    );
    let gw = gateway_with("", "", &routes);
    let chat = || {
        client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // Each request makes two spans (server, the mock attempt). The first request's are taken
    // by the thread, which sends them after its batch interval and then hangs on the collector.
    assert_eq!(chat().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The next request's two fill the queue; the four after it find it full.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests waited for the exporter: {:?}",
        started.elapsed()
    );
    let text = metrics_containing(&gw.metrics_url, &["ai_proxy_trace_spans_dropped_total 8"]).await;
    assert!(text.contains("# TYPE ai_proxy_trace_spans_dropped_total counter"));
}

#[test]
fn check_refuses_a_bad_telemetry_section() {
    use switchyard::config::Config;
    let bad = "telemetry:\n  otlp_endpoint: \"localhost:4318\"\n  protocol: thrift\n  sample_ratio: 1.5\n  headers: {\"x-api-key\": \"sk-secret\\n\"}\n";
    let err = Config::parse(bad, &|_| None)
        .err()
        .expect("refused")
        .to_string();
    for path in [
        "telemetry.otlp_endpoint",
        "telemetry.protocol",
        "telemetry.sample_ratio",
        "telemetry.headers.x-api-key",
    ] {
        assert!(err.contains(path), "{path} missing in: {err}");
    }
    assert!(!err.contains("sk-secret"), "{err}");
    let unknown = "telemetry:\n  otlp_endpoint: http://localhost:4318\n  sampling: 1\n";
    assert!(Config::parse(unknown, &|_| None).is_err());
    let good = "telemetry:\n  otlp_endpoint: http://localhost:4317\n  protocol: grpc\n  sample_ratio: '0.01'\n  parent_based: false\n";
    let config = Config::parse(good, &|_| None).unwrap();
    let t = config.telemetry.unwrap();
    assert_eq!(t.sample_ratio, 0.01);
    assert!(!t.parent_based);
}

#[tokio::test]
async fn a_reload_turns_tracing_on_moves_it_and_turns_it_off() {
    let first = Receiver::start();
    let second = Receiver::start();
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], chat_completion("m-up", "hi", 1, 1)));
    let providers = openai_provider("only", &up.url());
    let gw = gateway_with(
        "",
        &providers,
        "model_mappings:\n  m: {providers: {only: {}}}\n",
    );
    let yaml = |telemetry: &str| {
        let port: u16 = gw.base.rsplit(':').next().unwrap().parse().unwrap();
        format!(
            "server: {{listen: \"127.0.0.1:{port}\"}}\nauth: {{keys: [{{user: alice, key: \"{GATEWAY_KEY}\"}}]}}\nproviders:\n{providers}model_mappings:\n  m: {{providers: {{only: {{}}}}}}\n{telemetry}"
        )
    };
    let chat = || {
        client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // Off: no traceparent upstream.
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(up.last().header("traceparent"), None);

    // The SIGHUP path: the file re-read and put in force.
    let dir = std::env::temp_dir().join(format!("switchyard-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        yaml(&format!(
            "telemetry: {{otlp_endpoint: \"{}\"}}\n",
            first.url
        )),
    )
    .unwrap();
    gw.handle.live.reload_from(&file).unwrap();
    assert_eq!(chat().await.unwrap().status(), 200);
    assert!(up.last().header("traceparent").is_some());
    first.wait_for(2).await;

    let next = switchyard::config::Config::parse(
        &yaml(&format!(
            "telemetry: {{otlp_endpoint: \"{}/v1/traces\"}}\n",
            second.url
        )),
        &|_| None,
    )
    .unwrap();
    gw.handle.live.replace(next);
    assert_eq!(chat().await.unwrap().status(), 200);
    second.wait_for(2).await;

    let off = switchyard::config::Config::parse(&yaml(""), &|_| None).unwrap();
    gw.handle.live.replace(off);
    assert_eq!(chat().await.unwrap().status(), 200);
    assert_eq!(up.last().header("traceparent"), None);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(first.spans.lock().unwrap().len(), 2);
    assert_eq!(second.spans.lock().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An OTLP/gRPC receiver on HTTP/2 without TLS: each `TraceService/Export` call's message
/// (5-byte gRPC frame header, then protobuf) decoded, answered with an empty message.
fn grpc_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let s = spans.clone();
    let addr = spawn_server("127.0.0.1", move |sock| {
        let s = s.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    assert_eq!(
                        req.uri().path(),
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                    );
                    let mut body = req.into_body();
                    let mut data = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.unwrap();
                        let _ = body.flow_control().release_capacity(chunk.len());
                        data.extend_from_slice(&chunk);
                    }
                    assert!(data.len() >= 5 && data[0] == 0, "uncompressed gRPC frame");
                    let export = ExportTraceServiceRequest::decode(&data[5..]).unwrap();
                    for rs in export.resource_spans {
                        for ss in rs.scope_spans {
                            s.lock().unwrap().extend(ss.spans);
                        }
                    }
                    let head = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut send = respond.send_response(head, false).unwrap();
                    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false)
                        .unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    send.send_trailers(trailers).unwrap();
                });
            }
        }
    });
    (format!("http://{addr}"), spans)
}

#[tokio::test]
async fn spans_go_over_grpc_too() {
    let (url, spans) = grpc_receiver();
    let routes = format!(
        "model_mappings:\n  m: {{providers: {{mock: {{}}}}}}\ntelemetry:\n  otlp_endpoint: \"{url}\"\n  protocol: grpc\n"
    );
    let gw = gateway_with("", "", &routes);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while spans.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no spans over gRPC");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = spans.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let attempt = got.iter().find(|s| s.kind == 3).unwrap();
    let server = got.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert!(attempt
        .attributes
        .iter()
        .any(|kv| kv.key == "gen_ai.provider.name"
            && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(AnyValue::StringValue(s)) if s == "switchyard.mock")));
}

#[tokio::test]
async fn a_hedged_request_shows_the_hedge_that_won_and_the_attempt_it_beat() {
    let otlp = Receiver::start();
    let primary = MockUpstream::start(|_| {
        Reply::Delay(
            Duration::from_secs(2),
            Box::new(Reply::Full(
                200,
                vec![],
                chat_completion("m-up", "slow", 1, 1),
            )),
        )
    });
    let secondary =
        MockUpstream::start(|_| Reply::Full(200, vec![], chat_completion("m-up", "fast", 2, 2)));
    let providers = openai_provider("primary", &primary.url())
        + &openai_provider("secondary", &secondary.url());
    let routes = format!(
        "model_mappings:\n  m: {{default_provider: primary, hedge_after_ms: 200, providers: {{primary: {{}}, secondary: {{}}}}}}\n\
         telemetry: {{otlp_endpoint: \"{}\"}}\n",
        otlp.url
    );
    let gw = gateway_with("", &providers, &routes);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "m", "top_p": 0.9, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "secondary");
    let spans = otlp.wait_for(3).await;
    let server = spans.iter().find(|s| s.span.kind == 2).unwrap();
    let attempt = |provider: &str| {
        spans
            .iter()
            .find(|s| {
                s.span.kind == 3 && s.attr("switchyard.provider").as_deref() == Some(provider)
            })
            .unwrap_or_else(|| panic!("no attempt span for {provider}: {spans:#?}"))
    };
    let (first, hedge) = (attempt("primary"), attempt("secondary"));
    assert_eq!(first.parent(), server.span_id());
    assert_eq!(hedge.parent(), server.span_id());
    assert_eq!(
        first.attr("switchyard.attempt.reason").as_deref(),
        Some("first")
    );
    assert_eq!(
        first.attr("switchyard.attempt.outcome").as_deref(),
        Some("lost_hedge")
    );
    assert_eq!(
        hedge.attr("switchyard.attempt.reason").as_deref(),
        Some("hedge")
    );
    assert_eq!(
        hedge.attr("switchyard.attempt.outcome").as_deref(),
        Some("won")
    );
    assert_eq!(hedge.attr("gen_ai.request.top_p").as_deref(), Some("0.9"));
    assert_eq!(
        hedge.attr("gen_ai.usage.output_tokens").as_deref(),
        Some("2")
    );
    // The hedge started after its delay, while the first was still waiting.
    let delay = hedge.span.start_time_unix_nano - first.span.start_time_unix_nano;
    assert!((150_000_000..1_500_000_000).contains(&delay), "{delay} ns");
    // Each call carried its own span.
    let tp = |up: &MockUpstream| up.last().header("traceparent").unwrap().to_owned();
    assert!(tp(&primary).contains(&first.span_id()));
    assert!(tp(&secondary).contains(&hedge.span_id()));
}

#[tokio::test]
async fn an_openmetrics_scrape_carries_trace_ids_as_exemplars() {
    let otlp = Receiver::start();
    let routes = format!(
        "model_mappings:\n  m: {{providers: {{mock: {{}}}}}}\n\
         telemetry: {{otlp_endpoint: \"{}\", response_header: x-trace-id}}\n",
        otlp.url
    );
    let gw = gateway_with("", "", &routes);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    r.bytes().await.unwrap();
    otlp.wait_for(2).await;
    // The plain text format is unchanged.
    let plain = metrics_containing(
        &gw.metrics_url,
        &["ai_proxy_request_duration_seconds_count"],
    )
    .await;
    assert!(!plain.contains("trace_id") && !plain.contains("# EOF"));
    let r = client()
        .get(&gw.metrics_url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = r.text().await.unwrap();
    let exemplar = format!("# {{trace_id=\"{trace}\"}}");
    for metric in [
        "ai_proxy_request_duration_seconds_bucket{",
        "ai_proxy_time_to_first_token_seconds_bucket{",
    ] {
        let with: Vec<_> = om
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(&exemplar))
            .collect();
        assert_eq!(with.len(), 1, "{metric} exemplar in:\n{om}");
    }
    assert!(om.contains("# TYPE ai_proxy_requests counter\n"));
    assert!(om.ends_with("# EOF\n"));
}

#[tokio::test]
async fn credential_refreshes_are_spans_of_their_own() {
    use support::watsonx::{watsonx_upstream, IamEndpoint, IBM_API_KEY, WX_PROJECT};
    for (key, failed) in [(IBM_API_KEY, false), ("ibm-apikey-wrong", true)] {
        let otlp = Receiver::start();
        let iam = IamEndpoint::start(IBM_API_KEY, Duration::from_secs(3600));
        let wx = watsonx_upstream(iam.book.clone());
        let providers = format!(
            "  watsonx:\n    endpoint: \"{}\"\n    project_id: {WX_PROJECT}\n    auth:\n      method: ibm_iam\n      config: {{api_key: \"{key}\", iam_endpoint: \"{}\"}}\n",
            wx.url(),
            iam.mock.url()
        );
        let _gw = gateway_with(
            "",
            &providers,
            &format!("telemetry: {{otlp_endpoint: \"{}\"}}\n", otlp.url),
        );
        // The maintenance service fetches the first token at start.
        let spans = otlp.wait_for(1).await;
        let s = &spans[0];
        assert_eq!(s.span.name, "credential refresh");
        assert_eq!(s.span.kind, 1, "internal");
        assert!(s.span.parent_span_id.is_empty());
        assert_eq!(
            s.attr("switchyard.credential.kind").as_deref(),
            Some("token")
        );
        assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
        if failed {
            assert_eq!(s.attr("error.type").as_deref(), Some("refresh_failed"));
            assert_eq!(s.span.status.as_ref().map(|s| s.code), Some(2));
        } else {
            assert_eq!(s.attr("error.type"), None);
        }
        assert!(
            !format!("{spans:?}").contains(key),
            "the API key is in a span"
        );
    }
}

/// Streamed answers get `gen_ai.response.id`, `.model` and `.finish_reasons` on their attempt
/// span too, from what the stream relays read anyway: an OpenAI-dialect upstream (the
/// same-dialect relay) and an Anthropic one (the translated relay).
#[tokio::test]
async fn streamed_answers_name_their_id_model_and_finish_reasons() {
    use support::anthropic::{message_stream, stream_reply, ANTHROPIC_KEY, MODEL};
    let otlp = Receiver::start();
    let openai = MockUpstream::start(|_| {
        Reply::Stream(
            chat_stream("m-up-0125", &["Hel", "lo"], 5)
                .chunks(23)
                .map(<[u8]>::to_vec)
                .collect(),
            Duration::from_millis(1),
        )
    });
    // Cut short by max_tokens: the reason the client is told is `length`.
    let claude = String::from_utf8(message_stream(&["Hi", " there"], 9, 4))
        .unwrap()
        .replace("end_turn", "max_tokens")
        .into_bytes();
    let anthropic = MockUpstream::start(move |_| stream_reply(&claude, 17));
    let providers = openai_provider("oai", &openai.url())
        + &format!(
            "  anthropic:\n    endpoint: \"{}\"\n    auth: {{method: api_key, config: {{api_key: \"{ANTHROPIC_KEY}\"}}}}\n",
            anthropic.url()
        );
    let routes = format!(
        "model_mappings:\n  m: {{providers: {{oai: {{model: m-up}}}}}}\n  c: {{providers: {{anthropic: {{model: {MODEL}}}}}}}\n\
         telemetry: {{otlp_endpoint: \"{}\", response_header: x-trace-id}}\n",
        otlp.url
    );
    let gw = gateway_with("", &providers, &routes);
    let mut traces = Vec::new();
    for model in ["m", "c"] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&json!({"model": model, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        traces.push(r.headers()["x-trace-id"].to_str().unwrap().to_owned());
        let body = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    let spans = otlp.wait_for(4).await;
    let attempt = |trace: &str| {
        spans
            .iter()
            .find(|s| s.span.kind == 3 && s.trace_id() == trace)
            .unwrap_or_else(|| panic!("no attempt span in trace {trace}: {spans:#?}"))
            .clone()
    };
    let (oai, claude) = (attempt(&traces[0]), attempt(&traces[1]));
    assert_eq!(oai.attr("gen_ai.provider.name").as_deref(), Some("openai"));
    assert_eq!(
        oai.attr("gen_ai.response.id").as_deref(),
        Some("chatcmpl-upstream2")
    );
    assert_eq!(
        oai.attr("gen_ai.response.model").as_deref(),
        Some("m-up-0125")
    );
    assert_eq!(
        oai.strings("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert_eq!(oai.attr("gen_ai.usage.output_tokens").as_deref(), Some("2"));
    assert_eq!(
        claude.attr("gen_ai.provider.name").as_deref(),
        Some("anthropic")
    );
    assert_eq!(
        claude.attr("gen_ai.response.id").as_deref(),
        Some("msg_01StreamMock")
    );
    assert_eq!(claude.attr("gen_ai.response.model").as_deref(), Some(MODEL));
    assert_eq!(
        claude.strings("gen_ai.response.finish_reasons"),
        Some(vec!["length".to_owned()])
    );
    assert_eq!(
        claude.attr("gen_ai.usage.output_tokens").as_deref(),
        Some("4")
    );
}

/// A token fetched on a request's path (none valid in the cache: here IAM's tokens live
/// 3 s, inside the 5 s safety margin, so every request needs a new one) is a span of that
/// request's trace, child of the attempt that needed it; a failed fetch is an error span.
#[tokio::test]
async fn a_token_fetched_on_the_request_path_is_a_child_of_its_attempt() {
    use support::watsonx::{watsonx_upstream, IamEndpoint, GRANITE, IBM_API_KEY, WX_PROJECT};
    for (key, failed) in [(IBM_API_KEY, false), ("ibm-apikey-wrong", true)] {
        let otlp = Receiver::start();
        let iam = IamEndpoint::start(IBM_API_KEY, Duration::from_secs(3));
        let wx = watsonx_upstream(iam.book.clone());
        let providers = format!(
            "  watsonx:\n    endpoint: \"{}\"\n    project_id: {WX_PROJECT}\n    auth:\n      method: ibm_iam\n      config: {{api_key: \"{key}\", iam_endpoint: \"{}\"}}\n",
            wx.url(),
            iam.mock.url()
        );
        let gw = gateway_with(
            "",
            &providers,
            &format!(
                "model_mappings:\n  g: {{providers: {{watsonx: {{model: \"{GRANITE}\"}}}}}}\n\
                 telemetry: {{otlp_endpoint: \"{}\", response_header: x-trace-id}}\n",
                otlp.url
            ),
        );
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().is_success(), !failed, "{}", r.status());
        let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
        r.bytes().await.unwrap();
        // The request's server span, attempt span and fetch span (background refreshes are
        // root spans of other traces).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mine = loop {
            let mine: Vec<Received> = otlp
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id() == trace)
                .cloned()
                .collect();
            if mine.iter().any(|s| s.span.kind == 2) {
                break mine;
            }
            assert!(Instant::now() < deadline, "no server span in trace {trace}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let attempt = mine
            .iter()
            .find(|s| s.span.kind == 3)
            .unwrap_or_else(|| panic!("{mine:#?}"));
        let fetches: Vec<_> = mine
            .iter()
            .filter(|s| s.span.name == "credential fetch")
            .collect();
        assert_eq!(fetches.len(), 1, "{mine:#?}");
        let f = fetches[0];
        assert_eq!(f.span.kind, 1, "internal");
        assert_eq!(f.parent(), attempt.span_id());
        assert_eq!(
            f.attr("switchyard.credential.kind").as_deref(),
            Some("token")
        );
        assert_eq!(f.attr("switchyard.provider").as_deref(), Some("watsonx"));
        assert!(f.span.start_time_unix_nano >= attempt.span.start_time_unix_nano);
        assert!(f.span.end_time_unix_nano <= attempt.span.end_time_unix_nano);
        if failed {
            assert_eq!(f.attr("error.type").as_deref(), Some("fetch_failed"));
            assert_eq!(f.span.status.as_ref().map(|s| s.code), Some(2));
        } else {
            assert_eq!(f.attr("error.type"), None);
            assert_eq!(
                attempt.attr("switchyard.attempt.outcome").as_deref(),
                Some("won")
            );
        }
        let all = format!("{:?}", otlp.spans.lock().unwrap());
        assert!(!all.contains(key), "the API key is in a span");
        assert!(!all.contains("iam-"), "a token is in a span");
    }
}
