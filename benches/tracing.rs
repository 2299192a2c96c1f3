//! Criterion bench of the per-request cost of tracing (issue 18): what a request pays with
//! tracing off (no `telemetry:` endpoint), on but not sampled, and on and sampled (a trace
//! with three attempts: start, attempt bookkeeping, `traceparent` for each upstream call, the
//! four spans built and queued). Export itself runs on its own thread and is not measured.
//!
//! Run: `cargo bench --bench tracing`.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use switchyard::config::Config;
use switchyard::ctx::RequestCtx;
use switchyard::metrics::Metrics;
use switchyard::telemetry::{self, AttemptEnd, Reason, Tracing};

fn config(ratio: &str) -> Config {
    let yaml = format!(
        "providers:\n  openai: {{auth: {{method: api_key, config: {{api_key: sk-x}}}}}}\n\
         telemetry:\n  otlp_endpoint: http://127.0.0.1:9\n  sample_ratio: {ratio}\n  max_queue_spans: 1000000\n"
    );
    Config::parse(&yaml, &|_| None).expect("bench config")
}

/// One request's tracing work on the unified API with three attempts (first, retry,
/// fallback), as the pipeline does it; `tracing` None: the same request without any tracing
/// call (the baseline).
fn request(
    tracing: Option<&Tracing>,
    metrics: &Arc<Metrics>,
    config: &Config,
    headers: &http::HeaderMap,
) {
    let mut ctx = RequestCtx::new(metrics);
    let Some(tracing) = tracing else {
        for _ in 0..3 {
            black_box(RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap());
        }
        return;
    };
    if let Some(p) = tracing.pipeline() {
        ctx.trace = Some(telemetry::RequestTrace::start(p, headers, ctx.started));
    }
    let provider = config.providers.get("openai").expect("openai");
    for (i, reason) in [Reason::First, Reason::Retry, Reason::Fallback]
        .into_iter()
        .enumerate()
    {
        telemetry::next_reason(&mut ctx, reason);
        telemetry::begin_attempt(&mut ctx, provider, "gpt-4o");
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        telemetry::inject(&ctx, telemetry::current(&ctx), &mut req);
        telemetry::note_status(&mut ctx, if i < 2 { 503 } else { 200 });
        telemetry::end_attempt(
            &mut ctx,
            if i < 2 {
                AttemptEnd::Failed("server_error")
            } else {
                AttemptEnd::Won
            },
        );
        black_box(&req);
    }
    let client: SocketAddr = "10.0.0.7:51000".parse().unwrap();
    black_box(telemetry::finish_with(
        &mut ctx,
        200,
        "POST",
        "/v1/chat/completions",
        Some(client),
    ));
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let unsampled_caller = http::HeaderMap::new();

    let off = Tracing::new();
    let cfg = config("1.0");
    c.bench_function("tracing/baseline_no_calls", |b| {
        b.iter(|| request(None, &metrics, &cfg, &unsampled_caller))
    });
    c.bench_function("tracing/off", |b| {
        b.iter(|| request(Some(&off), &metrics, &cfg, &unsampled_caller))
    });

    let on = Tracing::new();
    let cfg0 = config("0.0");
    on.configure(cfg0.telemetry.as_ref());
    c.bench_function("tracing/on_not_sampled", |b| {
        b.iter(|| request(Some(&on), &metrics, &cfg0, &unsampled_caller))
    });

    on.configure(cfg.telemetry.as_ref());
    c.bench_function("tracing/on_sampled_3_attempts", |b| {
        b.iter(|| request(Some(&on), &metrics, &cfg, &headers))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
