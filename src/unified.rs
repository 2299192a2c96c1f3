//! The unified (OpenAI-compatible) API: read and validate the body, plan the providers, and
//! try them in order — retries with backoff, fallback to the next provider, optional hedging
//! — as long as nothing has reached the client yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use switchyard_filters::chat::embeddings::EmbeddingsRequest;
use switchyard_filters::chat::response::render;
use switchyard_filters::chat::ResponseCtx;
use switchyard_filters::chat::{request as chat_request, ChatRequest};
use switchyard_filters::front::messages::errors as messages_errors;
use switchyard_filters::front::messages::request as messages_request;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::{parse_request_bytes, ParsedRequest};
use switchyard_filters::providers::messages_native;
use switchyard_filters::translate::{self, Answer, AnswerFormat, Dialect, Target};
use switchyard_filters::{mock, openai_upstream, Endpoint, InvalidRequest};

use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::forward::{Forwarder, Mode, Opened, UpstreamCall};
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{Provider, ProviderKind, Upstream};
use crate::proxy::Gateway;
use crate::respond;
use crate::route::health::{Admission, ProviderHealth};
use crate::route::{Candidate, Demand, Plan, Policy};
use crate::translation::{self, speaks_messages, Shape, Translation};
use percent_encoding::utf8_percent_encode;

/// An attempt's request, ready to send.
struct Prepared {
    request: RequestHeader,
    body: Bytes,
    how: How,
    /// Client parameters the provider cannot honour, for `x-switchyard-dropped-params`.
    dropped: Option<String>,
}

/// How an attempt's answer is turned into the client's.
enum How {
    /// OpenAI-shaped upstream (OpenAI, Azure OpenAI): model restored, usage chunk handled.
    OpenAi { azure: bool },
    /// A provider with its own API.
    Translated(Box<Translation>),
}

/// The client's request in typed form, parsed only when a candidate needs translation; a
/// parse failure is reported only if such a candidate is tried.
enum Typed {
    None,
    Chat(Result<Box<ChatRequest>, InvalidRequest>),
    Embeddings(Result<EmbeddingsRequest, InvalidRequest>),
}

impl Gateway {
    /// Serves `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.
    pub(crate) async fn unified(
        &self,
        config: &Arc<Config>,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<(), GatewayError> {
        let raw = self.read_body(session, ctx, config).await?;
        let parsed = parse_request_bytes(endpoint, raw)?;
        // Every provider (the mock and OpenAI included) refuses out-of-range values alike.
        match endpoint {
            Endpoint::Embeddings => {}
            Endpoint::Messages | Endpoint::CountTokens => {
                messages_request::validate(&parsed, endpoint == Endpoint::CountTokens)?
            }
            Endpoint::ChatCompletions | Endpoint::Completions => chat_request::validate(&parsed)?,
        }
        if parsed.summary.stream {
            self.take_stream_slot(config, ctx)?;
        }
        let pinned = session
            .req_header()
            .headers
            .get("x-switchyard-provider")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let max_tokens = match endpoint {
            Endpoint::Embeddings | Endpoint::CountTokens => Some(0),
            _ => ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|k| parsed.field(k).and_then(|v| v.parse::<u64>().ok())),
        };
        let demand = Demand::estimate(parsed.raw().len(), max_tokens);
        let plan = config.router.plan(
            &parsed.summary.model,
            pinned.as_deref(),
            &self.health,
            demand,
        )?;
        ctx.metric_model = Some(
            plan.matched
                .metric_label(&parsed.summary.model, &config.prices),
        );
        let plan = self
            .govern_unified(ctx, &parsed.summary.model, plan)
            .await?; // governance (sets ctx.client_model)
        let needs_typed = plan.candidates.iter().any(|c| match endpoint {
            // Messages: every host that does not speak Messages itself (the mock included).
            Endpoint::Messages | Endpoint::CountTokens => {
                !translation::dialect(c.provider.kind, endpoint, c.upstream_model, c.options)
                    .is_some_and(translation::speaks_messages)
            }
            _ => !matches!(
                c.provider.kind,
                ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Mock
            ),
        });
        let typed = match endpoint {
            _ if !needs_typed => Typed::None,
            Endpoint::Embeddings => {
                Typed::Embeddings(parsed.body().and_then(EmbeddingsRequest::from_body))
            }
            _ => Typed::Chat(ChatRequest::from_parsed(&parsed).map(Box::new)),
        };
        if let Some(first) = plan.candidates.first() {
            let front_door = match endpoint {
                Endpoint::Messages | Endpoint::CountTokens => &self.metrics.messages_requests,
                _ => &self.metrics.openai_requests,
            };
            front_door
                .with_label_values(&[&first.provider.name])
                .inc();
        }
        let beta = session
            .req_header()
            .headers
            .get("anthropic-beta")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let run = Run {
            gw: self,
            config,
            policy: &config.router.policy,
            parsed: &parsed,
            typed: &typed,
            beta: beta.as_deref(),
            endpoint,
            deadline: Instant::now() + config.router.policy.total_timeout,
        };
        run.execute(session, ctx, &plan).await
    }
}

/// One request's journey through its plan.
struct Run<'a> {
    gw: &'a Gateway,
    config: &'a Config,
    policy: &'a Policy,
    parsed: &'a ParsedRequest,
    typed: &'a Typed,
    /// The client's `anthropic-beta` header (Messages front door).
    beta: Option<&'a str>,
    endpoint: Endpoint,
    deadline: Instant,
}

/// What one attempt came to.
enum Outcome {
    /// The answer went to the client (successfully or not): stop.
    Answered,
    /// The attempt failed and nothing reached the client: worth another try.
    Failed(Failure),
}

/// A failed attempt, kept so that the client gets the most telling one when all fail.
struct Failure {
    error: GatewayError,
    /// When the provider said how long to wait.
    retry_after: Option<Duration>,
    provider: Arc<Provider>,
    /// False for a provider skipped without a call (nothing to count as its error).
    tried: bool,
}

/// How much a failure tells the client, higher first: a rate limit (with its Retry-After)
/// beats a server error, timeout or unreachable provider, which beats a provider that could
/// not be tried (circuit open), which beats a refusal (another 4xx, or a request the provider
/// cannot take) — from a fallback that refusal is earned by the gateway's own choice of
/// provider, not by the caller.
fn rank(e: &GatewayError) -> u8 {
    match e {
        GatewayError::UpstreamStatus { status: 429, .. } => 4,
        GatewayError::UpstreamStatus { status, .. } if *status >= 500 => 3,
        GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamTimeout { .. } => 3,
        GatewayError::ProviderUnavailable { .. } => 2,
        _ => 1,
    }
}

/// Whether a failure ranked `rank` should give way to the best one so far (`best`: its rank,
/// None on the first attempt): the client gets the earlier, more telling failure.
fn beaten(rank: u8, best: Option<u8>) -> bool {
    best.is_some_and(|b| rank < b)
}

impl Run<'_> {
    async fn execute(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        plan: &Plan<'_>,
    ) -> Result<(), GatewayError> {
        let n = plan.candidates.len();
        let mut best: Option<Failure> = None;
        let mut start_at = 0;

        if let Some(after) = plan.hedge_after.filter(|_| n >= 2) {
            match self
                .hedged(
                    session,
                    ctx,
                    &plan.candidates[0],
                    &plan.candidates[1],
                    after,
                )
                .await?
            {
                Outcome::Answered => return Ok(()),
                Outcome::Failed(f) => {
                    self.count_failure(&f);
                    keep(&mut best, f);
                    start_at = 2;
                }
            }
        }

        for ci in start_at..n {
            let cand = &plan.candidates[ci];
            let health = self.gw.health.get(&cand.provider.name);
            if health.admit() == Admission::Rejected {
                let error = unavailable(cand, "its circuit is open after repeated failures");
                keep(
                    &mut best,
                    Failure {
                        error,
                        retry_after: None,
                        provider: cand.provider.clone(),
                        tried: false,
                    },
                );
                continue;
            }
            for retry in 0..self.policy.attempts_per_provider {
                let remaining = self.deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    health.release_probe();
                    return Err(self.give_up(ctx, best).unwrap_or_else(|| timeout(cand)));
                }
                let more_same = retry + 1 < self.policy.attempts_per_provider;
                let more_next = plan.candidates[ci + 1..]
                    .iter()
                    .any(|c| !self.gw.health.get(&c.provider.name).is_open());
                let may_retry = more_same || more_next;
                let best_rank = best.as_ref().map(|f| rank(&f.error));
                match self
                    .attempt(session, ctx, cand, &health, remaining, may_retry, best_rank)
                    .await?
                {
                    Outcome::Answered => return Ok(()),
                    Outcome::Failed(f) => {
                        self.count_failure(&f);
                        let refused = rank(&f.error) <= 1;
                        let retry_after = f.retry_after;
                        keep(&mut best, f);
                        if refused || !more_same || (retry_after.is_some() && more_next) {
                            break; // next provider at once
                        }
                        let wait = retry_after.unwrap_or_else(|| self.policy.backoff(retry));
                        if Instant::now() + wait >= self.deadline {
                            break;
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Err(self
            .give_up(ctx, best)
            .unwrap_or_else(|| GatewayError::ProviderUnavailable {
                provider: plan
                    .candidates
                    .first()
                    .map(|c| c.provider.name.to_string())
                    .unwrap_or_default(),
                reason: "no provider could take the request".into(),
            }))
    }

    /// Counts a failed attempt in `ai_proxy_provider_errors_total` under the provider that
    /// failed (the failure the client finally gets is not counted again, see [`Self::give_up`]).
    fn count_failure(&self, f: &Failure) {
        if let Some(kind) = f.error.provider_error_type().filter(|_| f.tried) {
            self.gw
                .metrics
                .provider_errors
                .with_label_values(&[&f.provider.name, kind])
                .inc();
        }
    }

    /// The client's answer when no attempt succeeded: the most telling failure, attributed to
    /// the provider that failed. Attempt failures are counted already, so the access log's
    /// metrics must not count this one again.
    fn give_up(&self, ctx: &mut RequestCtx, best: Option<Failure>) -> Option<GatewayError> {
        let f = best?;
        ctx.provider = Some(f.provider);
        ctx.provider_error_counted = f.tried;
        Some(f.error)
    }

    /// One attempt on one provider. `may_retry`: whether a retryable failure can still be
    /// retried (else it is relayed to the client as it is, unless `best`, the rank of the
    /// most telling failure so far, beats it).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        cand: &Candidate<'_>,
        health: &Arc<ProviderHealth>,
        remaining: Duration,
        may_retry: bool,
        best: Option<u8>,
    ) -> Result<Outcome, GatewayError> {
        ctx.attempts += 1;
        ctx.provider = Some(cand.provider.clone());
        ctx.upstream_model = Some(cand.upstream_model.to_owned());
        let _in_flight = health.start();
        let failed = |error: GatewayError| {
            Ok(Outcome::Failed(Failure {
                error,
                retry_after: None,
                provider: cand.provider.clone(),
                tried: true,
            }))
        };
        if self.endpoint == Endpoint::CountTokens && !self.counts_natively(cand) {
            // No provider count to ask for: the gateway's estimate, marked as such.
            health.release_probe();
            self.estimate_tokens(session, ctx).await?;
            return Ok(Outcome::Answered);
        }
        let Some(upstream) = cand.provider.upstream.as_ref() else {
            return self.mock(session, ctx, cand, health, may_retry, best).await;
        };
        let prepared = match self.prepare(cand, upstream) {
            Ok(p) => p,
            // This provider cannot take the request (e.g. not this endpoint): a fallback's
            // refusal, not the caller's answer, when an earlier failure says more.
            Err(e) if beaten(rank(&e), best) => {
                health.release_probe();
                return failed(e);
            }
            Err(e) => {
                health.release_probe();
                return Err(e);
            }
        };
        let call = self.call(cand, upstream, prepared);
        let fw = self.forwarder(remaining);
        // A client that leaves while the provider thinks cancels the call at once.
        let opened = tokio::select! {
            r = fw.open(&call) => r,
            () = respond::client_gone(session) => {
                health.release_probe();
                ctx.log_detail = Some("client went away before the answer".into());
                return Err(GatewayError::ClientClosed);
            }
        };
        match opened {
            Ok(opened) => {
                self.settle(
                    session,
                    ctx,
                    &fw,
                    (cand, &call),
                    opened,
                    health,
                    may_retry,
                    best,
                )
                .await
            }
            Err(e) if self.policy.retry_on.error(&e) => {
                health.record_failure(&self.policy.breaker);
                if may_retry || beaten(rank(&e), best) {
                    failed(e)
                } else {
                    Err(e)
                }
            }
            Err(e) => {
                health.release_probe();
                if beaten(rank(&e), best) {
                    failed(e)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Decides what to do with an upstream's response headers: retry, or relay to the client.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        fw: &Forwarder<'_>,
        (cand, call): (&Candidate<'_>, &UpstreamCall<'_>),
        opened: Opened,
        health: &Arc<ProviderHealth>,
        may_retry: bool,
        best: Option<u8>,
    ) -> Result<Outcome, GatewayError> {
        let status = opened.status();
        if status >= 500 {
            health.record_failure(&self.policy.breaker);
        } else {
            health.record_success(opened.time_to_headers);
        }
        let retry_after = opened.retry_after();
        let error = GatewayError::UpstreamStatus {
            provider: call.provider.name.to_string(),
            status,
            retry_after: retry_after.map(|d| d.as_secs_f64().ceil() as u64),
        };
        let retry = may_retry && self.policy.retry_on.status(status);
        if retry || (status >= 400 && beaten(rank(&error), best)) {
            fw.discard(opened).await;
            ctx.log_detail = Some(format!(
                "{} answered HTTP {status}; {}",
                call.provider.name,
                if retry {
                    "trying again"
                } else {
                    "an earlier failure says more"
                }
            ));
            return Ok(Outcome::Failed(Failure {
                error,
                retry_after,
                provider: cand.provider.clone(),
                tried: true,
            }));
        }
        fw.relay(session, ctx, call, opened).await?;
        Ok(Outcome::Answered)
    }

    /// Runs the first two candidates as a race: the second starts when the first has not
    /// answered within `after`; the first good answer wins and the other is cancelled.
    async fn hedged(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        first: &Candidate<'_>,
        second: &Candidate<'_>,
        after: Duration,
    ) -> Result<Outcome, GatewayError> {
        let not_tried = |reason| {
            Ok(Outcome::Failed(Failure {
                error: unavailable(first, reason),
                retry_after: None,
                provider: first.provider.clone(),
                tried: false,
            }))
        };
        let (Some(up0), Some(up1)) = (
            first.provider.upstream.as_ref(),
            second.provider.upstream.as_ref(),
        ) else {
            return not_tried("hedging needs network providers");
        };
        let (h0, h1) = (
            self.gw.health.get(&first.provider.name),
            self.gw.health.get(&second.provider.name),
        );
        if h0.admit() == Admission::Rejected || h1.admit() == Admission::Rejected {
            // Not both usable: let the plain loop handle them one by one.
            h0.release_probe();
            h1.release_probe();
            return not_tried("its circuit is open after repeated failures");
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let fw = self.forwarder(remaining);
        let call0 = self.call(first, up0, self.prepare(first, up0)?);
        let call1 = self.call(second, up1, self.prepare(second, up1)?);
        let second_started = AtomicBool::new(false);
        let mut f0 = std::pin::pin!(async {
            let _g = h0.start();
            fw.open(&call0).await
        });
        let mut f1 = std::pin::pin!(async {
            tokio::time::sleep(after).await;
            second_started.store(true, Ordering::Relaxed);
            let _g = h1.start();
            fw.open(&call1).await
        });
        let good = |r: &Result<Opened, GatewayError>| matches!(r, Ok(o) if !self.policy.retry_on.status(o.status()));
        let (winner, result) = tokio::select! {
            r = &mut f0 => (0, r),
            r = &mut f1 => (1, r),
        };
        let (winner, result) = if good(&result) {
            (winner, result)
        } else {
            // The first to answer failed: count it, and wait for the other.
            let loser = if winner == 0 { first } else { second };
            let status = match result {
                Ok(opened) => {
                    let status = opened.status();
                    fw.discard(opened).await;
                    GatewayError::UpstreamStatus {
                        provider: loser.provider.name.to_string(),
                        status,
                        retry_after: None,
                    }
                }
                Err(e) => e,
            };
            self.count_failure(&Failure {
                error: status,
                retry_after: None,
                provider: loser.provider.clone(),
                tried: true,
            });
            if winner == 0 {
                (1, f1.await)
            } else {
                (0, f0.await)
            }
        };
        ctx.attempts += if second_started.load(Ordering::Relaxed) {
            2
        } else {
            1
        };
        let (cand, call, health) = if winner == 0 {
            (first, &call0, &h0)
        } else {
            (second, &call1, &h1)
        };
        ctx.provider = Some(cand.provider.clone());
        ctx.upstream_model = Some(cand.upstream_model.to_owned());
        match result {
            Ok(opened) => {
                let may_retry = true;
                self.settle(
                    session,
                    ctx,
                    &fw,
                    (cand, call),
                    opened,
                    health,
                    may_retry,
                    None,
                )
                .await
            }
            Err(e) => {
                health.record_failure(&self.policy.breaker);
                Ok(Outcome::Failed(Failure {
                    error: e,
                    retry_after: None,
                    provider: cand.provider.clone(),
                    tried: true,
                }))
            }
        }
    }

    /// The mock provider as a candidate: answers locally (and may fail on purpose).
    async fn mock(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        cand: &Candidate<'_>,
        health: &ProviderHealth,
        may_retry: bool,
        best: Option<u8>,
    ) -> Result<Outcome, GatewayError> {
        let messages = self.endpoint == Endpoint::Messages;
        let (reply, dropped) = if messages {
            // The mock speaks OpenAI: the Messages request goes in through the OpenAI dialect
            // and its answer comes back the same way, like any OpenAI-shaped provider's.
            let req = self.chat_request()?;
            let up = translate::prepare_chat(&openai_target(cand.upstream_model), req)?;
            let parsed = parse_request_bytes(Endpoint::ChatCompletions, Bytes::from(up.body))?;
            (
                mock::respond(&parsed, cand.upstream_model, unix_now()),
                joined(&up.dropped),
            )
        } else {
            (
                mock::respond(self.parsed, cand.upstream_model, unix_now()),
                None,
            )
        };
        if reply.status >= 500 {
            health.record_failure(&self.policy.breaker);
        } else {
            health.record_success(Duration::ZERO);
        }
        let error = GatewayError::UpstreamStatus {
            provider: cand.provider.name.to_string(),
            status: reply.status,
            retry_after: reply.retry_after.map(u64::from),
        };
        let retry = may_retry && self.policy.retry_on.status(reply.status);
        if retry || (reply.status >= 400 && beaten(rank(&error), best)) {
            return Ok(Outcome::Failed(Failure {
                error,
                retry_after: reply.retry_after.map(|s| Duration::from_secs(u64::from(s))),
                provider: cand.provider.clone(),
                tried: true,
            }));
        }
        if messages {
            ctx.dropped_params = dropped;
            send_mock_as_messages(session, ctx, reply, &self.parsed.summary.model).await?;
        } else {
            send_mock(session, ctx, reply).await?;
        }
        Ok(Outcome::Answered)
    }

    /// The client's request in neutral form (parsed when the plan was made).
    fn chat_request(&self) -> Result<&ChatRequest, GatewayError> {
        match self.typed {
            Typed::Chat(Ok(req)) => Ok(req),
            Typed::Chat(Err(e)) => Err(e.clone().into()),
            _ => Err(GatewayError::Internal),
        }
    }

    /// Whether a count_tokens request can be counted by this candidate's host.
    fn counts_natively(&self, cand: &Candidate<'_>) -> bool {
        cand.provider.upstream.is_some()
            && translation::dialect(
                cand.provider.kind,
                self.endpoint,
                cand.upstream_model,
                cand.options,
            )
            .is_some_and(translation::speaks_messages)
    }

    /// Answers count_tokens with the gateway's estimate: about four bytes of text per token
    /// (system, messages, tool definitions), marked `x-switchyard-token-count: estimated`.
    async fn estimate_tokens(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let req = self.chat_request()?;
        let mut bytes = 0usize;
        for m in &req.messages {
            bytes += m.text().len();
            for c in &m.tool_calls {
                bytes += c.name.len() + c.arguments.len();
            }
        }
        for t in &req.tools {
            bytes += t.name.len()
                + t.description.as_ref().map_or(0, String::len)
                + t.parameters.to_string().len();
        }
        let tokens = bytes.div_ceil(4).max(1);
        let body = format!("{{\"input_tokens\":{tokens}}}");
        let io = |_| GatewayError::Internal;
        let mut h = respond::header(200, "application/json", ctx).map_err(io)?;
        h.insert_header(TOKEN_COUNT_HEADER, "estimated")
            .map_err(io)?;
        respond::full(session, ctx, h, Bytes::from(body))
            .await
            .map_err(io)
    }

    fn prepare(&self, cand: &Candidate<'_>, upstream: &Upstream) -> Result<Prepared, GatewayError> {
        let started = Instant::now();
        let kind = cand.provider.kind;
        let openai_front = matches!(
            self.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings
        );
        let prepared = match kind {
            // Same dialect on both sides: the caller's body with the model replaced.
            ProviderKind::OpenAi if openai_front => {
                let body = openai_upstream::prepare_request(self.parsed, cand.upstream_model);
                let path = upstream
                    .endpoint
                    .path(&format!("/v1{}", self.endpoint.path()));
                Prepared {
                    request: self.json_request(&path, upstream, body.len(), &[])?,
                    body: Bytes::from(body),
                    how: How::OpenAi { azure: false },
                    dropped: None,
                }
            }
            ProviderKind::Azure if openai_front => {
                let api_version = cand
                    .options
                    .api_version
                    .as_deref()
                    .or(cand.provider.settings.api_version.as_deref())
                    .unwrap_or_default();
                let path = upstream.endpoint.path(&format!(
                    "/openai/deployments/{}{}?api-version={}",
                    utf8_percent_encode(cand.upstream_model, SEGMENT),
                    self.endpoint.path(),
                    utf8_percent_encode(api_version, SEGMENT),
                ));
                let body = openai_upstream::prepare_request(self.parsed, cand.upstream_model);
                Prepared {
                    request: self.json_request(&path, upstream, body.len(), &[])?,
                    body: Bytes::from(body),
                    how: How::OpenAi { azure: true },
                    dropped: None,
                }
            }
            _ => self.prepare_translated(cand, upstream)?,
        };
        self.gw
            .metrics
            .translation
            .with_label_values(&[
                if openai_front { "openai" } else { "messages" },
                kind.as_str(),
            ])
            .observe(started.elapsed().as_secs_f64());
        Ok(prepared)
    }

    /// Builds the request for a provider with its own API through its translator.
    fn prepare_translated(
        &self,
        cand: &Candidate<'_>,
        upstream: &Upstream,
    ) -> Result<Prepared, GatewayError> {
        let provider = cand.provider;
        let dialect = translation::dialect(
            provider.kind,
            self.endpoint,
            cand.upstream_model,
            cand.options,
        )
        .ok_or_else(|| GatewayError::InvalidRequest {
            message: format!(
                "Provider `{}` ({}) cannot serve /v1{}.",
                provider.name,
                provider.kind.as_str(),
                self.endpoint.path()
            ),
            param: Some("model".into()),
        })?;
        if speaks_messages(dialect) && self.endpoint == Endpoint::Messages
            || self.endpoint == Endpoint::CountTokens
        {
            return self.prepare_native(dialect, cand, upstream);
        }
        match self.typed {
            Typed::Chat(typed) => {
                let req = typed.as_ref().map_err(|e| GatewayError::from(e.clone()))?;
                let shape = Shape::Chat {
                    stream: req.stream,
                    front: req.front,
                    include_usage: req.include_usage,
                };
                let mut t =
                    Translation::new(dialect, provider, cand.upstream_model, cand.options, shape);
                let up = translate::prepare_chat(&t.target(), req)?;
                t.answer = up.answer;
                let path = upstream.endpoint.path(&up.path);
                let request =
                    self.json_request_for(&path, upstream, up.body.len(), &up.headers, up.answer)?;
                Ok(Prepared {
                    request,
                    body: Bytes::from(up.body),
                    how: How::Translated(Box::new(t)),
                    dropped: joined(&up.dropped),
                })
            }
            Typed::Embeddings(typed) => {
                let req = typed.as_ref().map_err(|e| GatewayError::from(e.clone()))?;
                let shape = Shape::Embeddings {
                    format: req.encoding_format,
                };
                let mut t =
                    Translation::new(dialect, provider, cand.upstream_model, cand.options, shape);
                let call = translate::prepare_embeddings(&t.target(), req)?;
                let mut bodies = call.bodies.into_iter().map(Bytes::from);
                let first = bodies.next().ok_or(GatewayError::Internal)?;
                t.more_bodies = bodies.collect();
                let path = upstream.endpoint.path(&call.path);
                let request = self.json_request_for(
                    &path,
                    upstream,
                    first.len(),
                    &call.headers,
                    AnswerFormat::Json,
                )?;
                Ok(Prepared {
                    request,
                    body: first,
                    how: How::Translated(Box::new(t)),
                    dropped: joined(&call.dropped),
                })
            }
            Typed::None => Err(GatewayError::Internal),
        }
    }

    /// A Messages request for a host that speaks Messages: the caller's body with only the
    /// model (and what the host needs: `anthropic_version`, the path) changed.
    fn prepare_native(
        &self,
        dialect: Dialect,
        cand: &Candidate<'_>,
        upstream: &Upstream,
    ) -> Result<Prepared, GatewayError> {
        let count = self.endpoint == Endpoint::CountTokens;
        let stream = self.parsed.summary.stream;
        let shape = if count {
            Shape::CountTokens
        } else {
            Shape::Native { stream }
        };
        let mut t = Translation::new(
            dialect,
            cand.provider,
            cand.upstream_model,
            cand.options,
            shape,
        );
        let raw = self.parsed.raw();
        let up = if count {
            messages_native::prepare_count_tokens(&t.target(), raw, self.beta)?
        } else {
            messages_native::prepare(&t.target(), raw, stream, self.beta)?
        };
        t.answer = up.answer;
        let path = upstream.endpoint.path(&up.path);
        let request =
            self.json_request_for(&path, upstream, up.body.len(), &up.headers, up.answer)?;
        Ok(Prepared {
            request,
            body: Bytes::from(up.body),
            how: How::Translated(Box::new(t)),
            dropped: joined(&up.dropped),
        })
    }

    fn json_request(
        &self,
        path: &str,
        upstream: &Upstream,
        len: usize,
        headers: &[(&'static str, String)],
    ) -> Result<RequestHeader, GatewayError> {
        let answer = if self.parsed.summary.stream {
            AnswerFormat::Sse
        } else {
            AnswerFormat::Json
        };
        self.json_request_for(path, upstream, len, headers, answer)
    }

    fn json_request_for(
        &self,
        path: &str,
        upstream: &Upstream,
        len: usize,
        headers: &[(&'static str, String)],
        answer: AnswerFormat,
    ) -> Result<RequestHeader, GatewayError> {
        let mut req = json_request(path, upstream, len, answer.accept())
            .map_err(|_| GatewayError::Internal)?;
        for (name, value) in headers {
            req.insert_header(*name, value.as_str())
                .map_err(|_| GatewayError::Internal)?;
        }
        Ok(req)
    }

    fn call<'c>(
        &'c self,
        cand: &'c Candidate<'_>,
        upstream: &'c Upstream,
        prepared: Prepared,
    ) -> UpstreamCall<'c> {
        let Prepared {
            request,
            body,
            how,
            dropped,
        } = prepared;
        let client_model = &self.parsed.summary.model;
        let mode = match how {
            How::OpenAi { azure } => Mode::OpenAi {
                stream: self.parsed.summary.stream,
                client_model,
                upstream_model: cand.upstream_model,
                client_wants_usage: self.parsed.summary.client_wants_usage,
                azure,
            },
            How::Translated(translation) => Mode::Translated {
                client_model,
                translation,
                dropped,
            },
        };
        UpstreamCall {
            provider: cand.provider,
            upstream,
            request,
            body,
            mode,
        }
    }

    /// A forwarder whose waits fit in the time this request has left.
    fn forwarder(&self, remaining: Duration) -> Forwarder<'_> {
        let s = &self.config.server;
        Forwarder {
            connector: &self.gw.connector,
            timeouts: PeerTimeouts {
                connect: s.connect_timeout.min(remaining),
                read: self
                    .policy
                    .first_byte_timeout
                    .unwrap_or(s.read_timeout)
                    .min(remaining),
                idle: self.policy.stream_idle_timeout.unwrap_or(s.read_timeout),
            },
            max_response_bytes: s.max_upstream_response_bytes,
            deadline: Some(self.deadline),
        }
    }
}

/// Keeps `f` as the client's answer if it tells more than the best failure so far (on a tie
/// the earlier one stays: the primary's failure before a fallback's).
fn keep(best: &mut Option<Failure>, f: Failure) {
    if best
        .as_ref()
        .is_none_or(|b| rank(&f.error) > rank(&b.error))
    {
        *best = Some(f);
    }
}

fn unavailable(cand: &Candidate<'_>, reason: &str) -> GatewayError {
    GatewayError::ProviderUnavailable {
        provider: cand.provider.name.to_string(),
        reason: reason.to_owned(),
    }
}

fn timeout(cand: &Candidate<'_>) -> GatewayError {
    GatewayError::UpstreamTimeout {
        provider: cand.provider.name.to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends a mock provider reply (one body, or an SSE stream written event by event).
async fn send_mock(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: mock::MockReply,
) -> Result<(), GatewayError> {
    ctx.usage = reply.usage;
    let io = |_| GatewayError::Internal;
    let mut h = respond::header(reply.status, reply.content_type, ctx).map_err(io)?;
    if let Some(secs) = reply.retry_after {
        h.insert_header("retry-after", secs.to_string())
            .map_err(io)?;
    }
    match reply.body {
        mock::MockBody::Stream(events) => {
            respond::start_stream(session, ctx, h).await.map_err(io)?;
            ctx.mark_first_byte();
            for (i, event) in events.enumerate() {
                respond::body(session, ctx, Bytes::from(event), false)
                    .await
                    .map_err(io)?;
                // A fast reader never makes a write wait: let other requests on this worker in.
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            respond::body(session, ctx, Bytes::new(), true)
                .await
                .map_err(io)?;
        }
        mock::MockBody::Full(body) => {
            respond::full(session, ctx, h, Bytes::from(body))
                .await
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Marks a count_tokens answer as the provider's count or the gateway's estimate.
pub(crate) const TOKEN_COUNT_HEADER: &str = "x-switchyard-token-count";

/// The OpenAI dialect aimed at `model` (the mock's way in and out for Messages requests).
fn openai_target(model: &str) -> Target<'_> {
    Target {
        dialect: Dialect::OpenAi,
        upstream_model: model,
        project: None,
        location: None,
        api_version: None,
    }
}

/// Sends a mock reply to a Messages client: the mock's OpenAI answer, stream or error read
/// by the OpenAI dialect and written as Messages.
async fn send_mock_as_messages(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: mock::MockReply,
    client_model: &str,
) -> Result<(), GatewayError> {
    let io = |_| GatewayError::Internal;
    let target = openai_target(client_model);
    let request_id = ctx.request_id.clone();
    let rctx = ResponseCtx {
        client_model,
        created: unix_now(),
        fallback_id: &request_id,
        front: FrontDoor::Messages,
        include_usage: true,
    };
    if reply.status >= 400 {
        let body = messages_errors::from_openai(reply.status, &reply.body.into_bytes());
        let h = respond::header(reply.status, "application/json", ctx).map_err(io)?;
        return respond::full(session, ctx, h, Bytes::from(body))
            .await
            .map_err(io);
    }
    match reply.body {
        mock::MockBody::Full(body) => {
            let answer = Answer {
                body: &body,
                input_tokens_header: None,
            };
            let completion =
                translate::parse_chat(&target, &answer).map_err(|_| GatewayError::Internal)?;
            ctx.usage = completion.usage;
            let out = render(&completion, &rctx);
            let h = respond::header(200, "application/json", ctx).map_err(io)?;
            respond::full(session, ctx, h, Bytes::from(out))
                .await
                .map_err(io)
        }
        mock::MockBody::Stream(events) => {
            let mut translator = translate::chat_stream(&target, &rctx);
            let h = respond::header(200, "text/event-stream", ctx).map_err(io)?;
            respond::start_stream(session, ctx, h).await.map_err(io)?;
            ctx.mark_first_byte();
            let mut out = Vec::new();
            for (i, event) in events.enumerate() {
                out.clear();
                translator.feed(event.as_ref(), &mut out);
                if !out.is_empty() {
                    respond::body(session, ctx, Bytes::copy_from_slice(&out), false)
                        .await
                        .map_err(io)?;
                }
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            out.clear();
            translator.finish(&mut out);
            ctx.usage = translator.usage();
            respond::body(session, ctx, Bytes::from(out), true)
                .await
                .map_err(io)
        }
    }
}

/// Longest `x-switchyard-dropped-params` value: the names include any unknown field the
/// caller sent, and per-message names (`messages[7].name`) grow with the body.
const MAX_DROPPED_HEADER_BYTES: usize = 1024;

/// The `x-switchyard-dropped-params` value: the names comma-separated, cut to
/// [`MAX_DROPPED_HEADER_BYTES`] (a cut list ends in `,...`); names that could not be part of
/// a header value are left out.
fn joined(names: &[String]) -> Option<String> {
    let mut out = String::new();
    for name in names {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            continue;
        }
        if out.len() + name.len() + 1 > MAX_DROPPED_HEADER_BYTES - 4 {
            out.push_str(if out.is_empty() { "..." } else { ",..." });
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
    }
    (!out.is_empty()).then_some(out)
}

/// A path segment's percent-encoding (RFC 3986 unreserved characters stay).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The request header for a JSON POST to an upstream (credentials are applied later).
fn json_request(
    path: &str,
    upstream: &Upstream,
    len: usize,
    accept: &str,
) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build("POST", path.as_bytes(), Some(8))?;
    req.insert_header("host", upstream.endpoint.authority.clone())?;
    req.insert_header("content-type", "application/json")?;
    req.insert_header("content-length", len.to_string())?;
    req.insert_header("accept", accept)?;
    req.insert_header(
        "user-agent",
        concat!("switchyard/", env!("CARGO_PKG_VERSION")),
    )?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_params_header_is_bounded_and_valid() {
        assert_eq!(joined(&[]), None);
        assert_eq!(
            joined(&["seed".into(), "user".into()]).as_deref(),
            Some("seed,user")
        );
        let many: Vec<String> = (0..100_000)
            .map(|i| format!("messages[{i}].name"))
            .collect();
        let v = joined(&many).unwrap();
        assert!(
            v.len() <= MAX_DROPPED_HEADER_BYTES && v.ends_with(",..."),
            "{v}"
        );
        let huge = vec!["x".repeat(1_000_000), "seed".into(), "bad name\n".into()];
        let v = joined(&huge).unwrap();
        assert_eq!(v, "...");
        assert!(http::HeaderValue::from_str(&v).is_ok());
        assert_eq!(
            joined(&["b\u{e9}".into(), "seed".into()]).as_deref(),
            Some("seed")
        );
    }
}
