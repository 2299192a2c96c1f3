//! A front door's request up to its plan: the body read and checked for the API the client
//! called (OpenAI chat, completions, embeddings; Anthropic Messages and count_tokens), the
//! providers planned for its model, governance applied, the neutral form parsed when some
//! candidate needs a translation; then [`super::attempts`] runs the plan.

use super::attempts::Run;
use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;
use switchyard_filters::chat::embeddings::EmbeddingsRequest;
use switchyard_filters::chat::{request as chat_request, ChatRequest};
use switchyard_filters::front::messages::request as messages_request;
use switchyard_filters::front::responses::request as responses_request;
use switchyard_filters::openai::parse_request_bytes;
use switchyard_filters::{Endpoint, InvalidRequest};

use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::errors::GatewayError;
use crate::pipeline::translation;
use crate::pipeline::Gateway;
use crate::providers::ProviderKind;
use crate::route::Demand;

/// The client's request in typed form, parsed only when a candidate needs translation; a
/// parse failure is reported only if such a candidate is tried.
pub(super) enum Typed {
    None,
    Chat(Result<Box<ChatRequest>, InvalidRequest>),
    Embeddings(Result<EmbeddingsRequest, InvalidRequest>),
}

impl Gateway {
    /// Serves a front door: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
    /// `/v1/messages`, `/v1/messages/count_tokens` and `/v1/responses`.
    pub(crate) async fn front_door(
        &self,
        config: &Arc<Config>,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<(), GatewayError> {
        let raw = self.read_body(session, ctx, config).await?;
        let mut parsed = parse_request_bytes(endpoint, raw)?;
        // Every provider (the mock and OpenAI included) refuses out-of-range values alike.
        match endpoint {
            Endpoint::Embeddings => {}
            Endpoint::Responses => {
                responses_request::validate(&parsed)?;
                parsed = self.responses_turn(config, ctx, parsed).await?;
            }
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
            _ => ["max_completion_tokens", "max_tokens", "max_output_tokens"]
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
                     // The cache answers after governance (the key's scopes and limits apply to hits;
                     // budgets are not charged for them), before any provider is called.
        if let super::cache::Lookup::Answered = self
            .cache_lookup(session, ctx, endpoint, &parsed, &plan)
            .await?
        {
            return Ok(());
        }
        let needs_typed = plan.candidates.iter().any(|c| match endpoint {
            // Messages: every host that does not speak Messages itself (the mock included).
            Endpoint::Messages | Endpoint::CountTokens => {
                !translation::dialect(c.provider.kind, endpoint, c.upstream_model, c.options)
                    .is_some_and(translation::speaks_messages)
            }
            // Responses: every host but OpenAI and Azure (the mock answers through the neutral
            // model).
            Endpoint::Responses => {
                !matches!(c.provider.kind, ProviderKind::OpenAi | ProviderKind::Azure)
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
            front_door.with_label_values(&[&first.provider.name]).inc();
        }
        let header = |name: &str| {
            session
                .req_header()
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (beta, version) = (header("anthropic-beta"), header("anthropic-version"));
        let images = crate::media_fetch::FetchedOnce::default();
        let run = Run {
            gw: self,
            config,
            policy: &config.router.policy,
            parsed: &parsed,
            typed: &typed,
            images: &images,
            beta: beta.as_deref(),
            anthropic_version: version.as_deref(),
            endpoint,
            deadline: Instant::now() + config.router.policy.total_timeout,
        };
        let result = run.execute(session, ctx, &plan).await;
        self.cache_finish(ctx, result)
    }
}
