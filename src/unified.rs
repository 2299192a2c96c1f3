//! The unified (OpenAI-compatible) API: read and validate the body, plan the providers, and
//! try them in order — retries with backoff, fallback to the next provider, optional hedging
//! — as long as nothing has reached the client yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use switchyard_filters::openai::{parse_request, ParsedRequest};
use switchyard_filters::{mock, openai_upstream, Endpoint};

use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::forward::{Forwarder, Mode, Opened, UpstreamCall};
use crate::providers::endpoint::PeerTimeouts;
use crate::providers::{ProviderKind, Upstream};
use crate::proxy::{read_body, Gateway};
use crate::respond;
use crate::route::health::{Admission, ProviderHealth};
use crate::route::{Candidate, Plan, Policy};

/// An attempt's request, ready to send.
struct Prepared {
    request: RequestHeader,
    body: Bytes,
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
        let raw = read_body(session, config.server.max_request_body_bytes).await?;
        let parsed = parse_request(endpoint, &raw)?;
        let pinned = session
            .req_header()
            .headers
            .get("x-switchyard-provider")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let plan = config
            .router
            .plan(&parsed.summary.model, pinned.as_deref(), &self.health)?;
        ctx.client_model = Some(parsed.summary.model.clone());
        if let Some(first) = plan.candidates.first() {
            self.metrics
                .openai_requests
                .with_label_values(&[&first.provider.name])
                .inc();
        }
        let run = Run {
            gw: self,
            config,
            policy: &config.router.policy,
            parsed: &parsed,
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
    endpoint: Endpoint,
    deadline: Instant,
}

/// What one attempt came to.
enum Outcome {
    /// The answer went to the client (successfully or not): stop.
    Answered,
    /// Worth another try; `retry_after` when the provider said how long to wait.
    Retry {
        error: GatewayError,
        retry_after: Option<Duration>,
    },
}

impl Run<'_> {
    async fn execute(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        plan: &Plan<'_>,
    ) -> Result<(), GatewayError> {
        let n = plan.candidates.len();
        let mut last_error: Option<GatewayError> = None;
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
                Outcome::Retry { error, .. } => {
                    last_error = Some(error);
                    start_at = 2;
                }
            }
        }

        for ci in start_at..n {
            let cand = &plan.candidates[ci];
            let health = self.gw.health.get(&cand.provider.name);
            if health.admit() == Admission::Rejected {
                last_error.get_or_insert_with(|| {
                    unavailable(cand, "its circuit is open after repeated failures")
                });
                continue;
            }
            for retry in 0..self.policy.attempts_per_provider {
                let remaining = self.deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    health.release_probe();
                    return Err(last_error.unwrap_or_else(|| timeout(cand)));
                }
                let more_same = retry + 1 < self.policy.attempts_per_provider;
                let more_next = plan.candidates[ci + 1..]
                    .iter()
                    .any(|c| !self.gw.health.get(&c.provider.name).is_open());
                let may_retry = more_same || more_next;
                match self
                    .attempt(session, ctx, cand, &health, remaining, may_retry)
                    .await?
                {
                    Outcome::Answered => return Ok(()),
                    Outcome::Retry { error, retry_after } => {
                        last_error = Some(error);
                        if !more_same || (retry_after.is_some() && more_next) {
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
        Err(
            last_error.unwrap_or_else(|| GatewayError::ProviderUnavailable {
                provider: plan
                    .candidates
                    .first()
                    .map(|c| c.provider.name.to_string())
                    .unwrap_or_default(),
                reason: "no provider could take the request".into(),
            }),
        )
    }

    /// One attempt on one provider. `may_retry`: whether a retryable failure can still be
    /// retried (else it is relayed to the client as it is).
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        cand: &Candidate<'_>,
        health: &Arc<ProviderHealth>,
        remaining: Duration,
        may_retry: bool,
    ) -> Result<Outcome, GatewayError> {
        ctx.attempts += 1;
        ctx.provider = Some(cand.provider.clone());
        ctx.upstream_model = Some(cand.upstream_model.to_owned());
        let _in_flight = health.start();
        let Some(upstream) = cand.provider.upstream.as_ref() else {
            return self.mock(session, ctx, cand, health, may_retry).await;
        };
        let prepared = self.prepare(cand, upstream)?;
        let call = self.call(cand, upstream, prepared);
        let fw = self.forwarder(remaining);
        match fw.open(&call).await {
            Ok(opened) => {
                self.settle(session, ctx, &fw, &call, opened, health, may_retry)
                    .await
            }
            Err(e) if self.policy.retry_on.error(&e) => {
                health.record_failure(&self.policy.breaker);
                if may_retry {
                    Ok(Outcome::Retry {
                        error: e,
                        retry_after: None,
                    })
                } else {
                    Err(e)
                }
            }
            Err(e) => {
                health.release_probe();
                Err(e)
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
        call: &UpstreamCall<'_>,
        opened: Opened,
        health: &Arc<ProviderHealth>,
        may_retry: bool,
    ) -> Result<Outcome, GatewayError> {
        let status = opened.status();
        if status >= 500 {
            health.record_failure(&self.policy.breaker);
        } else {
            health.record_success(opened.time_to_headers);
        }
        if may_retry && self.policy.retry_on.status(status) {
            let retry_after = opened.retry_after();
            fw.discard(opened).await;
            ctx.log_detail = Some(format!(
                "{} answered HTTP {status}; trying again",
                call.provider.name
            ));
            return Ok(Outcome::Retry {
                error: GatewayError::UpstreamStatus {
                    provider: call.provider.name.to_string(),
                    status,
                },
                retry_after,
            });
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
        let (Some(up0), Some(up1)) = (
            first.provider.upstream.as_ref(),
            second.provider.upstream.as_ref(),
        ) else {
            return Ok(Outcome::Retry {
                error: unavailable(first, "hedging needs network providers"),
                retry_after: None,
            });
        };
        let (h0, h1) = (
            self.gw.health.get(&first.provider.name),
            self.gw.health.get(&second.provider.name),
        );
        if h0.admit() == Admission::Rejected || h1.admit() == Admission::Rejected {
            // Not both usable: let the plain loop handle them one by one.
            h0.release_probe();
            h1.release_probe();
            return Ok(Outcome::Retry {
                error: unavailable(first, "its circuit is open after repeated failures"),
                retry_after: None,
            });
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
        } else if winner == 0 {
            (1, f1.await)
        } else {
            (0, f0.await)
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
                self.settle(session, ctx, &fw, call, opened, health, may_retry)
                    .await
            }
            Err(e) => {
                health.record_failure(&self.policy.breaker);
                Ok(Outcome::Retry {
                    error: e,
                    retry_after: None,
                })
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
    ) -> Result<Outcome, GatewayError> {
        let reply = mock::respond(self.parsed, cand.upstream_model, unix_now());
        if reply.status >= 500 {
            health.record_failure(&self.policy.breaker);
        } else {
            health.record_success(Duration::ZERO);
        }
        if may_retry && self.policy.retry_on.status(reply.status) {
            return Ok(Outcome::Retry {
                error: GatewayError::UpstreamStatus {
                    provider: cand.provider.name.to_string(),
                    status: reply.status,
                },
                retry_after: reply.retry_after.map(|s| Duration::from_secs(u64::from(s))),
            });
        }
        send_mock(session, ctx, reply).await?;
        Ok(Outcome::Answered)
    }

    fn prepare(&self, cand: &Candidate<'_>, upstream: &Upstream) -> Result<Prepared, GatewayError> {
        match cand.provider.kind {
            ProviderKind::OpenAi => {
                let started = Instant::now();
                let body =
                    openai_upstream::prepare_request(self.parsed.clone(), cand.upstream_model);
                self.gw
                    .metrics
                    .translation
                    .with_label_values(&["openai", cand.provider.kind.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                let path = upstream
                    .endpoint
                    .path(&format!("/v1{}", self.endpoint.path()));
                let request = json_request(&path, upstream, body.len(), self.parsed.summary.stream)
                    .map_err(|_| GatewayError::Internal)?;
                Ok(Prepared {
                    request,
                    body: Bytes::from(body),
                })
            }
            // Config validation only maps models to providers that speak the unified API.
            _ => Err(GatewayError::Internal),
        }
    }

    fn call<'c>(
        &'c self,
        cand: &'c Candidate<'_>,
        upstream: &'c Upstream,
        prepared: Prepared,
    ) -> UpstreamCall<'c> {
        UpstreamCall {
            provider: cand.provider,
            upstream,
            request: prepared.request,
            body: prepared.body,
            mode: Mode::OpenAi {
                stream: self.parsed.summary.stream,
                client_model: &self.parsed.summary.model,
                upstream_model: cand.upstream_model,
                client_wants_usage: self.parsed.summary.client_wants_usage,
            },
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
        }
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

/// Sends a mock provider reply (one body, or an SSE stream written chunk by chunk).
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
    if reply.content_type == "text/event-stream" {
        respond::start_stream(session, ctx, h).await.map_err(io)?;
        ctx.mark_first_byte();
        for chunk in reply.chunks {
            session
                .write_response_body(Some(Bytes::from(chunk)), false)
                .await
                .map_err(io)?;
        }
        session.write_response_body(None, true).await.map_err(io)?;
    } else {
        let body = Bytes::from(reply.chunks.concat());
        respond::full(session, ctx, h, body).await.map_err(io)?;
    }
    Ok(())
}

/// The request header for a JSON POST to an upstream (credentials are applied later).
fn json_request(
    path: &str,
    upstream: &Upstream,
    len: usize,
    stream: bool,
) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build("POST", path.as_bytes(), Some(8))?;
    req.insert_header("host", upstream.endpoint.authority.clone())?;
    req.insert_header("content-type", "application/json")?;
    req.insert_header("content-length", len.to_string())?;
    req.insert_header(
        "accept",
        if stream {
            "text/event-stream"
        } else {
            "application/json"
        },
    )?;
    req.insert_header(
        "user-agent",
        concat!("switchyard/", env!("CARGO_PKG_VERSION")),
    )?;
    Ok(req)
}
