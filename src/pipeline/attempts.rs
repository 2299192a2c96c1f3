//! Runs a request's plan: each candidate tried in order, retries with backoff, fallback to
//! the next provider, optional hedging, the most telling failure kept for the client — as
//! long as nothing has reached the client yet.

use super::front_door::Typed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pingora::proxy::Session;
use switchyard_filters::openai::ParsedRequest;
use switchyard_filters::Endpoint;

use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::forward::{Forwarder, Opened, UpstreamCall};
use crate::pipeline::Gateway;
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::Provider;
use crate::respond;
use crate::route::health::{Admission, ProviderHealth};
use crate::route::{Candidate, Plan, Policy};
use crate::telemetry::{self, AttemptEnd, Reason};

/// One request's journey through its plan.
pub(super) struct Run<'a> {
    pub(super) gw: &'a Gateway,
    pub(super) config: &'a Config,
    pub(super) policy: &'a Policy,
    pub(super) parsed: &'a ParsedRequest,
    pub(super) typed: &'a Typed,
    /// The typed request with its image URLs fetched, for providers that take image bytes
    /// only ([`Run::fetch_images_for`]).
    pub(super) images: &'a crate::media_fetch::FetchedOnce,
    /// The client's `anthropic-beta` header (Messages front door).
    pub(super) beta: Option<&'a str>,
    /// The client's `anthropic-version` header (Messages front door), forwarded to the
    /// Anthropic API unless the provider or mapping sets `api_version`.
    pub(super) anthropic_version: Option<&'a str>,
    pub(super) endpoint: Endpoint,
    pub(super) deadline: Instant,
}

/// What one attempt came to.
pub(super) enum Outcome {
    /// The answer went to the client (successfully or not): stop.
    Answered,
    /// The attempt failed and nothing reached the client: worth another try.
    Failed(Failure),
}

/// A failed attempt, kept so that the client gets the most telling one when all fail.
pub(super) struct Failure {
    pub(super) error: GatewayError,
    /// When the provider said how long to wait.
    pub(super) retry_after: Option<Duration>,
    pub(super) provider: Arc<Provider>,
    /// False for a provider skipped without a call (nothing to count as its error).
    pub(super) tried: bool,
}

/// How much a failure tells the client, higher first: a rate limit (with its Retry-After)
/// beats a server error, timeout or unreachable provider, which beats a provider that could
/// not be tried (circuit open), which beats a refusal (another 4xx, or a request the provider
/// cannot take) — from a fallback that refusal is earned by the gateway's own choice of
/// provider, not by the caller.
pub(super) fn rank(e: &GatewayError) -> u8 {
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
pub(super) fn beaten(rank: u8, best: Option<u8>) -> bool {
    best.is_some_and(|b| rank < b)
}

impl Run<'_> {
    pub(super) async fn execute(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        plan: &Plan<'_>,
    ) -> Result<(), GatewayError> {
        let n = plan.candidates.len();
        let mut best: Option<Failure> = None;
        let mut start_at = 0;
        telemetry::note_request(ctx, self.endpoint, self.parsed);

        // A token count is cheap and answered locally by hosts that cannot count: not hedged.
        let hedge = plan
            .hedge_after
            .filter(|_| n >= 2 && self.endpoint != Endpoint::CountTokens);
        if let Some(after) = hedge {
            // Boxed: two attempts side by side make the biggest future of all, and only
            // hedged mappings need it.
            let r = Box::pin(self.hedged(
                session,
                ctx,
                &plan.candidates[0],
                &plan.candidates[1],
                after,
            ))
            .await;
            traced_end(ctx, &r);
            match r? {
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
                let reason = if retry > 0 {
                    Reason::Retry
                } else if ctx.attempts == 0 {
                    Reason::First
                } else {
                    Reason::Fallback
                };
                telemetry::next_reason(ctx, reason);
                let r = self
                    .attempt(session, ctx, cand, &health, remaining, may_retry, best_rank)
                    .await;
                traced_end(ctx, &r);
                match r? {
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
    pub(super) fn count_failure(&self, f: &Failure) {
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
    pub(super) fn give_up(
        &self,
        ctx: &mut RequestCtx,
        best: Option<Failure>,
    ) -> Option<GatewayError> {
        let f = best?;
        ctx.provider = Some(f.provider);
        ctx.provider_error_counted = f.tried;
        Some(f.error)
    }

    /// One attempt on one provider. `may_retry`: whether a retryable failure can still be
    /// retried (else it is relayed to the client as it is, unless `best`, the rank of the
    /// most telling failure so far, beats it).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
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
        telemetry::begin_attempt(ctx, cand.provider, cand.upstream_model);
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
        self.fetch_images_for(cand).await;
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
        let mut call = self.call(cand, upstream, prepared);
        telemetry::inject(ctx, telemetry::current(ctx), &mut call.request);
        let fw = self.forwarder(remaining);
        let on_path = telemetry::on_path(ctx, telemetry::current(ctx));
        // A client that leaves while the provider thinks cancels the call at once.
        let opened = tokio::select! {
            r = telemetry::with_on_path(on_path, fw.open(&call)) => r,
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
    pub(super) async fn settle(
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
        telemetry::note_status(ctx, status);
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
    pub(super) async fn hedged(
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
        self.fetch_images_for(first).await;
        self.fetch_images_for(second).await;
        let mut call0 = self.call(first, up0, self.prepare(first, up0)?);
        let mut call1 = self.call(second, up1, self.prepare(second, up1)?);
        // Both attempts' spans open now (the hedge's start moves to its delay), so that each
        // call carries its own span as `traceparent`.
        let race_start = Instant::now();
        telemetry::next_reason(ctx, Reason::First);
        telemetry::begin_attempt(ctx, first.provider, first.upstream_model);
        let span0 = telemetry::current(ctx);
        telemetry::next_reason(ctx, Reason::Hedge);
        telemetry::begin_attempt(ctx, second.provider, second.upstream_model);
        let span1 = telemetry::current(ctx);
        telemetry::restart_attempt(ctx, span1, race_start + after);
        telemetry::inject(ctx, span0, &mut call0.request);
        telemetry::inject(ctx, span1, &mut call1.request);
        let (on_path0, on_path1) = (
            telemetry::on_path(ctx, span0),
            telemetry::on_path(ctx, span1),
        );
        let second_started = AtomicBool::new(false);
        let mut f0 = std::pin::pin!(async {
            let _g = h0.start();
            telemetry::with_on_path(on_path0, fw.open(&call0)).await
        });
        let mut f1 = std::pin::pin!(async {
            tokio::time::sleep(after).await;
            second_started.store(true, Ordering::Relaxed);
            let _g = h1.start();
            telemetry::with_on_path(on_path1, fw.open(&call1)).await
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
            telemetry::end_attempt_at(
                ctx,
                if winner == 0 { span0 } else { span1 },
                AttemptEnd::Failed(failure_class(&status)),
                Instant::now(),
            );
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
        let both = second_started.load(Ordering::Relaxed);
        ctx.attempts += if both { 2 } else { 1 };
        let (won, lost) = if winner == 0 {
            (span0, span1)
        } else {
            (span1, span0)
        };
        if both {
            // The other one, when still running, was cancelled by this answer.
            telemetry::end_attempt_at(ctx, lost, AttemptEnd::LostHedge, Instant::now());
        } else {
            telemetry::drop_attempt(ctx, span1);
        }
        telemetry::set_current(ctx, won);
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
    /// A forwarder whose waits fit in the time this request has left.
    pub(super) fn forwarder(&self, remaining: Duration) -> Forwarder<'_> {
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

/// Closes the current attempt's span with what the attempt came to.
fn traced_end(ctx: &mut RequestCtx, r: &Result<Outcome, GatewayError>) {
    if ctx.trace.as_ref().is_none_or(|t| !t.sampled) {
        return;
    }
    let end = match r {
        Ok(Outcome::Answered) => match telemetry::current_status(ctx).filter(|s| *s >= 400) {
            Some(429) => AttemptEnd::Failed("rate_limit"),
            Some(s) if s >= 500 => AttemptEnd::Failed("server_error"),
            Some(_) => AttemptEnd::Failed("client_error"),
            None => AttemptEnd::Won,
        },
        Ok(Outcome::Failed(f)) => AttemptEnd::Failed(failure_class(&f.error)),
        Err(e) => AttemptEnd::Failed(failure_class(e)),
    };
    telemetry::end_attempt(ctx, end);
}

/// `error.type` of a failed attempt: the provider error class, else the gateway's kind.
fn failure_class(e: &GatewayError) -> &'static str {
    e.provider_error_type().unwrap_or_else(|| e.kind())
}

/// Keeps `f` as the client's answer if it tells more than the best failure so far (on a tie
/// the earlier one stays: the primary's failure before a fallback's).
pub(super) fn keep(best: &mut Option<Failure>, f: Failure) {
    if best
        .as_ref()
        .is_none_or(|b| rank(&f.error) > rank(&b.error))
    {
        *best = Some(f);
    }
}

pub(super) fn unavailable(cand: &Candidate<'_>, reason: &str) -> GatewayError {
    GatewayError::ProviderUnavailable {
        provider: cand.provider.name.to_string(),
        reason: reason.to_owned(),
    }
}

pub(super) fn timeout(cand: &Candidate<'_>) -> GatewayError {
    GatewayError::UpstreamTimeout {
        provider: cand.provider.name.to_string(),
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
