//! OpenTelemetry tracing with the GenAI semantic conventions.
//!
//! Nothing here runs on the request path beyond bookkeeping: a request that is traced gets a
//! [`RequestTrace`] in its context (trace id, the caller's parent, what each upstream attempt
//! did and when); `logging` turns it into spans with explicit timestamps — one server span,
//! one client span per attempt — and hands them to the export thread ([`export`]), which
//! never blocks a request (a full queue drops and counts). With no `telemetry.otlp_endpoint`
//! the only cost is one pointer load per request.

pub mod config;
pub mod context;
pub mod exemplars;
mod export;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pingora::http::RequestHeader;
use prometheus::IntCounter;

pub use config::{Protocol, RawTelemetry, TelemetrySettings};
pub use export::Exporter;

use crate::ctx::{RequestCtx, RouteKind};
use crate::providers::{Provider, ProviderKind};

/// The running export pipeline for one `telemetry:` section.
pub struct Pipeline {
    pub settings: TelemetrySettings,
    exporter: Exporter,
    scope: InstrumentationScope,
}

/// The tracing switch of a gateway: the pipeline in force (none: off), replaced when a
/// reload changes the `telemetry:` section.
pub struct Tracing {
    current: ArcSwapOption<Pipeline>,
    /// `ai_proxy_trace_spans_dropped_total`.
    pub dropped: IntCounter,
    reconfigure: Mutex<()>,
}

impl Tracing {
    pub fn new() -> Arc<Tracing> {
        Arc::new(Tracing {
            current: ArcSwapOption::empty(),
            dropped: IntCounter::new(
                "ai_proxy_trace_spans_dropped_total",
                "Trace spans dropped because the export queue was full (or export could not start).",
            )
            .expect("valid metric"),
            reconfigure: Mutex::new(()),
        })
    }

    /// Puts `settings` in force: starts, replaces or stops the export pipeline when they
    /// differ from the running one (the old pipeline's thread sends what it holds and ends).
    pub fn configure(&self, settings: Option<&TelemetrySettings>) {
        let _one_at_a_time = self.reconfigure.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load();
        if running.as_ref().map(|p| &p.settings) == settings {
            return;
        }
        let next = settings.and_then(|s| match Exporter::start(s, self.dropped.clone()) {
            Ok(exporter) => {
                log::info!(
                    "tracing: exporting to {} ({:?}, sample ratio {})",
                    s.otlp_endpoint,
                    s.protocol,
                    s.sample_ratio
                );
                Some(Arc::new(Pipeline {
                    settings: s.clone(),
                    exporter,
                    scope: InstrumentationScope::builder("switchyard")
                        .with_version(env!("CARGO_PKG_VERSION"))
                        .build(),
                }))
            }
            Err(e) => {
                log::error!("tracing: cannot start the export thread: {e}");
                None
            }
        });
        if next.is_none() && running.is_some() {
            log::info!("tracing: off");
        }
        self.current.store(next);
    }

    /// The pipeline in force, if tracing is on.
    pub fn pipeline(&self) -> Option<Arc<Pipeline>> {
        self.current.load_full()
    }
}

tokio::task_local! {
    /// The gateway's tracing, for its background work (credential refreshes run under it by
    /// the provider maintenance service).
    pub static BACKGROUND: Arc<Tracing>;
}

/// Records a credential refresh or token exchange (`what`: the kind of credential) that
/// started at `started` and ended now as a root span of its own, when the gateway running it
/// traces and the new trace is sampled by `sample_ratio`. `error`: why it failed (safe to
/// log: the fetchers' errors carry no secrets).
pub fn credential_span(what: &str, started: Instant, error: Option<&str>) {
    let Ok(Some(p)) = BACKGROUND.try_with(|t| t.pipeline()) else {
        return;
    };
    let trace_id = context::new_trace_id();
    if !context::ratio_sampled(trace_id, p.settings.sample_ratio) {
        return;
    }
    let span = credential_span_data(
        &p,
        (trace_id, None),
        "credential refresh",
        what,
        None,
        started,
        error.map(|e| ("refresh_failed", e)),
    );
    p.exporter.submit(vec![span]);
}

/// A sampled request on whose path a credential may be fetched (no valid token cached yet):
/// the fetch's span goes into its trace, under `parent` (the attempt's span, or the server
/// span when there is no attempt). Set for the fetch by [`with_on_path`].
#[derive(Clone)]
pub struct OnPath {
    pipeline: Arc<Pipeline>,
    trace_id: u128,
    parent: u64,
    provider: Option<Arc<str>>,
}

tokio::task_local! {
    /// The request a credential is being applied for (see [`OnPath`]).
    static ON_PATH: OnPath;
}

/// The [`OnPath`] of attempt `index` (None: the server span) of a sampled request.
pub fn on_path(ctx: &RequestCtx, index: Option<usize>) -> Option<OnPath> {
    let t = ctx.trace.as_deref().filter(|t| t.sampled)?;
    let attempt = index.and_then(|i| t.attempts.get(i));
    Some(OnPath {
        pipeline: t.pipeline.clone(),
        trace_id: t.trace_id,
        parent: attempt.map_or(t.span_id, |a| a.span_id),
        provider: attempt
            .map(|a| a.provider.clone())
            .or_else(|| ctx.provider.as_ref().map(|p| p.name.clone())),
    })
}

/// Runs `f` (which may fetch a credential: an upstream call's `open`) with `on` as the
/// request a fetch on its path belongs to; just `f` when the request is not sampled. The
/// scoped future is boxed (sampled requests only), so that the request's future, which
/// holds this one, grows by nothing (`pipeline::route::future_sizes`).
pub fn with_on_path<F: std::future::Future>(
    on: Option<OnPath>,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    use futures_util::future::Either;
    match on {
        Some(on) => Either::Left(Box::pin(ON_PATH.scope(on, f))),
        None => Either::Right(f),
    }
}

/// Records a credential fetched on a request's path (`what`: the kind of credential, as
/// for [`credential_span`]) that started at `started` and ended now: a span of the
/// request's trace, child of the attempt that needed it, when the request is sampled (see
/// [`with_on_path`]); nothing otherwise. `error`: why it failed (no secrets).
pub fn credential_fetch_span(what: &str, started: Instant, error: Option<&str>) {
    let _ = ON_PATH.try_with(|on| {
        let span = credential_span_data(
            &on.pipeline,
            (on.trace_id, Some(on.parent)),
            "credential fetch",
            what,
            on.provider.as_deref(),
            started,
            error.map(|e| ("fetch_failed", e)),
        );
        on.pipeline.exporter.submit(vec![span]);
    });
}

/// A credential span (internal, sampled) from `started` to now: a root span, or a child of
/// `parent` in the trace `trace_id`. `error`: its `error.type` and message.
fn credential_span_data(
    p: &Pipeline,
    (trace_id, parent): (u128, Option<u64>),
    name: &'static str,
    what: &str,
    provider: Option<&str>,
    started: Instant,
    error: Option<(&'static str, &str)>,
) -> SpanData {
    let end_wall = SystemTime::now();
    let start_wall = end_wall.checked_sub(started.elapsed()).unwrap_or(end_wall);
    let mut attrs = vec![KeyValue::new("switchyard.credential.kind", what.to_owned())];
    if let Some(provider) = provider {
        attrs.push(KeyValue::new("switchyard.provider", provider.to_owned()));
    }
    let status = match error {
        Some((kind, e)) => {
            attrs.push(KeyValue::new("error.type", kind));
            Status::error(e.chars().take(512).collect::<String>())
        }
        None => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(context::new_span_id()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(name),
        start_time: start_wall,
        end_time: end_wall,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: p.scope.clone(),
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    First,
    Retry,
    Fallback,
    Hedge,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::First => "first",
            Reason::Retry => "retry",
            Reason::Fallback => "fallback",
            Reason::Hedge => "hedge",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Its answer went to the client.
    Won,
    /// The other hedged attempt answered first.
    LostHedge,
    /// It failed; the class is `error.type`.
    Failed(&'static str),
}

/// One upstream attempt as recorded for its span.
#[derive(Debug)]
pub struct AttemptSpan {
    span_id: u64,
    number: u32,
    reason: Reason,
    provider: Arc<str>,
    kind: ProviderKind,
    model: String,
    start: Instant,
    end: Option<(Instant, AttemptEnd)>,
    status: Option<u16>,
    headers_at: Option<Instant>,
    response: Option<Box<ResponseInfo>>,
}

/// What a non-stream answer said about itself (GenAI `gen_ai.response.*`).
#[derive(Debug, Default)]
struct ResponseInfo {
    id: Option<String>,
    model: Option<String>,
    finish_reasons: Vec<String>,
}

/// Sampling parameters sent by the caller (GenAI `gen_ai.request.*`).
#[derive(Debug, Default, Clone, Copy)]
struct RequestParams {
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
}

/// One request's trace: ids, and what its attempts did (recorded only when sampled).
pub struct RequestTrace {
    pipeline: Arc<Pipeline>,
    pub trace_id: u128,
    /// The server span's id (the parent of every attempt span).
    pub span_id: u64,
    /// The caller's span (`traceparent`), remote parent of the server span.
    pub parent: Option<u64>,
    pub sampled: bool,
    tracestate: Option<String>,
    wall_start: SystemTime,
    started: Instant,
    attempts: Vec<AttemptSpan>,
    next_reason: Reason,
    /// Index of the attempt that [`end_attempt`] closes.
    current: Option<usize>,
    params: RequestParams,
    operation: &'static str,
}

impl RequestTrace {
    /// A trace for a request with these headers: the caller's context when it sent a valid
    /// `traceparent`, else a new trace; sampled by the caller's flag (`parent_based`) or by
    /// `sample_ratio`.
    pub fn start(
        pipeline: Arc<Pipeline>,
        headers: &http::HeaderMap,
        started: Instant,
    ) -> Box<Self> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| context::parse_traceparent(v.as_bytes()));
        let s = &pipeline.settings;
        let trace_id = parent.map_or_else(context::new_trace_id, |p| p.trace_id);
        let sampled = match parent {
            Some(p) if s.parent_based => p.sampled,
            _ => context::ratio_sampled(trace_id, s.sample_ratio),
        };
        let tracestate = parent
            .and(headers.get("tracestate"))
            .filter(|v| context::usable_tracestate(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::new(RequestTrace {
            pipeline,
            trace_id,
            span_id: context::new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            tracestate,
            wall_start: {
                let now = SystemTime::now();
                now.checked_sub(started.elapsed()).unwrap_or(now)
            },
            started,
            attempts: Vec::new(),
            next_reason: Reason::First,
            current: None,
            params: RequestParams::default(),
            operation: "chat",
        })
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.wall_start + at.saturating_duration_since(self.started)
    }
}

/// The reason of the next attempt [`begin_attempt`] records.
pub fn next_reason(ctx: &mut RequestCtx, reason: Reason) {
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.next_reason = reason;
    }
}

/// The request's GenAI parameters (`max_tokens`, `temperature`, `top_p` when sent) and
/// operation, from the parsed unified-API body. Only read for a sampled trace.
pub fn note_request(
    ctx: &mut RequestCtx,
    endpoint: switchyard_filters::Endpoint,
    parsed: &switchyard_filters::openai::ParsedRequest,
) {
    use switchyard_filters::Endpoint as E;
    let Some(t) = ctx.trace.as_deref_mut().filter(|t| t.sampled) else {
        return;
    };
    t.operation = match endpoint {
        E::ChatCompletions | E::Messages | E::Responses => "chat",
        E::Completions => "text_completion",
        E::Embeddings => "embeddings",
        E::CountTokens => "count_tokens",
    };
    let num = |name: &str| {
        parsed
            .field(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    t.params = RequestParams {
        max_tokens: ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|n| num(n))
            .filter(|v| v.is_finite())
            .map(|v| v as i64),
        temperature: num("temperature"),
        top_p: num("top_p"),
    };
}

/// Opens the span of an attempt on `provider` for `model` (the reason set by
/// [`next_reason`]; the following attempts default to `retry`).
pub fn begin_attempt(ctx: &mut RequestCtx, provider: &Provider, model: &str) {
    let Some(t) = ctx.trace.as_deref_mut().filter(|t| t.sampled) else {
        return;
    };
    let number = t.attempts.len() as u32 + 1;
    t.attempts.push(AttemptSpan {
        span_id: context::new_span_id(),
        number,
        reason: t.next_reason,
        provider: provider.name.clone(),
        kind: provider.kind,
        model: model.to_owned(),
        start: Instant::now(),
        end: None,
        status: None,
        headers_at: None,
        response: None,
    });
    t.current = Some(t.attempts.len() - 1);
    t.next_reason = Reason::Retry;
}

/// Makes attempt `index` (from [`begin_attempt`]) the one [`end_attempt`] and
/// [`note_status`] apply to (hedging runs two at once).
pub fn set_current(ctx: &mut RequestCtx, index: Option<usize>) {
    if let Some(t) = ctx.trace.as_deref_mut() {
        if index.is_some_and(|i| i < t.attempts.len()) {
            t.current = index;
        }
    }
}

/// The index of the attempt in progress.
pub fn current(ctx: &RequestCtx) -> Option<usize> {
    ctx.trace.as_deref().and_then(|t| t.current)
}

/// Moves the start of attempt `index` (a hedge starts after its delay).
pub fn restart_attempt(ctx: &mut RequestCtx, index: Option<usize>, at: Instant) {
    if let (Some(t), Some(i)) = (ctx.trace.as_deref_mut(), index) {
        if let Some(a) = t.attempts.get_mut(i) {
            a.start = at;
        }
    }
}

/// Forgets attempt `index` (a hedge that never started).
pub fn drop_attempt(ctx: &mut RequestCtx, index: Option<usize>) {
    if let (Some(t), Some(i)) = (ctx.trace.as_deref_mut(), index) {
        if i < t.attempts.len() && i + 1 == t.attempts.len() {
            t.attempts.pop();
            if t.current == Some(i) {
                t.current = i.checked_sub(1);
            }
        }
    }
}

/// The status the upstream answered the current attempt with, and when its headers came.
pub fn note_status(ctx: &mut RequestCtx, status: u16) {
    if let Some(a) = current_attempt(ctx) {
        a.status = Some(status);
        a.headers_at = Some(Instant::now());
    }
}

/// The upstream status of the current attempt, once its headers came.
pub fn current_status(ctx: &RequestCtx) -> Option<u16> {
    let t = ctx.trace.as_deref()?;
    t.attempts.get(t.current?)?.status
}

/// The id, model and finish reasons of an OpenAI-format answer body (the same-dialect path),
/// read only for a sampled trace.
pub fn note_openai_answer(ctx: &mut RequestCtx, body: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        choices: Vec<Choice>,
    }
    if ctx.trace.as_ref().is_none_or(|t| !t.sampled) {
        return;
    }
    let Ok(a) = serde_json::from_slice::<Answer>(body) else {
        return;
    };
    let reasons = a
        .choices
        .into_iter()
        .filter_map(|c| c.finish_reason)
        .collect();
    note_response(ctx, a.id, a.model, reasons);
}

/// The id and finish reasons of a translated answer.
pub fn note_completion(ctx: &mut RequestCtx, c: &switchyard_filters::chat::Completion) {
    if ctx.trace.as_ref().is_none_or(|t| !t.sampled) {
        return;
    }
    let reasons = c
        .choices
        .iter()
        .filter_map(|ch| ch.finish_reason.map(|r| r.as_str().to_owned()))
        .collect();
    note_response(ctx, c.id.clone(), None, reasons);
}

/// Whether the request's trace is recorded (a stream relay then asks its translator to note
/// the answer's id, model and finish reasons: [`note_stream_answer`]).
pub fn sampled(ctx: &RequestCtx) -> bool {
    ctx.trace.as_ref().is_some_and(|t| t.sampled)
}

/// The id, model and finish reasons a stream's translator noted (when asked to: `record`),
/// for the current attempt's span; also for a stream that ended early (what it said so far).
pub fn note_stream_answer(
    ctx: &mut RequestCtx,
    answer: Option<&mut switchyard_filters::translate::StreamAnswer>,
) {
    let Some(a) = answer.filter(|a| a.record) else {
        return;
    };
    let (id, model) = (a.id.take(), a.model.take());
    note_response(ctx, id, model, std::mem::take(&mut a.finish_reasons));
}

fn note_response(
    ctx: &mut RequestCtx,
    id: Option<String>,
    model: Option<String>,
    finish_reasons: Vec<String>,
) {
    if let Some(a) = current_attempt(ctx) {
        a.response = Some(Box::new(ResponseInfo {
            id: id.map(|s| s.chars().take(256).collect()),
            model: model.map(|s| s.chars().take(256).collect()),
            finish_reasons: finish_reasons.into_iter().take(16).collect(),
        }));
    }
}

/// Closes the current attempt's span (once: later calls keep the first end).
pub fn end_attempt(ctx: &mut RequestCtx, end: AttemptEnd) {
    end_attempt_at(ctx, None, end, Instant::now());
}

/// Closes attempt `index` (None: the current one) at `at`.
pub fn end_attempt_at(ctx: &mut RequestCtx, index: Option<usize>, end: AttemptEnd, at: Instant) {
    let Some(t) = ctx.trace.as_deref_mut() else {
        return;
    };
    let Some(a) = index.or(t.current).and_then(|i| t.attempts.get_mut(i)) else {
        return;
    };
    if a.end.is_none() {
        a.end = Some((at, end));
    }
}

fn current_attempt(ctx: &mut RequestCtx) -> Option<&mut AttemptSpan> {
    let t = ctx.trace.as_deref_mut()?;
    let i = t.current?;
    t.attempts.get_mut(i)
}

/// Adds `traceparent` (and the caller's `tracestate`) to an upstream request of the unified
/// API: the current attempt's span as parent, or a fresh span id for an unsampled trace.
pub fn inject(ctx: &RequestCtx, index: Option<usize>, req: &mut RequestHeader) {
    let Some(t) = ctx.trace.as_deref() else {
        return;
    };
    let span_id = index
        .and_then(|i| t.attempts.get(i))
        .map_or_else(context::new_span_id, |a| a.span_id);
    let value = context::traceparent(t.trace_id, span_id, t.sampled);
    let _ = req.insert_header("traceparent", value);
    if let Some(ts) = &t.tracestate {
        let _ = req.insert_header("tracestate", ts.as_str());
    }
}

/// The configured response header with this request's trace id.
pub fn response_header(ctx: &RequestCtx) -> Option<(http::HeaderName, http::HeaderValue)> {
    let t = ctx.trace.as_deref()?;
    let name = t.pipeline.settings.response_header.clone()?;
    let value = http::HeaderValue::from_str(&context::trace_id_hex(t.trace_id)).ok()?;
    Some((name, value))
}

/// Notes a sampled request's trace id as an exemplar of its latency (and time to first
/// token) under the metric labels it was observed with.
pub fn exemplar(
    ctx: &RequestCtx,
    metrics: &crate::metrics::Metrics,
    provider: &str,
    model: &str,
    latency: std::time::Duration,
) {
    let Some(t) = ctx.trace.as_deref().filter(|t| t.sampled) else {
        return;
    };
    metrics
        .exemplars
        .observe(exemplars::DURATION, provider, model, latency, t.trace_id);
    if let Some(ttfb) = ctx.first_byte {
        metrics
            .exemplars
            .observe(exemplars::TTFT, provider, model, ttfb, t.trace_id);
    }
}

/// The OpenTelemetry `gen_ai.provider.name` of a provider kind.
fn genai_provider(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
        ProviderKind::Watsonx => "ibm.watsonx.ai",
        ProviderKind::Oci => "oci.generative_ai",
        ProviderKind::Mock => "switchyard.mock",
    }
}

/// The route template of a request (`http.route`).
fn route_template(route: RouteKind, path: &str) -> Cow<'static, str> {
    match route {
        RouteKind::Unified(e) => Cow::Owned(format!("/v1/{}", e.path().trim_start_matches('/'))),
        RouteKind::Passthrough => Cow::Borrowed("/providers/{provider}/{path}"),
        RouteKind::StoredResponse => Cow::Borrowed("/v1/responses/{response_id}"),
        RouteKind::Health | RouteKind::Ready | RouteKind::Models => {
            Cow::Owned(path.chars().take(64).collect())
        }
        _ => Cow::Borrowed(""),
    }
}

/// Ends the request's trace: builds its spans (when sampled) and queues them. Returns the
/// trace id for the access log.
pub fn finish(
    ctx: &mut RequestCtx,
    session: &pingora::proxy::Session,
    status: u16,
) -> Option<String> {
    ctx.trace.as_ref()?;
    let req = session.req_header();
    let client = session.client_addr().and_then(|a| a.as_inet()).copied();
    finish_with(ctx, status, req.method.as_str(), req.uri.path(), client)
}

/// [`finish`] from the request's parts (method, path, client address).
pub fn finish_with(
    ctx: &mut RequestCtx,
    status: u16,
    method: &str,
    path: &str,
    client: Option<std::net::SocketAddr>,
) -> Option<String> {
    let t = ctx.trace.take()?;
    let id = context::trace_id_hex(t.trace_id);
    // Load-balancer probes and CORS preflights would swamp the traces (as they would the
    // request metrics): their trace id is logged, no span is sent.
    if !t.sampled
        || matches!(
            ctx.route,
            RouteKind::Health | RouteKind::Ready | RouteKind::Preflight
        )
    {
        return Some(id);
    }
    let end = Instant::now();
    let trace_id = TraceId::from(t.trace_id);
    let state = t
        .tracestate
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let span_ctx = |span_id: u64| {
        SpanContext::new(
            trace_id,
            SpanId::from(span_id),
            TraceFlags::SAMPLED,
            false,
            state.clone(),
        )
    };
    let method = method.to_owned();
    let route = route_template(ctx.route, path);
    let name = if route.is_empty() {
        method.clone()
    } else {
        format!("{method} {route}")
    };
    let mut attrs = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("switchyard.request_id", ctx.request_id.clone()),
        KeyValue::new("switchyard.route", ctx.route.as_str()),
        KeyValue::new("switchyard.attempts", i64::from(ctx.attempts)),
    ];
    if !route.is_empty() {
        attrs.push(KeyValue::new("http.route", route.into_owned()));
    }
    if let Some(addr) = client {
        attrs.push(KeyValue::new("client.address", addr.ip().to_string()));
        attrs.push(KeyValue::new("client.port", i64::from(addr.port())));
    }
    if let Some(c) = &ctx.caller {
        attrs.push(KeyValue::new("switchyard.key_id", c.key_id.to_string()));
        attrs.push(KeyValue::new("enduser.id", c.user.to_string()));
    }
    if let Some(m) = &ctx.client_model {
        attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
    }
    if let Some(p) = &ctx.provider {
        attrs.push(KeyValue::new("switchyard.provider", p.name.to_string()));
    }
    let error_type = ctx.error.as_ref().map(|e| e.kind());
    let server_status = if status >= 500 || status == 0 {
        let why = error_type.unwrap_or("server_error");
        attrs.push(KeyValue::new("error.type", status_or(status, why)));
        Status::error(why)
    } else {
        Status::Unset
    };
    let scope = t.pipeline.scope.clone();
    let mut spans = Vec::with_capacity(1 + t.attempts.len());
    spans.push(SpanData {
        span_context: span_ctx(t.span_id),
        parent_span_id: t.parent.map_or(SpanId::INVALID, SpanId::from),
        parent_span_is_remote: t.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: t.wall_start,
        end_time: t.wall(end),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: server_status,
        instrumentation_scope: scope.clone(),
    });
    for a in &t.attempts {
        let (a_end, outcome) = a.end.unwrap_or((end, AttemptEnd::Failed("unfinished")));
        let won = outcome == AttemptEnd::Won;
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", t.operation),
            KeyValue::new("gen_ai.provider.name", genai_provider(a.kind)),
            KeyValue::new("gen_ai.request.model", a.model.clone()),
            KeyValue::new("switchyard.provider", a.provider.to_string()),
            KeyValue::new("switchyard.attempt.number", i64::from(a.number)),
            KeyValue::new("switchyard.attempt.reason", a.reason.as_str()),
        ];
        if let Some(v) = t.params.max_tokens {
            attrs.push(KeyValue::new("gen_ai.request.max_tokens", v));
        }
        if let Some(v) = t.params.temperature {
            attrs.push(KeyValue::new("gen_ai.request.temperature", v));
        }
        if let Some(v) = t.params.top_p {
            attrs.push(KeyValue::new("gen_ai.request.top_p", v));
        }
        if let Some(s) = a.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(c) = &ctx.caller {
            attrs.push(KeyValue::new("switchyard.key_id", c.key_id.to_string()));
            attrs.push(KeyValue::new("enduser.id", c.user.to_string()));
        }
        let status = match outcome {
            AttemptEnd::Won => {
                attrs.push(KeyValue::new("switchyard.attempt.outcome", "won"));
                Status::Unset
            }
            AttemptEnd::LostHedge => {
                attrs.push(KeyValue::new("switchyard.attempt.outcome", "lost_hedge"));
                Status::Unset
            }
            AttemptEnd::Failed(class) => {
                attrs.push(KeyValue::new("switchyard.attempt.outcome", "failed"));
                attrs.push(KeyValue::new("error.type", class));
                Status::error(class)
            }
        };
        let mut events = SpanEvents::default();
        if let Some(h) = a.headers_at {
            events
                .events
                .push(Event::new("response_headers", t.wall(h), Vec::new(), 0));
        }
        if let Some(r) = &a.response {
            if let Some(id) = &r.id {
                attrs.push(KeyValue::new("gen_ai.response.id", id.clone()));
            }
            if let Some(m) = &r.model {
                attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
            }
            if !r.finish_reasons.is_empty() {
                attrs.push(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(Array::String(
                        r.finish_reasons
                            .iter()
                            .map(|s| StringValue::from(s.clone()))
                            .collect(),
                    )),
                ));
            }
        }
        if won {
            if let Some(u) = ctx.usage {
                attrs.push(KeyValue::new(
                    "gen_ai.usage.input_tokens",
                    u.prompt_tokens as i64,
                ));
                attrs.push(KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    u.completion_tokens as i64,
                ));
                if u.cached_tokens > 0 {
                    attrs.push(KeyValue::new(
                        "gen_ai.usage.cache_read.input_tokens",
                        u.cached_tokens as i64,
                    ));
                }
                if u.cache_write_tokens > 0 {
                    attrs.push(KeyValue::new(
                        "gen_ai.usage.cache_creation.input_tokens",
                        u.cache_write_tokens as i64,
                    ));
                }
            }
            if let Some(ttfb) = ctx.first_byte {
                events.events.push(Event::new(
                    "first_byte",
                    t.wall(t.started + ttfb),
                    Vec::new(),
                    0,
                ));
            }
        }
        spans.push(SpanData {
            span_context: span_ctx(a.span_id),
            parent_span_id: SpanId::from(t.span_id),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Owned(format!("{} {}", t.operation, a.model)),
            start_time: t.wall(a.start),
            end_time: t.wall(a_end.max(a.start)),
            attributes: attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        });
    }
    t.pipeline.exporter.submit(spans);
    Some(id)
}

fn status_or(status: u16, why: &'static str) -> Value {
    if status >= 500 {
        Value::String(StringValue::from(status.to_string()))
    } else {
        Value::String(StringValue::from(why))
    }
}
