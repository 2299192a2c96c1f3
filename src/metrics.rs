//! Prometheus metrics with the design's names, and the `/metrics` listener.
//!
//! Each gateway instance owns its registry (tests run several in one process). Labels are
//! bounded: provider names come from config, and model labels only ever carry names that
//! resolved to a provider.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    exponential_buckets, Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use rustc_hash::FxHashMap;
use switchyard_filters::Usage;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub tokens: IntCounterVec,
    pub cost: CounterVec,
    pub provider_errors: IntCounterVec,
    pub translation: HistogramVec,
    pub openai_requests: IntCounterVec,
    /// Anthropic Messages front door requests (`/v1/messages`, count_tokens) by target provider.
    pub messages_requests: IntCounterVec,
    pub in_flight: IntGauge,
    pub time_to_first_token: HistogramVec,
    pub provider_up: IntGaugeVec,
    pub legacy_bedrock_requests: IntCounter,
    pub legacy_bedrock_duration: Histogram,
    /// Client connections open now (HTTP/1 and HTTP/2).
    pub open_connections: IntGauge,
    /// Requests and connections refused by a client limit, by `limit`.
    pub limit_refusals: IntCounterVec,
    /// Answers with usage but no price for their model (cost 0), by provider.
    pub unpriced: IntCounterVec,
    /// Image URLs the gateway fetched for providers that take bytes only
    /// ([`crate::media_fetch`]), by `result` (ok, refused, failed) and `reason`.
    pub media_fetches: IntCounterVec,
    /// Trace ids of sampled requests for the latency histograms (OpenMetrics scrapes).
    pub exemplars: crate::telemetry::exemplars::Exemplars,
    /// Resolved per-(provider, model) handles, see [`Metrics::series`].
    series: SeriesCache,
    /// Fresh client connections until their first request is answered (not exported: a
    /// draining process waits for them as for requests in flight, see `server::ExitWhenDrained`).
    pub awaiting_first_request: std::sync::atomic::AtomicU64,
}

/// The request metrics of one (provider, model) label pair, resolved once: each
/// `with_label_values` hashes its labels and takes the vector's lock (≈ 235 instructions), and
/// a request touches up to six of them. A series is created on its first use (as
/// `with_label_values` would), so no empty series appear.
pub struct Series {
    provider: Box<str>,
    model: Box<str>,
    duration: Histogram,
    time_to_first_token: OnceLock<Histogram>,
    /// `ai_proxy_requests_total` by status label (a handful per pair).
    requests: Mutex<Vec<(Box<str>, IntCounter)>>,
    input: OnceLock<IntCounter>,
    output: OnceLock<IntCounter>,
    cost: OnceLock<Counter>,
}

impl Series {
    /// `ai_proxy_request_duration_seconds`.
    pub fn observe_duration(&self, secs: f64) {
        self.duration.observe(secs);
    }

    /// `ai_proxy_time_to_first_token_seconds`.
    pub fn observe_time_to_first_token(&self, m: &Metrics, secs: f64) {
        self.time_to_first_token
            .get_or_init(|| {
                m.time_to_first_token
                    .with_label_values(&[&self.provider, &self.model])
            })
            .observe(secs);
    }

    /// `ai_proxy_requests_total` with this `status` label.
    pub fn count_request(&self, m: &Metrics, status: &str) {
        let mut by_status = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = by_status.iter().find(|(s, _)| &**s == status) {
            c.inc();
            return;
        }
        let c = m
            .requests
            .with_label_values(&[&self.provider, &self.model, status]);
        c.inc();
        // Status labels are three digits (at most a few hundred): bounded.
        by_status.push((status.into(), c));
    }

    /// Tokens and cost of one answer (see [`Metrics::record_usage`]).
    pub fn record_usage(&self, m: &Metrics, usage: &Usage, cost: f64) {
        let (p, model) = (&*self.provider, &*self.model);
        self.input
            .get_or_init(|| m.tokens.with_label_values(&[p, model, "input"]))
            .inc_by(usage.prompt_tokens);
        self.output
            .get_or_init(|| m.tokens.with_label_values(&[p, model, "output"]))
            .inc_by(usage.completion_tokens);
        // Parts of `input` (prompt-cache reads and writes), as their own series only when
        // non-zero so uncached models get no empty series; rare, so resolved by label each time.
        if usage.cached_tokens > 0 {
            m.tokens
                .with_label_values(&[p, model, "cache_read"])
                .inc_by(usage.cached_tokens);
        }
        if usage.cache_write_tokens > 0 {
            m.tokens
                .with_label_values(&[p, model, "cache_write"])
                .inc_by(usage.cache_write_tokens);
        }
        if cost > 0.0 {
            self.cost
                .get_or_init(|| m.cost.with_label_values(&[p, model]))
                .inc_by(cost);
        }
    }
}

type SeriesMap = FxHashMap<Box<str>, FxHashMap<Box<str>, Arc<Series>>>;

/// [`Series`] by provider and model, one map per thread (no lock shared between workers).
struct SeriesCache {
    shards: Vec<Mutex<SeriesMap>>,
}

/// Pairs kept per shard; past it a shard starts over (labels are bounded by configuration,
/// so this is only a backstop).
const MAX_SERIES: usize = 4096;

impl Default for SeriesCache {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 64));
        SeriesCache {
            shards: (0..n).map(|_| Mutex::default()).collect(),
        }
    }
}

impl SeriesCache {
    fn mine(&self) -> &Mutex<SeriesMap> {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            };
        }
        &self.shards[SHARD.with(|s| *s) % self.shards.len()]
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let latency = exponential_buckets(0.005, 2.0, 14).expect("valid buckets"); // 5 ms .. 41 s
        let fast = exponential_buckets(0.000_001, 4.0, 10).expect("valid buckets"); // 1 µs .. 0.26 s
        let requests = IntCounterVec::new(
            Opts::new(
                "ai_proxy_requests_total",
                "Requests by provider, model and HTTP status.",
            ),
            &["provider", "model", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ai_proxy_request_duration_seconds",
                "Request latency, end to end.",
            )
            .buckets(latency.clone()),
            &["provider", "model"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "ai_proxy_tokens_total",
                "Tokens by provider, model and type (input|output; cache_read|cache_write: the parts of input read from or written to a prompt cache).",
            ),
            &["provider", "model", "type"],
        )
        .expect("valid metric");
        let cost = CounterVec::new(
            Opts::new(
                "ai_proxy_cost_usd_total",
                "Cost in USD from the price table.",
            ),
            &["provider", "model"],
        )
        .expect("valid metric");
        let provider_errors = IntCounterVec::new(
            Opts::new(
                "ai_proxy_provider_errors_total",
                "Failed upstream attempts (retries and fallbacks included) by provider and error type.",
            ),
            &["provider", "error_type"],
        )
        .expect("valid metric");
        let translation = HistogramVec::new(
            HistogramOpts::new(
                "ai_proxy_translation_duration_seconds",
                "Time spent translating request bodies.",
            )
            .buckets(fast),
            &["from", "to"],
        )
        .expect("valid metric");
        let openai_requests = IntCounterVec::new(
            Opts::new(
                "ai_proxy_openai_requests_total",
                "Unified (OpenAI-compatible) API requests by target provider.",
            ),
            &["target_provider"],
        )
        .expect("valid metric");
        let messages_requests = IntCounterVec::new(
            Opts::new(
                "ai_proxy_messages_requests_total",
                "Anthropic Messages API requests (/v1/messages, /v1/messages/count_tokens) by target provider.",
            ),
            &["target_provider"],
        )
        .expect("valid metric");
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "ai_proxy_time_to_first_token_seconds",
                "Time from request start to the first byte of a streamed answer.",
            )
            .buckets(exponential_buckets(0.005, 2.0, 14).expect("valid buckets")),
            &["provider", "model"],
        )
        .expect("valid metric");
        let provider_up = IntGaugeVec::new(
            Opts::new(
                "ai_proxy_provider_up",
                "1 when the provider is usable (resolved, credentials ready, circuit closed).",
            ),
            &["provider"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("ai_proxy_in_flight_requests", "Requests being served now.")
            .expect("valid metric");
        let legacy_bedrock_requests = IntCounter::new(
            "bedrock_proxy_requests_total",
            "Legacy: requests served by the Bedrock provider.",
        )
        .expect("valid metric");
        let legacy_bedrock_duration = Histogram::with_opts(
            HistogramOpts::new(
                "bedrock_proxy_request_duration_seconds",
                "Legacy: latency of Bedrock requests.",
            )
            .buckets(latency),
        )
        .expect("valid metric");
        let open_connections =
            IntGauge::new("ai_proxy_open_connections", "Client connections open now.")
                .expect("valid metric");
        let limit_refusals = IntCounterVec::new(
            Opts::new(
                "ai_proxy_limit_refusals_total",
                "Requests or connections refused by a client limit (connections, header_timeout, headers, framing, body_size, body_timeout, body_memory, streams).",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let unpriced = IntCounterVec::new(
            Opts::new(
                "ai_proxy_unpriced_requests_total",
                "Answers whose model has no price (counted as 0 USD; refused to keys with a budget), by provider.",
            ),
            &["provider"],
        )
        .expect("valid metric");
        let media_fetches = IntCounterVec::new(
            Opts::new(
                "ai_proxy_media_fetches_total",
                "Image URLs fetched by the gateway for providers that take image bytes only, by result (ok, refused by a rule, failed) and reason (ok; scheme, bad_url, host_denied, host_not_allowed, redirects, too_many_images, too_large, not_image, or the refused address class: loopback, private, link_local, cgnat, metadata, unspecified, multicast, documentation, reserved, unique_local; timeout, busy, dns, connect, status).",
            ),
            &["result", "reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(media_fetches.clone()),
            Box::new(unpriced.clone()),
            Box::new(open_connections.clone()),
            Box::new(limit_refusals.clone()),
            Box::new(duration.clone()),
            Box::new(tokens.clone()),
            Box::new(cost.clone()),
            Box::new(provider_errors.clone()),
            Box::new(translation.clone()),
            Box::new(openai_requests.clone()),
            Box::new(messages_requests.clone()),
            Box::new(in_flight.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(provider_up.clone()),
            Box::new(legacy_bedrock_requests.clone()),
            Box::new(legacy_bedrock_duration.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            requests,
            duration,
            tokens,
            cost,
            provider_errors,
            translation,
            messages_requests,
            openai_requests,
            in_flight,
            time_to_first_token,
            provider_up,
            legacy_bedrock_requests,
            legacy_bedrock_duration,
            open_connections,
            limit_refusals,
            unpriced,
            media_fetches,
            exemplars: Default::default(),
            series: SeriesCache::default(),
            awaiting_first_request: Default::default(),
        })
    }

    /// The handles of the (`provider`, `model`) label pair: the duration histogram created
    /// (as the first request's `observe` would), the rest on first use.
    pub fn series(&self, provider: &str, model: &str) -> Arc<Series> {
        let mut map = self.series.mine().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(provider).and_then(|m| m.get(model)) {
            return s.clone();
        }
        if map.values().map(FxHashMap::len).sum::<usize>() >= MAX_SERIES {
            map.clear();
        }
        let s = Arc::new(Series {
            provider: provider.into(),
            model: model.into(),
            duration: self.duration.with_label_values(&[provider, model]),
            time_to_first_token: OnceLock::new(),
            requests: Mutex::default(),
            input: OnceLock::new(),
            output: OnceLock::new(),
            cost: OnceLock::new(),
        });
        map.entry(provider.into())
            .or_default()
            .insert(model.into(), s.clone());
        s
    }

    /// Adds a metric owned elsewhere (the governance layer's dropped-records counter).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            log::error!("metric not registered: {e}");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

use crate::telemetry::exemplars;

/// The `/metrics` HTTP app on `server.metrics_listen` (OpenMetrics with exemplars when the
/// scraper asks for it).
pub struct MetricsApp(pub Arc<Metrics>);

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let accept = session
            .req_header()
            .headers
            .get("accept")
            .map(|v| v.as_bytes());
        let (status, ctype, body) = if path == "/metrics" && exemplars::wants_openmetrics(accept) {
            let text = String::from_utf8_lossy(&self.0.render()).into_owned();
            (
                200,
                exemplars::OPENMETRICS,
                self.0.exemplars.openmetrics(&text).into_bytes(),
            )
        } else if path == "/metrics" {
            (200, "text/plain; version=0.0.4", self.0.render())
        } else {
            (404, "text/plain", b"not found; try /metrics\n".to_vec())
        };
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", body.len())
            .body(body)
            .expect("static response parts are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reads_and_writes_get_their_own_token_series() {
        let m = Metrics::new();
        let mut u = Usage::new(100, 7);
        u.cached_tokens = 80;
        u.cache_write_tokens = 15;
        m.series("anthropic", "claude-x").record_usage(&m, &u, 0.0);
        m.series("openai", "gpt-4o")
            .record_usage(&m, &Usage::new(5, 1), 0.0);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"ai_proxy_tokens_total{model="claude-x",provider="anthropic",type="input"} 100"#,
            r#"ai_proxy_tokens_total{model="claude-x",provider="anthropic",type="cache_read"} 80"#,
            r#"ai_proxy_tokens_total{model="claude-x",provider="anthropic",type="cache_write"} 15"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains(r#"model="gpt-4o",provider="openai",type="cache_read""#));
    }

    /// The cached handles count into the same series as `with_label_values`, and create
    /// none before their first use.
    #[test]
    fn series_handles_are_the_labelled_series() {
        let m = Metrics::new();
        let s = m.series("openai", "gpt-4");
        assert!(Arc::ptr_eq(&s, &m.series("openai", "gpt-4")));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("ai_proxy_requests_total{"), "{text}");
        assert!(!text.contains("ai_proxy_tokens_total{"), "{text}");
        assert!(!text.contains("ai_proxy_cost_usd_total{"), "{text}");
        assert!(!text.contains("ai_proxy_time_to_first_token_seconds_count{"));
        s.observe_duration(0.002);
        s.count_request(&m, "200");
        s.count_request(&m, "200");
        m.series("openai", "gpt-4").count_request(&m, "429");
        m.series("openai", "other").count_request(&m, "200");
        s.record_usage(&m, &Usage::new(10, 3), 0.5);
        s.record_usage(&m, &Usage::new(1, 1), 0.0);
        s.observe_time_to_first_token(&m, 0.01);
        m.requests
            .with_label_values(&["openai", "gpt-4", "200"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"ai_proxy_requests_total{model="gpt-4",provider="openai",status="200"} 3"#,
            r#"ai_proxy_requests_total{model="gpt-4",provider="openai",status="429"} 1"#,
            r#"ai_proxy_requests_total{model="other",provider="openai",status="200"} 1"#,
            r#"ai_proxy_request_duration_seconds_count{model="gpt-4",provider="openai"} 1"#,
            r#"ai_proxy_tokens_total{model="gpt-4",provider="openai",type="input"} 11"#,
            r#"ai_proxy_tokens_total{model="gpt-4",provider="openai",type="output"} 4"#,
            r#"ai_proxy_cost_usd_total{model="gpt-4",provider="openai"} 0.5"#,
            r#"ai_proxy_time_to_first_token_seconds_count{model="gpt-4",provider="openai"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
