//! The unified API on providers with their own APIs: which translator (dialect) serves a
//! request, and the owned description of one translated call that travels with the upstream
//! request to [`crate::pipeline::forward`], where answers, streams and errors are translated back.

use std::sync::Arc;

use bytes::Bytes;
use switchyard_filters::chat::embeddings::EncodingFormat;
use switchyard_filters::chat::ResponseCtx;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::translate::{AnswerFormat, Dialect, Target};
use switchyard_filters::Endpoint;

use crate::providers::{Provider, ProviderKind};
use crate::route::TargetOptions;

/// The translator for a provider kind, endpoint and model; None when the provider cannot
/// serve the endpoint (or answers locally: the mock).
///
/// On the Messages front door, Claude on Bedrock always goes to InvokeModel (the Messages
/// body, unchanged but for the model) rather than Converse: nothing the caller sent is lost.
pub fn dialect(
    kind: ProviderKind,
    endpoint: Endpoint,
    model: &str,
    options: &TargetOptions,
) -> Option<Dialect> {
    let embeddings = endpoint == Endpoint::Embeddings;
    let messages = matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens);
    Some(match kind {
        ProviderKind::Mock => return None,
        ProviderKind::OpenAi => Dialect::OpenAi,
        ProviderKind::Azure => Dialect::Azure,
        ProviderKind::Anthropic if !embeddings => Dialect::Anthropic,
        ProviderKind::Bedrock if embeddings => Dialect::BedrockEmbed,
        ProviderKind::Bedrock if options.bedrock_invoke => Dialect::BedrockAnthropic,
        ProviderKind::Bedrock if messages && model.contains("anthropic.") => {
            Dialect::BedrockAnthropic
        }
        ProviderKind::Bedrock => Dialect::BedrockConverse,
        ProviderKind::Vertex if !embeddings && model.starts_with("claude") => {
            Dialect::VertexAnthropic
        }
        ProviderKind::Vertex => Dialect::VertexGemini,
        ProviderKind::Watsonx => Dialect::Watsonx,
        ProviderKind::Oci if !embeddings && model.starts_with("cohere.") => Dialect::OciCohere,
        ProviderKind::Oci if !embeddings => Dialect::OciGeneric,
        ProviderKind::Anthropic | ProviderKind::Oci => return None,
    })
}

/// What a translated call's answer becomes for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat {
        stream: bool,
        /// The API the client called (chat, legacy completions, Messages).
        front: FrontDoor,
        include_usage: bool,
    },
    Embeddings {
        format: EncodingFormat,
    },
    /// A Messages request on a host that speaks Messages (the same-dialect fast path): the
    /// answer is the host's, with the client's model name.
    Native {
        stream: bool,
    },
    /// A Messages `count_tokens` request on a host that counts: `{"input_tokens": N}`.
    CountTokens,
}

/// Whether `dialect` speaks the Anthropic Messages API itself (Anthropic, Claude on Bedrock
/// InvokeModel, Claude on Vertex).
pub fn speaks_messages(dialect: Dialect) -> bool {
    matches!(
        dialect,
        Dialect::Anthropic | Dialect::BedrockAnthropic | Dialect::VertexAnthropic
    )
}

/// One translated call: the target it was built for and what to do with its answer.
#[derive(Debug, Clone)]
pub struct Translation {
    pub dialect: Dialect,
    pub upstream_model: Arc<str>,
    pub project: Option<Arc<str>>,
    pub location: Option<Arc<str>>,
    pub api_version: Option<Arc<str>>,
    pub shape: Shape,
    pub answer: AnswerFormat,
    /// Further bodies of a batched embeddings call (Bedrock Titan embeds one text per call),
    /// sent after the first and combined with it.
    pub more_bodies: Vec<Bytes>,
}

impl Translation {
    pub fn new(
        dialect: Dialect,
        provider: &Provider,
        upstream_model: &str,
        options: &TargetOptions,
        shape: Shape,
    ) -> Translation {
        let s = &provider.settings;
        Translation {
            dialect,
            upstream_model: Arc::from(upstream_model),
            project: options.project.clone().or_else(|| s.project.clone()),
            location: options.location.clone().or_else(|| s.location.clone()),
            api_version: options
                .api_version
                .clone()
                .or_else(|| s.api_version.clone()),
            shape,
            answer: AnswerFormat::Json,
            more_bodies: Vec::new(),
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            dialect: self.dialect,
            upstream_model: &self.upstream_model,
            project: self.project.as_deref(),
            location: self.location.as_deref(),
            api_version: self.api_version.as_deref(),
        }
    }

    /// How the client's answer is rendered.
    pub fn response_ctx<'a>(
        &self,
        client_model: &'a str,
        fallback_id: &'a str,
        echo: &'a str,
        created: u64,
    ) -> ResponseCtx<'a> {
        let (front, include_usage) = match self.shape {
            Shape::Chat {
                front,
                include_usage,
                ..
            } => (front, include_usage),
            Shape::Embeddings { .. } => (FrontDoor::Chat, false),
            Shape::Native { .. } | Shape::CountTokens => (FrontDoor::Messages, true),
        };
        ResponseCtx {
            client_model,
            created,
            fallback_id,
            front,
            include_usage,
            echo,
        }
    }
}
