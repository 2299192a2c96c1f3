//! Anthropic Messages API, direct and through the two clouds that host Claude with the same
//! body (shared PROTOCOLS.md §2, §3.2, §4.4).
//!
//! | dialect | path | answer | version |
//! |---|---|---|---|
//! | [`Dialect::Anthropic`] | `/v1/messages` (`model` in the body, `stream:true` for streams) | JSON / SSE | header `anthropic-version` = `Target::api_version` or `2023-06-01` |
//! | [`Dialect::BedrockAnthropic`] | `/model/{id}/invoke`, `/model/{id}/invoke-with-response-stream` | JSON / eventstream `chunk`s | body `anthropic_version: bedrock-2023-05-31` |
//! | [`Dialect::VertexAnthropic`] | `/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict` / `:streamRawPredict` | JSON / SSE | body `anthropic_version: vertex-2023-10-16` |
//!
//! Bedrock and Vertex take the model from the URL, so the body has no `model`; Bedrock also
//! has no `stream` (the operation decides), Vertex keeps `stream:true`. The Bedrock model id
//! is one percent-encoded path segment (`:` → `%3A`, `/` → `%2F` for ARNs, as the AWS SDKs
//! send it). A Vertex target without `project` or `location` is a configuration error (400).
//!
//! Request mapping (every OpenAI field is mapped, dropped — listed in
//! `x-switchyard-dropped-params` — or rejected with a 400 naming it):
//! - `max_tokens` / `max_completion_tokens` → `max_tokens`; Anthropic requires it, so 4096
//!   when the client gave none.
//! - `temperature` clamped to Anthropic's range [0, 1] (OpenAI allows up to 2); `top_p` as is.
//! - `stop` → `stop_sequences`; `user` → `metadata.user_id`.
//! - `system` and `developer` messages (wherever they appear) → top-level `system`, joined by
//!   blank lines; images there → 400.
//! - `user` / `assistant` → turns; consecutive same-role turns are merged; `tool` results →
//!   `tool_result` blocks in one user turn (placed before any text of that turn, as Anthropic
//!   requires); assistant `tool_calls` → `tool_use` blocks (`arguments` must be a JSON object
//!   or empty, else 400 naming `messages[i].tool_calls[j].function.arguments`). The
//!   conversation must start with a user turn (400 `messages` otherwise). Empty text parts are
//!   left out (Anthropic rejects empty text blocks); a final assistant message (prefill) loses
//!   its trailing whitespace, which Anthropic rejects.
//! - images: `data:` URLs → `base64` source (png, jpeg, gif, webp); `http(s)` URLs → `url`
//!   source for Anthropic and Vertex, 400 for Bedrock InvokeModel (base64 only); anything else
//!   → 400 naming `messages[i].content[j].image_url`. Images in assistant turns → 400.
//! - `file` parts (PDF, user messages) → `document` blocks with a base64 source, `filename` as
//!   `title`; another media type → 400 naming `messages[i].content[j].file`.
//! - `tools` → `{name, description, input_schema}`; `tool_choice` `auto`/`required`/named/
//!   `none` → `auto`/`any`/`tool`/`none`; `parallel_tool_calls:false` →
//!   `disable_parallel_tool_use:true`. `tool_choice:"required"` without tools → 400.
//! - `n > 1` → 400 `n`; `response_format` `json_object`/`json_schema` → a forced tool
//!   ([`super::json_tool::JSON_TOOL`], `tool_choice` `{type:"tool"}`, or `any` without parallel
//!   calls next to the caller's tools) whose `input_schema` is the caller's schema; its call
//!   comes back as the `content` (streamed: its `input_json_delta`s as content deltas),
//!   `finish_reason: stop` (rules and refusals in [`super::json_tool`]). Anthropic refuses a
//!   forced `tool_choice` when extended thinking is on; this mapping sends no thinking, so a
//!   request that adds it must use `any` instead. `text` is accepted and ignored.
//! - dropped: `seed`, `presence_penalty`, `frequency_penalty`, `image_url.detail`, message
//!   `name`s, tool `strict`, and every unknown field (`ChatRequest::other`).
//! - reasoning ([`ChatRequest::reasoning`]) → extended thinking, `thinking:{"type":"enabled",
//!   "budget_tokens":B}` ([`thinking_budget`]). Effort → budget: `minimal`/`low` 1024 (the
//!   minimum Anthropic accepts), `medium` 4096, `high` 16384 — four times per step, so the
//!   inverse mapping the OpenAI translator uses (≤ 2048 low, ≤ 8192 medium, else high) puts
//!   each budget back on its own effort; a client's explicit budget is kept, raised to 1024.
//!   Anthropic's extended-thinking rules (docs.anthropic.com "Building with extended
//!   thinking"; Bedrock user guide "Extended thinking"): `budget_tokens` ≥ 1024 and below
//!   `max_tokens`, so `max_tokens` becomes budget + the client's `max_tokens` (or 4096) — the
//!   client's limit stays the answer's; `temperature` (other than 1), `top_p` and `top_k` are
//!   not allowed with thinking: dropped and named; a forced tool (`tool_choice` `required` or
//!   named, i.e. `any` / `tool`) is not allowed either: 400 naming `tool_choice` (silently
//!   letting the model skip a tool the client demanded would change the program's flow).
//! - Thinking in tool loops: with thinking on, Anthropic requires the assistant turn whose
//!   tool calls the final tool results answer to start with the thinking block it produced,
//!   unmodified ("Expected `thinking` or `redacted_thinking`, but found `tool_use`"; docs
//!   "Building with extended thinking", preserving thinking blocks; the signature is verified,
//!   and signatures are compatible across the Anthropic API, Bedrock and Vertex). Answers hand
//!   the signed blocks to OpenAI clients as `thinking_blocks` (below), and an assistant
//!   message's `thinking_blocks` ([`crate::chat::Message::thinking`]) go back first in its
//!   turn as `thinking` / `redacted_thinking` blocks — only while thinking is on (with thinking
//!   off Anthropic refuses thinking in a final assistant turn: "When thinking is disabled, an
//!   `assistant` message in the final position cannot contain `thinking`"). A tool-loop
//!   continuation whose last assistant message has no signed block (only
//!   `reasoning_content`, nothing verifiable) is sent without thinking and `reasoning_effort`
//!   is named as dropped (`keeps_thinking`).
//! - Tool call ids carrying a Gemini thought signature (after a fallback from Gemini) are
//!   sent as [`super::gemini::host_tool_id`], without it.
//!
//! - Prompt caching: each [`ChatRequest::cache`] breakpoint becomes `cache_control` (with its
//!   `ttl`) on the block or tool it follows; `system` is sent as text blocks when one sits in
//!   it. At most 4 (Anthropic's limit): the last 4 in prompt order are kept, the rest named.
//!
//! Answers: text blocks → `content`, `tool_use` → `tool_calls` (`input` re-serialized as the
//! arguments string), `thinking` → `reasoning` (`reasoning_content`); signed `thinking` and
//! `redacted_thinking` blocks → [`Choice::thinking_blocks`], which OpenAI clients see as
//! `thinking_blocks` (LiteLLM's field; streams: one delta per block when its `signature_delta`
//! arrives, or when a `redacted_thinking` block starts). `stop_reason` per
//! PROTOCOLS §8.1. Usage: `prompt_tokens` = `input_tokens` + cache reads + cache writes,
//! `cached_tokens` = cache reads.
//!
//! Streams: one event state machine ([`Events`]) behind both framings — SSE (Anthropic,
//! Vertex) and eventstream `chunk` frames whose `bytes` hold one Anthropic event (Bedrock). A
//! Bedrock exception frame or an Anthropic `error` event ends the stream with an OpenAI error
//! event; EOF before `message_stop`, an unreadable event or a corrupt frame → truncated.
//! Compact `content_block_delta` events (nearly all of a stream) are read by a borrowed fast path
//! ([`fast_delta`]); every other event by one flat typed struct.
//!
//! Errors (PROTOCOLS §2.4, §8.2): the Anthropic envelope's message is kept and its type is the
//! `code`; 401 → 502 (the gateway's credential), 402 `billing_error` → 502 (the gateway's
//! account), 408 → 504, 429 → `rate_limit_exceeded`, 529 → 503, other 5xx → 500.

use crate::front::FrontDoor;
use crate::providers::gemini::host_tool_id;
use crate::providers::json_tool::{self, Force, JsonTool, JSON_TOOL};
use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::chat::request::{data_url, CacheAt, CacheTtl, Reasoning};
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Part, ResponseCtx, Role,
    ThinkingBlock, ToolCall, ToolChoice,
};
use crate::eventstream::{decode_chunk, Decoder, Message as Frame};
use crate::openai::{error_type_for_status, InvalidRequest, Usage};
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    Answer, AnswerFormat, BadAnswer, Dialect, ErrorHints, ErrorReply, StreamEnd, StreamTranslator,
    Target, Translator, UpstreamRequest,
};

/// Used when the client sets no limit (Anthropic requires `max_tokens`).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";
pub(crate) const BEDROCK_VERSION: &str = "bedrock-2023-05-31";
pub(crate) const VERTEX_VERSION: &str = "vertex-2023-10-16";
/// Image types the Messages API accepts in a `base64` source.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    anthropic_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<SystemOut<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<ThinkingOut>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

/// Anthropic's `thinking` request object (extended thinking on).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThinkingOut {
    #[serde(rename = "type")]
    kind: &'static str,
    pub(crate) budget_tokens: u64,
}

/// The smallest `budget_tokens` Anthropic accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// The thinking budget for a reasoning request: the client's budget (at least
/// [`MIN_THINKING_BUDGET`]), else the effort's ([`Reasoning::budget`]).
pub fn thinking_budget(r: &Reasoning) -> u64 {
    r.budget().max(MIN_THINKING_BUDGET)
}

/// What extended thinking does to a Claude request (shared with the Converse translator,
/// which sends the same `thinking` object in `additionalModelRequestFields`).
pub(crate) struct ClaudeThinking {
    pub(crate) thinking: ThinkingOut,
    /// `max_tokens` to send: the budget plus the client's limit.
    pub(crate) max_tokens: u64,
    /// `temperature` to send (only 1 survives thinking).
    pub(crate) temperature: Option<f64>,
}

/// Applies Anthropic's extended-thinking rules to `req` (see the module doc): the thinking
/// object, the raised `max_tokens`, the sampling parameters that must go (`temperature` other
/// than 1 and `top_p`, named in `dropped`; `top_k` is left to the caller), and a 400 naming
/// `tool_choice` for a forced tool. `temperature` is the value
/// the caller would send without thinking (already clamped to 0–1).
pub(crate) fn claude_thinking(
    r: &Reasoning,
    req: &ChatRequest,
    temperature: Option<f64>,
    dropped: &mut Vec<String>,
) -> Result<Option<ClaudeThinking>, InvalidRequest> {
    if !keeps_thinking(req) {
        dropped.push(Reasoning::PARAM.into());
        return Ok(None);
    }
    if !req.tools.is_empty()
        && matches!(
            req.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Named(_))
        )
    {
        return Err(bad(
            format!("Invalid 'tool_choice': Claude cannot be made to call a tool while thinking (reasoning_effort / thinking is set); use 'auto' or 'none', or leave {} out.", Reasoning::PARAM),
            "tool_choice",
        ));
    }
    let budget = thinking_budget(r);
    let temperature = match temperature {
        Some(t) if t != 1.0 => {
            dropped.push("temperature".into());
            None
        }
        t => t,
    };
    if req.top_p.is_some() {
        dropped.push("top_p".into());
    }
    Ok(Some(ClaudeThinking {
        thinking: ThinkingOut {
            kind: "enabled",
            budget_tokens: budget,
        },
        max_tokens: budget.saturating_add(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature,
    }))
}

/// Whether thinking can stay on: not a tool-loop continuation, or one whose last assistant
/// turn (the one with the tool calls) brought back its signed thinking blocks
/// ([`crate::chat::Message::thinking`]). Anthropic refuses a continuation with thinking on
/// whose final assistant turn does not start with a thinking block ("Expected `thinking` or
/// `redacted_thinking`, but found `tool_use`").
pub(crate) fn keeps_thinking(req: &ChatRequest) -> bool {
    !answers_tool_calls(req)
        || req
            .messages
            .iter()
            .rfind(|m| m.role == Role::Assistant)
            .is_some_and(|m| !m.thinking.is_empty())
}

/// Whether the request continues a tool-use loop: tool results answer the last assistant
/// turn's tool calls. With thinking on, Anthropic wants that assistant turn to start with its
/// signed thinking block.
fn answers_tool_calls(req: &ChatRequest) -> bool {
    let Some(last) = req.messages.iter().rposition(|m| m.role == Role::Assistant) else {
        return false;
    };
    !req.messages[last].tool_calls.is_empty()
        && req.messages[last + 1..]
            .iter()
            .any(|m| m.role == Role::Tool)
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

/// A prompt-cache breakpoint: `{"type":"ephemeral","ttl"?}` on a block or tool.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'static str>,
}

impl CacheControl {
    fn new(ttl: Option<CacheTtl>) -> Self {
        CacheControl {
            kind: "ephemeral",
            ttl: ttl.map(CacheTtl::as_str),
        }
    }
}

/// Anthropic caches at most this many breakpoints per request (more is a 400).
const MAX_BREAKPOINTS: usize = 4;

/// `system`: a string, or text blocks when a breakpoint sits in it.
#[derive(Serialize)]
#[serde(untagged)]
enum SystemOut<'a> {
    Text(String),
    Blocks(Vec<SystemBlock<'a>>),
}

#[derive(Serialize)]
struct SystemBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

#[derive(Serialize)]
struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

/// One message; a lone text block is sent as a plain string.
struct Turn<'a> {
    role: &'static str,
    blocks: Vec<Block<'a>>,
    /// Prompt-cache breakpoints: (index in `blocks`, marker). Empty on most requests.
    cache: Vec<(usize, CacheControl)>,
}

impl Serialize for Turn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Turn", 2)?;
        st.serialize_field("role", self.role)?;
        match self.blocks.as_slice() {
            _ if !self.cache.is_empty() => st.serialize_field("content", &MarkedBlocks(self))?,
            [Block::Text { text }] => st.serialize_field("content", text)?,
            blocks => st.serialize_field("content", blocks)?,
        }
        st.end()
    }
}

/// A turn's blocks with `cache_control` added to the marked ones (only built for turns that
/// carry a breakpoint).
struct MarkedBlocks<'t, 'a>(&'t Turn<'a>);

impl Serialize for MarkedBlocks<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.blocks.len()))?;
        for (b, block) in self.0.blocks.iter().enumerate() {
            match self.0.cache.iter().find(|(at, _)| *at == b) {
                None => seq.serialize_element(block)?,
                Some((_, c)) => {
                    let mut v = serde_json::to_value(block).map_err(S::Error::custom)?;
                    if let Value::Object(o) = &mut v {
                        o.insert(
                            "cache_control".into(),
                            serde_json::to_value(c).map_err(S::Error::custom)?,
                        );
                    }
                    seq.serialize_element(&v)?;
                }
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    /// A PDF as a base64 `document` block.
    Document {
        source: ImageSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    /// A signed thinking block sent back (first in its assistant turn).
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ResultContent<'a>>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResultContent<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

fn bad(message: impl Into<String>, param: &str) -> InvalidRequest {
    InvalidRequest::new(message, Some(param))
}

/// Percent-encodes one URI path segment the way the AWS SDKs do (RFC 3986 unreserved kept).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds the Messages request for `t.dialect` (Anthropic, Bedrock InvokeModel or Vertex).
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad(
            "Anthropic models return one choice per request; 'n' must be 1.",
            "n",
        ));
    }
    let json_tool = json_tool::plan(req)?;
    let mut dropped: Vec<String> = Vec::new();
    if req.seed.is_some() {
        dropped.push("seed".into());
    }
    if req.presence_penalty.is_some() {
        dropped.push("presence_penalty".into());
    }
    if req.frequency_penalty.is_some() {
        dropped.push("frequency_penalty".into());
    }
    // Thinking blocks go back only with thinking on (Anthropic refuses them in a final
    // assistant turn otherwise; earlier turns' are ignored either way).
    let thinking_on = req.reasoning.is_some() && keeps_thinking(req);
    // Only Anthropic's own API fetches image URLs; Bedrock and Claude on Vertex take base64
    // (the gateway fetches URLs for them first: src/media_fetch.rs).
    let messages = turns(
        req,
        t.dialect == Dialect::Anthropic,
        thinking_on,
        &mut dropped,
    )?;

    let tools: Vec<ToolOut<'_>> = req
        .tools
        .iter()
        .map(|tool| ToolOut {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: &tool.parameters,
            cache_control: None,
        })
        .collect();
    if req.tools.iter().any(|tool| tool.strict == Some(true)) {
        dropped.push("tools[].function.strict".into());
    }
    let parallel_off = (req.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = if tools.is_empty() {
        // `auto` / `none` / parallel_tool_calls without tools change nothing.
        if req.tool_choice == Some(ToolChoice::Required) {
            return Err(bad(
                "Invalid 'tool_choice': 'required' needs at least one tool in 'tools'.",
                "tool_choice",
            ));
        }
        None
    } else {
        match &req.tool_choice {
            Some(ToolChoice::None) => Some(ToolChoiceOut {
                kind: "none",
                name: None,
                disable_parallel_tool_use: None,
            }),
            Some(ToolChoice::Required) => Some(ToolChoiceOut {
                kind: "any",
                name: None,
                disable_parallel_tool_use: parallel_off,
            }),
            Some(ToolChoice::Named(name)) => Some(ToolChoiceOut {
                kind: "tool",
                name: Some(name),
                disable_parallel_tool_use: parallel_off,
            }),
            Some(ToolChoice::Auto) => Some(ToolChoiceOut {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: parallel_off,
            }),
            None => parallel_off.map(|_| ToolChoiceOut {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: parallel_off,
            }),
        }
    };
    let mut tools = tools;
    let mut tool_choice = tool_choice;
    dropped.extend(req.other_names().map(str::to_owned));
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut temperature = req.temperature.map(|x| x.clamp(0.0, 1.0));
    let (mut top_p, mut top_k, mut thinking) = (req.top_p, req.top_k, None);
    if let Some(r) = &req.reasoning {
        if let Some(c) = claude_thinking(r, req, temperature, &mut dropped)? {
            if top_k.is_some() {
                dropped.push("top_k".into());
            }
            (max_tokens, temperature, top_p, top_k) = (c.max_tokens, c.temperature, None, None);
            thinking = Some(c.thinking);
        }
    }
    if let Some(jt) = &json_tool {
        // Anthropic refuses a forced tool while thinking: then the JSON tool is offered (auto).
        add_json_tool(jt, thinking.is_some(), &mut tools, &mut tool_choice);
    }

    let mut messages = messages;
    let system = cache_breakpoints(req, &mut tools, &mut messages, &mut dropped);

    let stream = req.stream;
    let (path, answer, headers, model, version, stream_field) = match t.dialect {
        Dialect::BedrockAnthropic => (
            format!(
                "/model/{}/{}",
                encode_segment(t.upstream_model),
                if stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                }
            ),
            if stream {
                AnswerFormat::EventStream
            } else {
                AnswerFormat::Json
            },
            Vec::new(),
            None,
            Some(BEDROCK_VERSION),
            false,
        ),
        Dialect::VertexAnthropic => {
            let (Some(project), Some(location)) = (
                t.project.filter(|p| !p.is_empty()),
                t.location.filter(|l| !l.is_empty()),
            ) else {
                return Err(InvalidRequest::new(
                    "Gateway configuration error: this Claude-on-Vertex upstream needs a Vertex `project` and `location`.",
                    None,
                ));
            };
            (
                format!(
                    "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{}:{}",
                    t.upstream_model,
                    if stream {
                        "streamRawPredict"
                    } else {
                        "rawPredict"
                    }
                ),
                if stream {
                    AnswerFormat::Sse
                } else {
                    AnswerFormat::Json
                },
                Vec::new(),
                None,
                Some(VERTEX_VERSION),
                stream,
            )
        }
        _ => (
            "/v1/messages".to_owned(),
            if stream {
                AnswerFormat::Sse
            } else {
                AnswerFormat::Json
            },
            vec![(
                "anthropic-version",
                t.api_version
                    .filter(|v| !v.is_empty())
                    .unwrap_or(ANTHROPIC_VERSION)
                    .to_owned(),
            )],
            Some(t.upstream_model),
            None,
            stream,
        ),
    };

    let body = Body {
        anthropic_version: version,
        model,
        max_tokens,
        system,
        messages,
        temperature,
        top_p,
        top_k,
        stop_sequences: &req.stop,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
        thinking,
        stream: stream_field,
    };
    Ok(UpstreamRequest {
        path,
        body: serde_json::to_vec(&body).expect("the request body serializes"),
        headers,
        answer,
        dropped,
    })
}

/// Places the client's prompt-cache breakpoints ([`ChatRequest::cache`]) on the tools and the
/// system blocks (the turns' own were placed by [`turns`]) and returns `system`: text blocks
/// when a breakpoint sits in it, else the usual string. Anthropic takes at most
/// [`MAX_BREAKPOINTS`] and refuses more; beyond that the last four in prompt order (tools,
/// system, messages) are kept, since the longest cached prefixes save the most, and
/// `cache_control` is named as dropped.
fn cache_breakpoints<'a>(
    req: &'a ChatRequest,
    tools: &mut [ToolOut<'a>],
    turns: &mut [Turn<'a>],
    dropped: &mut Vec<String>,
) -> Option<SystemOut<'a>> {
    let system_cached = req.cache.iter().any(|c| match c.at {
        CacheAt::Part { message, .. } | CacheAt::Message(message) => req
            .messages
            .get(message)
            .is_some_and(|m| matches!(m.role, Role::System | Role::Developer)),
        CacheAt::Tool(_) => false,
    });
    if req.cache.is_empty() {
        return req
            .system_text()
            .filter(|s| !s.is_empty())
            .map(SystemOut::Text);
    }
    for (k, tool) in tools.iter_mut().enumerate().take(req.tools.len()) {
        tool.cache_control = req.cache_at(CacheAt::Tool(k)).map(CacheControl::new);
    }
    let mut system = None;
    if system_cached {
        let mut blocks: Vec<SystemBlock<'a>> = Vec::new();
        for (i, m) in req.messages.iter().enumerate() {
            if !matches!(m.role, Role::System | Role::Developer) {
                continue;
            }
            let last = m.content.len().saturating_sub(1);
            for (j, p) in m.content.iter().enumerate() {
                let Part::Text(text) = p else { continue };
                let mut ttl = req.cache_at(CacheAt::Part {
                    message: i,
                    part: j,
                });
                if j == last {
                    ttl = ttl.or(req.cache_at(CacheAt::Message(i)));
                }
                if text.is_empty() {
                    // Anthropic refuses empty text blocks: the marker moves to the block before.
                    if let (Some(t), Some(prev)) = (ttl, blocks.last_mut()) {
                        prev.cache_control = Some(CacheControl::new(t));
                    }
                    continue;
                }
                blocks.push(SystemBlock {
                    kind: "text",
                    text,
                    cache_control: ttl.map(CacheControl::new),
                });
            }
        }
        if !blocks.is_empty() {
            system = Some(SystemOut::Blocks(blocks));
        }
    } else {
        system = req
            .system_text()
            .filter(|s| !s.is_empty())
            .map(SystemOut::Text);
    }
    // Over the limit: drop the earliest breakpoints.
    let system_marks = match &system {
        Some(SystemOut::Blocks(b)) => b.iter().filter(|b| b.cache_control.is_some()).count(),
        _ => 0,
    };
    let tool_marks = tools.iter().filter(|t| t.cache_control.is_some()).count();
    let turn_marks: usize = turns.iter().map(|t| t.cache.len()).sum();
    let mut excess = (tool_marks + system_marks + turn_marks).saturating_sub(MAX_BREAKPOINTS);
    if excess > 0 {
        dropped.push("cache_control".into());
    }
    for t in tools.iter_mut().filter(|t| t.cache_control.is_some()) {
        if excess == 0 {
            break;
        }
        t.cache_control = None;
        excess -= 1;
    }
    if let Some(SystemOut::Blocks(blocks)) = &mut system {
        for b in blocks.iter_mut().filter(|b| b.cache_control.is_some()) {
            if excess == 0 {
                break;
            }
            b.cache_control = None;
            excess -= 1;
        }
    }
    for t in turns.iter_mut() {
        let n = excess.min(t.cache.len());
        // A turn's marks are in block order once sorted by index.
        t.cache.sort_by_key(|(b, _)| *b);
        t.cache.drain(..n);
        excess -= n;
    }
    system
}

/// Whether part `p` of a message becomes a block of its own (empty text does not; a final
/// assistant message's text is trimmed first).
fn emits_block(p: &Part, trim: bool) -> bool {
    match p {
        Part::Text(t) if trim => !t.trim_end().is_empty(),
        Part::Text(t) => !t.is_empty(),
        _ => true,
    }
}

/// The breakpoints of message `i` as (block index within its `blocks`, marker): after part
/// `j` → the last block emitted for parts up to `j` (after the `lead` thinking blocks);
/// after the message → its last block.
/// A marker with no block at or before it is named dropped.
fn message_marks(
    req: &ChatRequest,
    i: usize,
    blocks: usize,
    lead: usize,
    dropped: &mut Vec<String>,
) -> Vec<(usize, CacheControl)> {
    let mut out = Vec::new();
    if req.cache.is_empty() {
        return out;
    }
    let m = &req.messages[i];
    let trim = m.role == Role::Assistant && i + 1 == req.messages.len();
    for c in &req.cache {
        let block = match c.at {
            CacheAt::Message(k) if k == i => blocks.checked_sub(1),
            CacheAt::Part { message, part } if message == i => {
                if m.role == Role::Tool {
                    blocks.checked_sub(1)
                } else {
                    let n = m
                        .content
                        .iter()
                        .take(part.saturating_add(1))
                        .filter(|p| emits_block(p, trim))
                        .count();
                    // Thinking blocks come first and take no marker.
                    n.checked_sub(1).map(|b| b + lead)
                }
            }
            _ => continue,
        };
        match block {
            Some(b) if !out.iter().any(|(at, _)| *at == b) => {
                out.push((b, CacheControl::new(c.ttl)))
            }
            Some(_) => {}
            None => {
                if !dropped.iter().any(|d| d == "cache_control") {
                    dropped.push("cache_control".into());
                }
            }
        }
    }
    out
}

/// Adds the `response_format` tool and forces it (see [`json_tool`]). With caller tools and
/// `any`, parallel calls are turned off so the model answers with exactly one tool call.
/// With extended thinking Anthropic refuses `any` and `tool` choices ("Thinking may not be
/// enabled when tool_choice forces tool use"): then the choice is `auto` and the tool's
/// description is what steers the model to it.
fn add_json_tool<'a>(
    jt: &'a JsonTool,
    thinking: bool,
    tools: &mut Vec<ToolOut<'a>>,
    tool_choice: &mut Option<ToolChoiceOut<'a>>,
) {
    tools.push(ToolOut {
        name: JSON_TOOL,
        description: Some(&jt.description),
        input_schema: &jt.schema,
        cache_control: None,
    });
    *tool_choice = Some(match jt.force {
        _ if thinking => ToolChoiceOut {
            kind: "auto",
            name: None,
            disable_parallel_tool_use: None,
        },
        Force::Named => ToolChoiceOut {
            kind: "tool",
            name: Some(JSON_TOOL),
            disable_parallel_tool_use: None,
        },
        Force::Any => ToolChoiceOut {
            kind: "any",
            name: None,
            disable_parallel_tool_use: Some(true),
        },
    });
}

/// The conversation as Anthropic turns (system messages are left to `ChatRequest::system_text`).
fn turns<'a>(
    req: &'a ChatRequest,
    urls: bool,
    thinking: bool,
    dropped: &mut Vec<String>,
) -> Result<Vec<Turn<'a>>, InvalidRequest> {
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(req.messages.len());
    let mut names = false;
    let mut details = false;
    let last = req.messages.len().saturating_sub(1);
    for (i, m) in req.messages.iter().enumerate() {
        names |= m.name.is_some() && m.role != Role::Tool;
        let mut blocks = Vec::with_capacity(m.content.len() + m.tool_calls.len());
        let role = match m.role {
            Role::System | Role::Developer => {
                if let Some(j) = m.content.iter().position(|p| !matches!(p, Part::Text(_))) {
                    return Err(bad(
                        "Anthropic's system prompt takes text only; move images and files to a user message.",
                        &format!("messages[{i}].content[{j}]"),
                    ));
                }
                continue;
            }
            Role::User => {
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(Block::Text { text: t }),
                        Part::Image { url, detail } => {
                            details |= detail.is_some();
                            blocks.push(image(url, urls, i, j)?);
                        }
                        Part::File { data, mime, name } => {
                            blocks.push(document(data, mime, name.as_deref(), i, j)?)
                        }
                    }
                }
                "user"
            }
            Role::Assistant => {
                if thinking {
                    for b in &m.thinking {
                        blocks.push(match b {
                            ThinkingBlock::Thinking {
                                thinking,
                                signature,
                            } => Block::Thinking {
                                thinking,
                                signature,
                            },
                            ThinkingBlock::Redacted { data } => Block::RedactedThinking { data },
                        });
                    }
                }
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(t) => {
                            // A final assistant message is a prefill: Anthropic rejects
                            // trailing whitespace there.
                            let t = if i == last { t.trim_end() } else { t.as_str() };
                            if !t.is_empty() {
                                blocks.push(Block::Text { text: t });
                            }
                        }
                        Part::Image { .. } | Part::File { .. } => {
                            return Err(bad(
                                "Anthropic accepts images and documents in user messages only.",
                                &format!("messages[{i}].content[{j}]"),
                            ))
                        }
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    blocks.push(Block::ToolUse {
                        id: host_tool_id(&c.id),
                        name: &c.name,
                        input: arguments(&c.arguments, i, j)?,
                    });
                }
                "assistant"
            }
            Role::Tool => {
                let content = if m.content.iter().any(|p| !matches!(p, Part::Text(_))) {
                    let mut inner = Vec::with_capacity(m.content.len());
                    for (j, p) in m.content.iter().enumerate() {
                        match p {
                            Part::Text(t) if t.is_empty() => {}
                            Part::Text(t) => inner.push(Block::Text { text: t }),
                            Part::Image { url, detail } => {
                                details |= detail.is_some();
                                inner.push(image(url, urls, i, j)?);
                            }
                            Part::File { data, mime, name } => {
                                inner.push(document(data, mime, name.as_deref(), i, j)?)
                            }
                        }
                    }
                    Some(ResultContent::Blocks(inner))
                } else {
                    match m.content.as_slice() {
                        [Part::Text(t)] if t.is_empty() => None,
                        [Part::Text(t)] => Some(ResultContent::Text(Cow::Borrowed(t))),
                        _ => Some(m.text())
                            .filter(|t| !t.is_empty())
                            .map(|t| ResultContent::Text(Cow::Owned(t))),
                    }
                };
                blocks.push(Block::ToolResult {
                    tool_use_id: host_tool_id(m.tool_call_id.as_deref().unwrap_or_default()),
                    content,
                });
                "user"
            }
        };
        let lead = blocks
            .iter()
            .take_while(|b| matches!(b, Block::Thinking { .. } | Block::RedactedThinking { .. }))
            .count();
        let cache = message_marks(req, i, blocks.len(), lead, dropped);
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(prev) if prev.role == role => {
                let offset = prev.blocks.len();
                prev.cache
                    .extend(cache.into_iter().map(|(b, c)| (b + offset, c)));
                prev.blocks.extend(blocks)
            }
            _ => turns.push(Turn {
                role,
                blocks,
                cache,
            }),
        }
    }
    // Anthropic wants a user turn's tool results before anything else in it.
    for t in &mut turns {
        if t.role == "user" && t.blocks.len() > 1 {
            if t.cache.is_empty() {
                t.blocks
                    .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
            } else {
                // Move the markers with their blocks.
                let mut order: Vec<usize> = (0..t.blocks.len()).collect();
                order.sort_by_key(|&b| !matches!(t.blocks[b], Block::ToolResult { .. }));
                for (b, _) in &mut t.cache {
                    *b = order.iter().position(|&o| o == *b).unwrap_or(*b);
                }
                t.blocks
                    .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
            }
        }
    }
    match turns.first() {
        None => Err(bad(
            "Anthropic needs at least one user message besides system messages.",
            "messages",
        )),
        Some(t) if t.role != "user" => Err(bad(
            "Anthropic requires the conversation to start with a user message (after any system messages).",
            "messages",
        )),
        Some(_) => {
            if names {
                dropped.push("messages[].name".into());
            }
            if details {
                dropped.push("messages[].content[].image_url.detail".into());
            }
            Ok(turns)
        }
    }
}

fn image<'a>(url: &'a str, urls: bool, i: usize, j: usize) -> Result<Block<'a>, InvalidRequest> {
    let param = || format!("messages[{i}].content[{j}].image_url");
    if let Some((media_type, data)) = data_url(url) {
        if !IMAGE_TYPES.contains(&media_type) {
            return Err(bad(
                format!("Anthropic accepts image/jpeg, image/png, image/gif and image/webp images, not '{media_type}'."),
                &param(),
            ));
        }
        return Ok(Block::Image {
            source: ImageSource::Base64 { media_type, data },
        });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        if !urls {
            return Err(bad(
                "Claude on Bedrock and on Vertex takes images as base64 data only; send a data: URL (data:image/png;base64,...).",
                &param(),
            ));
        }
        return Ok(Block::Image {
            source: ImageSource::Url { url },
        });
    }
    Err(bad(
        "Invalid image URL: expected an http(s) URL or a data:<type>;base64,<data> URL.",
        &param(),
    ))
}

/// A file part as Anthropic's `document` block: PDFs only (base64 source, `application/pdf`).
fn document<'a>(
    data: &'a str,
    mime: &'a str,
    title: Option<&'a str>,
    i: usize,
    j: usize,
) -> Result<Block<'a>, InvalidRequest> {
    if mime != "application/pdf" {
        return Err(bad(
            format!("Claude accepts application/pdf documents as base64 data, not '{mime}'."),
            &format!("messages[{i}].content[{j}].file"),
        ));
    }
    Ok(Block::Document {
        source: ImageSource::Base64 {
            media_type: mime,
            data,
        },
        title,
    })
}

/// A tool call's arguments string as the `input` object Anthropic wants.
fn arguments(args: &str, i: usize, j: usize) -> Result<Value, InvalidRequest> {
    if args.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad(
            "Tool call arguments must be a JSON object for this provider.",
            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// `Option<Cow<str>>` that borrows from the input when it can (serde's `Option<Cow>` never does).
pub(crate) fn opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct UsageIn {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// The writes by cache lifetime (`ephemeral_5m_input_tokens`, `ephemeral_1h_input_tokens`).
    #[serde(default)]
    cache_creation: Option<CacheCreationIn>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct CacheCreationIn {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Token counts as Anthropic reports them (the latest value of each wins: stream counts are
/// cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tokens {
    pub(crate) input: Option<u64>,
    pub(crate) output: Option<u64>,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
}

impl Tokens {
    pub(crate) fn absorb(&mut self, u: &UsageIn) {
        if u.input_tokens.is_some() {
            self.input = u.input_tokens;
        }
        if u.output_tokens.is_some() {
            self.output = u.output_tokens;
        }
        if let Some(r) = u.cache_read_input_tokens {
            self.cache_read = r;
        }
        if let Some(w) = u.cache_creation_input_tokens {
            self.cache_write = w;
        }
        if let Some(w) = u.cache_creation.and_then(|c| c.ephemeral_1h_input_tokens) {
            self.cache_write_1h = w;
        }
    }

    pub(crate) fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        let prompt = self.input.unwrap_or(0) + self.cache_read + self.cache_write;
        let mut u = Usage::new(prompt, self.output.unwrap_or(0));
        u.cached_tokens = self.cache_read;
        u.cache_write_tokens = self.cache_write;
        u.cache_write_1h_tokens = self.cache_write_1h.min(self.cache_write);
        Some(u)
    }
}

#[derive(Deserialize)]
struct ErrorIn<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_cow")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MessageBody<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_cow")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Vec<AnswerBlock<'a>>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(default, borrow)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnswerBlock<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(borrow, default)]
        thinking: Cow<'a, str>,
        #[serde(borrow, default)]
        signature: Cow<'a, str>,
    },
    RedactedThinking {
        #[serde(borrow, default)]
        data: Cow<'a, str>,
    },
    /// Server tool blocks and anything newer.
    #[serde(other)]
    Other,
}

/// PROTOCOLS §8.1.
fn finish_reason(stop: &str) -> FinishReason {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        "stop_sequence" => FinishReason::StopSequence,
        // end_turn, pause_turn and anything newer
        _ => FinishReason::Stop,
    }
}

/// Reads a complete Messages answer (the same shape on all three platforms).
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    let m: MessageBody<'_> = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable Anthropic message: {e}")))?;
    if m.kind.as_deref() == Some("error") {
        let msg = m.error.and_then(|e| e.message).unwrap_or_default();
        return Err(BadAnswer(format!("Anthropic answered an error: {msg}")));
    }
    let blocks = m
        .content
        .ok_or_else(|| BadAnswer("Anthropic message without `content`".into()))?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json: Option<String> = None;
    for b in blocks {
        match b {
            AnswerBlock::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
            AnswerBlock::Thinking {
                thinking,
                signature,
            } => {
                reasoning
                    .get_or_insert_with(String::new)
                    .push_str(&thinking);
                if !signature.is_empty() {
                    thinking_blocks.push(ThinkingBlock::Thinking {
                        thinking: thinking.into_owned(),
                        signature: signature.into_owned(),
                    });
                }
            }
            AnswerBlock::RedactedThinking { data } if !data.is_empty() => {
                thinking_blocks.push(ThinkingBlock::Redacted {
                    data: data.into_owned(),
                })
            }
            AnswerBlock::ToolUse { name, input, .. } if name == JSON_TOOL => {
                json.get_or_insert_with(String::new)
                    .push_str(&json_tool::answer_text(&input));
            }
            AnswerBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id: id.into_owned(),
                name: name.into_owned(),
                arguments: if input.is_null() {
                    "{}".to_owned()
                } else {
                    input.to_string()
                },
            }),
            AnswerBlock::RedactedThinking { .. } | AnswerBlock::Other => {}
        }
    }
    let text_is_json = json.is_some();
    if text_is_json {
        // The structured answer is the content (any text the model put around it is not JSON).
        text = json;
    }
    if text.is_none() && tool_calls.is_empty() {
        text = Some(String::new());
    }
    let mut finish = m
        .stop_reason
        .as_deref()
        .map_or(FinishReason::Stop, finish_reason);
    if finish == FinishReason::ToolCalls && tool_calls.is_empty() && text_is_json {
        finish = FinishReason::Stop; // only the response_format tool was called
    }
    let mut tokens = Tokens::default();
    if let Some(u) = &m.usage {
        tokens.absorb(u);
    }
    Ok(Completion {
        id: m.id.map(Cow::into_owned),
        choices: vec![Choice {
            content: text,
            reasoning,
            thinking_blocks,
            tool_calls,
            finish_reason: Some(finish),
        }],
        usage: tokens.usage(),
    })
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// One Anthropic stream event; every kind's fields in one flat struct (cheaper than a tagged
/// enum, which buffers the event first).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    message: Option<StartMessage<'a>>,
    #[serde(default, borrow)]
    content_block: Option<StartBlock<'a>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(default, borrow)]
    error: Option<ErrorIn<'a>>,
    /// Bedrock InvokeModel streams add this to the final `message_stop`.
    #[serde(default, rename = "amazon-bedrock-invocationMetrics")]
    metrics: Option<Metrics>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct StartBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    thinking: Option<Cow<'a, str>>,
    /// `redacted_thinking` blocks arrive whole, `data` included.
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    data: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_cow")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Metrics {
    #[serde(rename = "inputTokenCount", default)]
    input: Option<u64>,
    #[serde(rename = "outputTokenCount", default)]
    output: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeltaKind {
    Text,
    InputJson,
    Thinking,
}

/// Reads the events that make up nearly all of a stream without a full parse: a
/// `content_block_delta` exactly as Anthropic serializes it (compact, fields in this order),
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}`
/// (likewise `input_json_delta`/`partial_json`, `thinking_delta`/`thinking`). Anything else —
/// other order, spaces, extra fields — returns None and takes the full typed parse.
fn fast_delta(json: &[u8]) -> Option<(u64, DeltaKind, Cow<'_, str>)> {
    const PREFIX: &[u8] = br#"{"type":"content_block_delta","index":"#;
    const KINDS: [(&[u8], DeltaKind); 3] = [
        (br#"text_delta","text":""#, DeltaKind::Text),
        (
            br#"input_json_delta","partial_json":""#,
            DeltaKind::InputJson,
        ),
        (br#"thinking_delta","thinking":""#, DeltaKind::Thinking),
    ];
    let rest = json.strip_prefix(PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let index = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","delta":{"type":""#)?;
    let (kind, s) = KINDS
        .iter()
        .find_map(|(p, k)| rest.strip_prefix(*p).map(|s| (*k, s)))?;
    // `s` starts just after the string's opening quote: find its closing quote.
    let mut i = 0;
    let mut escaped = false;
    let end = loop {
        let p = i + memchr::memchr2(b'"', b'\\', &s[i..])?;
        if s[p] == b'"' {
            break p;
        }
        escaped = true;
        i = p + 2;
        if i > s.len() {
            return None;
        }
    };
    if s[end + 1..].trim_ascii_end() != b"}}" {
        return None;
    }
    let text = if escaped {
        let open = json.len() - s.len() - 1;
        Cow::Owned(serde_json::from_slice::<String>(&json[open..open + end + 2]).ok()?)
    } else {
        let raw = std::str::from_utf8(&s[..end]).ok()?;
        if raw.bytes().any(|b| b < 0x20) {
            return None; // not valid JSON; let the full parse decide
        }
        Cow::Borrowed(raw)
    };
    Some((index, kind, text))
}

/// A `tool_use` block of the stream: its Anthropic block index, and whether any argument
/// bytes were sent for it. Its position in [`Events::tools`] is the OpenAI tool call index.
struct ToolBlock {
    index: u64,
    has_args: bool,
}

/// The Anthropic event state machine shared by the SSE and eventstream framings.
struct Events {
    writer: ChunkWriter,
    client_model: String,
    fallback_id: String,
    created: u64,
    legacy: FrontDoor,
    include_usage: bool,
    tools: Vec<ToolBlock>,
    /// The `response_format` tool's block (index, whether input was sent): its input
    /// streams as content.
    json_block: Option<(u64, bool)>,
    tokens: Tokens,
    finish: Option<FinishReason>,
    end: Option<StreamEnd>,
}

impl Events {
    fn new(ctx: &ResponseCtx<'_>) -> Self {
        Events {
            writer: ChunkWriter::new(ctx),
            client_model: ctx.client_model.to_owned(),
            fallback_id: ctx.fallback_id.to_owned(),
            created: ctx.created,
            legacy: ctx.front,
            include_usage: ctx.include_usage,
            tools: Vec::new(),
            json_block: None,
            tokens: Tokens::default(),
            finish: None,
            end: None,
        }
    }

    fn tool(&mut self, index: Option<u64>) -> Option<(usize, &mut ToolBlock)> {
        let index = index?;
        self.tools
            .iter_mut()
            .enumerate()
            .rev()
            .find(|(_, t)| t.index == index)
    }

    /// One event's JSON (an SSE `data:` payload or a Bedrock chunk's decoded bytes).
    fn on_json(&mut self, json: &[u8], out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        if let Some((index, kind, piece)) = fast_delta(json) {
            self.writer.start(out);
            self.on_delta(Some(index), kind, &piece, out);
            return;
        }
        match serde_json::from_slice::<Event<'_>>(json) {
            Ok(ev) => self.on_event(ev, out),
            Err(_) => self.truncate(out),
        }
    }

    /// A `content_block_delta` the client sees.
    fn on_delta(&mut self, index: Option<u64>, kind: DeltaKind, piece: &str, out: &mut Vec<u8>) {
        match kind {
            DeltaKind::Text => self.writer.content(out, piece),
            DeltaKind::Thinking => self.writer.reasoning(out, piece),
            DeltaKind::InputJson => {
                if piece.is_empty() {
                    return;
                }
                if self.json_piece(index, piece, out) {
                    return;
                }
                if let Some((k, tool)) = self.tool(index) {
                    tool.has_args = true;
                    self.writer.tool_call_arguments(out, k, piece);
                }
            }
        }
    }

    /// Input of the `response_format` tool's block → content; false for any other block.
    fn json_piece(&mut self, index: Option<u64>, piece: &str, out: &mut Vec<u8>) -> bool {
        match &mut self.json_block {
            Some((i, sent)) if Some(*i) == index => {
                *sent = true;
                self.writer.content(out, piece);
                true
            }
            _ => false,
        }
    }

    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        match ev.kind.as_ref() {
            "message_start" => {
                if let Some(m) = &ev.message {
                    if !self.writer.started() {
                        let ctx = ResponseCtx {
                            client_model: &self.client_model,
                            created: self.created,
                            fallback_id: &self.fallback_id,
                            front: self.legacy,
                            include_usage: self.include_usage,
                            echo: "",
                        };
                        self.writer.set_id(&ctx, m.id.as_deref());
                    }
                    if let Some(model) = m.model.as_deref() {
                        self.writer.provider_model(model);
                    }
                    if let Some(u) = &m.usage {
                        self.tokens.absorb(u);
                    }
                }
                self.writer.start(out);
            }
            "content_block_start" => {
                self.writer.start(out);
                let Some(b) = ev.content_block else { return };
                match b.kind.as_ref() {
                    "tool_use" if b.name.as_deref() == Some(JSON_TOOL) => {
                        self.json_block = Some((ev.index.unwrap_or(u64::MAX), false));
                        if let Some(input) = b
                            .input
                            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            self.json_piece(ev.index, &input.to_string(), out);
                        }
                    }
                    "tool_use" => {
                        let k = self.tools.len();
                        self.tools.push(ToolBlock {
                            index: ev.index.unwrap_or(u64::MAX),
                            has_args: false,
                        });
                        self.writer.tool_call_start(
                            out,
                            k,
                            b.id.as_deref().unwrap_or_default(),
                            b.name.as_deref().unwrap_or_default(),
                        );
                        // The API starts with `input: {}` and streams the JSON; take a
                        // complete input given up front as the arguments.
                        if let Some(input) = b
                            .input
                            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            self.writer.tool_call_arguments(out, k, &input.to_string());
                            self.tools[k].has_args = true;
                        }
                    }
                    "text" => {
                        if let Some(t) = &b.text {
                            self.writer.content(out, t);
                        }
                    }
                    "thinking" => {
                        if let Some(t) = &b.thinking {
                            self.writer.reasoning(out, t);
                        }
                    }
                    "redacted_thinking" => {
                        if let Some(d) = &b.data {
                            self.writer.redacted_thinking(out, d);
                        }
                    }
                    _ => {} // server tools: nothing for the client
                }
            }
            "content_block_delta" => {
                self.writer.start(out);
                let Some(d) = ev.delta else { return };
                let (kind, piece) = match d.kind.as_deref() {
                    Some("text_delta") => (DeltaKind::Text, d.text),
                    Some("input_json_delta") => (DeltaKind::InputJson, d.partial_json),
                    Some("thinking_delta") => (DeltaKind::Thinking, d.thinking),
                    Some("signature_delta") => {
                        if let Some(sig) = &d.signature {
                            self.writer.reasoning_signature(out, sig);
                        }
                        return;
                    }
                    _ => return, // citations_delta, …
                };
                if let Some(piece) = piece {
                    self.on_delta(ev.index, kind, &piece, out);
                }
            }
            "content_block_stop" => {
                if matches!(self.json_block, Some((i, false)) if Some(i) == ev.index) {
                    self.json_piece(ev.index, "{}", out);
                }
                // A tool called without arguments: OpenAI clients expect `{}`, not "".
                if let Some((k, tool)) = self.tool(ev.index) {
                    if !tool.has_args {
                        tool.has_args = true;
                        self.writer.tool_call_arguments(out, k, "{}");
                    }
                }
            }
            "message_delta" => {
                self.writer.start(out);
                if let Some(u) = &ev.usage {
                    self.tokens.absorb(u);
                }
                if let Some(stop) = ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    let mut f = finish_reason(stop);
                    if f == FinishReason::ToolCalls
                        && self.tools.is_empty()
                        && self.json_block.is_some()
                    {
                        f = FinishReason::Stop; // only the response_format tool was called
                    }
                    self.finish = Some(f);
                    self.writer.finish(out, f);
                }
            }
            "message_stop" => {
                if let Some(m) = &ev.metrics {
                    if self.tokens.input.is_none() {
                        self.tokens.input = m.input;
                    }
                    if self.tokens.output.is_none() {
                        self.tokens.output = m.output;
                    }
                }
                self.writer
                    .finish(out, self.finish.unwrap_or(FinishReason::Stop));
                if let Some(u) = self.tokens.usage() {
                    self.writer.usage(out, u);
                }
                self.writer.done(out);
                self.end = Some(StreamEnd::Complete);
            }
            "error" => {
                let (kind, message) = match &ev.error {
                    Some(e) => (e.kind.as_deref(), e.message.as_deref()),
                    None => (None, None),
                };
                let message = message.unwrap_or("The provider reported an error mid-stream.");
                let status = status_for_type(kind.unwrap_or("api_error"));
                let (status, code) = classify(status, kind, message);
                self.provider_error(out, message, status, code);
            }
            _ => {} // ping, and event types added later
        }
    }

    fn provider_error(
        &mut self,
        out: &mut Vec<u8>,
        message: &str,
        status: u16,
        code: Option<&str>,
    ) {
        self.writer
            .error(out, message, error_type_for_status(status), code);
        self.end = Some(StreamEnd::ProviderError(message.to_owned()));
    }

    fn truncate(&mut self, out: &mut Vec<u8>) {
        if self.end.is_none() {
            self.writer.truncated(out);
            self.end = Some(StreamEnd::Truncated);
        }
    }

    /// The provider's stream ended.
    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        self.truncate(out);
        self.end.clone().unwrap_or(StreamEnd::Truncated)
    }
}

/// Anthropic (and Claude on Vertex) SSE: `event: <type>` / `data: <event JSON>`.
struct SseStream {
    framer: SseFramer,
    events: Events,
}

impl SseStream {
    fn on_raw(events: &mut Events, raw: &[u8], out: &mut Vec<u8>) {
        if events.end.is_some() {
            return;
        }
        let ev = parse_event(raw);
        if !ev.has_data || ev.data.iter().all(u8::is_ascii_whitespace) {
            return; // comments, keep-alives
        }
        if ev.event == Some(&b"error"[..]) && serde_json::from_slice::<Event<'_>>(&ev.data).is_err()
        {
            let message = String::from_utf8_lossy(&ev.data).into_owned();
            events.provider_error(out, &message, 500, None);
            return;
        }
        events.on_json(&ev.data, out);
    }
}

impl StreamTranslator for SseStream {
    fn ended(&self) -> bool {
        self.events.end.is_some()
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.events.writer.final_response()
    }

    fn answer(&mut self) -> Option<&mut crate::translate::StreamAnswer> {
        Some(self.events.writer.answer())
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.events.end.is_some() {
            return;
        }
        let events = &mut self.events;
        self.framer
            .feed(chunk, |raw| Self::on_raw(events, raw, out));
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let rest = self.framer.take_rest();
        if !rest.is_empty() {
            // A last event without its blank line: use it if it is complete JSON.
            Self::on_raw(&mut self.events, &rest, out);
        }
        self.events.finish(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.events.tokens.usage()
    }
}

/// Bedrock InvokeModelWithResponseStream: eventstream `chunk` frames around Anthropic events.
struct EventStream {
    decoder: Decoder,
    events: Events,
    /// Decoded chunk bytes, reused from event to event.
    scratch: Vec<u8>,
}

impl EventStream {
    fn on_frame(events: &mut Events, scratch: &mut Vec<u8>, frame: &Frame<'_>, out: &mut Vec<u8>) {
        if events.end.is_some() {
            return;
        }
        match frame.message_type() {
            Some("event") => {
                if frame.event_type() != Some("chunk") {
                    return;
                }
                match decode_chunk(frame.payload, scratch) {
                    Some(json) => events.on_json(&json, out),
                    None => events.truncate(out),
                }
            }
            Some("exception") => {
                let kind = frame.str_header(":exception-type").unwrap_or("exception");
                #[derive(Deserialize)]
                struct Payload<'a> {
                    #[serde(default, borrow, deserialize_with = "opt_cow")]
                    message: Option<Cow<'a, str>>,
                    #[serde(rename = "Message", default, borrow, deserialize_with = "opt_cow")]
                    message_upper: Option<Cow<'a, str>>,
                }
                let payload = serde_json::from_slice::<Payload<'_>>(frame.payload).ok();
                let message = payload
                    .as_ref()
                    .and_then(|p| p.message.as_deref().or(p.message_upper.as_deref()))
                    .unwrap_or(kind)
                    .to_owned();
                let status = bedrock_exception_status(kind);
                let code = if status == 429 {
                    "rate_limit_exceeded"
                } else {
                    kind
                };
                events.provider_error(out, &message, status, Some(code));
            }
            Some("error") => {
                let code = frame.str_header(":error-code").unwrap_or("error");
                let message = frame
                    .str_header(":error-message")
                    .unwrap_or("The provider reported an error mid-stream.")
                    .to_owned();
                let status = bedrock_exception_status(code);
                events.provider_error(out, &message, status, Some(code));
            }
            _ => {}
        }
    }
}

impl StreamTranslator for EventStream {
    fn ended(&self) -> bool {
        self.events.end.is_some()
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.events.writer.final_response()
    }

    fn answer(&mut self) -> Option<&mut crate::translate::StreamAnswer> {
        Some(self.events.writer.answer())
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.events.end.is_some() {
            return;
        }
        let (events, scratch) = (&mut self.events, &mut self.scratch);
        let decoded = self
            .decoder
            .feed(chunk, |frame| Self::on_frame(events, scratch, frame, out));
        if decoded.is_err() {
            self.events.truncate(out); // bad checksum or length: nothing after it is trustworthy
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        self.events.finish(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.events.tokens.usage()
    }
}

/// Translator for an Anthropic or Claude-on-Vertex SSE stream.
pub fn sse_stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(SseStream {
        framer: SseFramer::new(),
        events: Events::new(ctx),
    })
}

/// Translator for a Bedrock InvokeModelWithResponseStream (Claude) eventstream.
pub fn eventstream_stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(EventStream {
        decoder: Decoder::new(),
        events: Events::new(ctx),
        scratch: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The HTTP status Anthropic uses for an error type (PROTOCOLS §2.4), for mid-stream errors.
fn status_for_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500, // api_error and anything newer
    }
}

/// The status of a Bedrock stream exception (`:exception-type`, lowerCamel; PROTOCOLS §3.6).
pub(crate) fn bedrock_exception_status(kind: &str) -> u16 {
    let k = kind.to_ascii_lowercase();
    match k.trim_end_matches("exception") {
        "throttling" | "modelnotready" | "servicequotaexceeded" => 429,
        "validation" => 400,
        "accessdenied" => 403,
        "resourcenotfound" => 404,
        "modeltimeout" => 504,
        "modelstreamerror" | "modelerror" => 502,
        "serviceunavailable" => 503,
        _ => 500,
    }
}

/// Whether an error message says the prompt does not fit the context window.
fn context_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("exceed context limit")
        || m.contains("context window")
        || m.contains("context length")
}

/// The client status and `code` for a provider status, error type and message (PROTOCOLS §8.2).
fn classify<'k>(status: u16, kind: Option<&'k str>, message: &str) -> (u16, Option<&'k str>) {
    match status {
        400 if context_too_long(message) => (400, Some("context_length_exceeded")),
        401 | 402 => (502, kind),
        404 if message.to_ascii_lowercase().contains("model") => (404, Some("model_not_found")),
        408 | 504 => (504, kind),
        429 => (429, Some("rate_limit_exceeded")),
        503 | 529 => (503, kind),
        s if s >= 500 => (500, kind),
        s => (s, kind),
    }
}

/// Maps an Anthropic error response (`{"type":"error","error":{"type","message"}}`) to the
/// client's OpenAI error.
pub fn error(status: u16, body: &[u8]) -> ErrorReply {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(default, borrow)]
        error: Option<ErrorIn<'a>>,
        /// Bedrock's own shape, when no `x-amzn-errortype` header came with it.
        #[serde(default, borrow, deserialize_with = "opt_cow")]
        message: Option<Cow<'a, str>>,
    }
    let parsed = serde_json::from_slice::<Envelope<'_>>(body).ok();
    let (kind, message) = match &parsed {
        Some(Envelope { error: Some(e), .. }) => (e.kind.as_deref(), e.message.as_deref()),
        Some(Envelope {
            message: Some(m), ..
        }) => (None, Some(m.as_ref())),
        _ => (None, None),
    };
    let Some(message) = message else {
        let (mapped, _) = classify(status, None, "");
        return ErrorReply::new(mapped, &format!("Provider returned HTTP {status}."), None);
    };
    let (mapped, code) = classify(status, kind, message);
    match status {
        401 => ErrorReply::new(
            mapped,
            &format!("The provider rejected the gateway's credentials. {message}"),
            code,
        ),
        402 => ErrorReply::new(
            mapped,
            &format!("The provider refused the gateway's account (billing). {message}"),
            code,
        ),
        _ => ErrorReply::new(mapped, message, code),
    }
}

// ---------------------------------------------------------------------------------------------
// Translator
// ---------------------------------------------------------------------------------------------

/// Where Claude's Messages API is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    Direct,
    Bedrock,
    Vertex,
}

/// The translator for the three Messages dialects, one value per host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anthropic {
    host: Host,
}

impl Anthropic {
    /// Anthropic itself ([`Dialect::Anthropic`]).
    pub const DIRECT: Anthropic = Anthropic { host: Host::Direct };
    /// Bedrock InvokeModel ([`Dialect::BedrockAnthropic`]).
    pub const BEDROCK: Anthropic = Anthropic {
        host: Host::Bedrock,
    };
    /// Vertex AI `rawPredict` ([`Dialect::VertexAnthropic`]).
    pub const VERTEX: Anthropic = Anthropic { host: Host::Vertex };
}

impl Translator for Anthropic {
    fn maps_top_k(&self) -> bool {
        true
    }

    fn prepare_chat(
        &self,
        t: &Target<'_>,
        req: &ChatRequest,
    ) -> Result<UpstreamRequest, InvalidRequest> {
        prepare_chat(t, req)
    }

    fn parse_chat(&self, _t: &Target<'_>, answer: &Answer<'_>) -> Result<Completion, BadAnswer> {
        parse_chat(answer.body)
    }

    fn chat_stream(&self, _t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
        match self.host {
            Host::Direct | Host::Vertex => sse_stream(ctx),
            Host::Bedrock => eventstream_stream(ctx),
        }
    }

    /// Claude on Bedrock/Vertex: the platform's own errors (an `x-amzn-errortype` header, a
    /// Google error body) use the platform's shape.
    fn translate_error(
        &self,
        _t: &Target<'_>,
        status: u16,
        body: &[u8],
        hints: &ErrorHints<'_>,
    ) -> ErrorReply {
        match self.host {
            Host::Bedrock if hints.aws_error_type.is_some() => {
                super::bedrock::error(status, body, hints)
            }
            Host::Vertex if super::gemini::is_google_error(body) => {
                super::gemini::error(status, body)
            }
            _ => error(status, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{encode_event, encode_message, HeaderValue};
    use crate::openai::{parse_request, Endpoint};
    use crate::translate::testing::{events, every_split, reassemble};
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        let raw = serde_json::to_vec(&body).unwrap();
        ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap()).unwrap()
    }

    fn target(dialect: Dialect, model: &'static str) -> Target<'static> {
        Target {
            dialect,
            upstream_model: model,
            project: Some("proj-1"),
            location: Some("us-east5"),
            api_version: None,
        }
    }

    fn prepare(dialect: Dialect, body: Value) -> Result<UpstreamRequest, InvalidRequest> {
        prepare_chat(&target(dialect, "claude-x"), &chat(body))
    }

    fn body_of(r: &UpstreamRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn param(body: Value) -> Option<String> {
        prepare(Dialect::Anthropic, body).unwrap_err().param
    }

    fn rich() -> Value {
        json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "What is in these pictures, and the weather in Paris and London?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"London\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12C"}, {"type": "text", "text": "rain"}]},
                {"role": "user", "content": "Thanks. Summarize."},
                {"role": "user", "content": "In one line."}
            ],
            "max_completion_tokens": 300,
            "temperature": 1.5,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "user": "user-42",
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.1,
            "logit_bias": {"50256": -100},
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": true
            }}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    }

    #[test]
    fn rich_request_becomes_the_documented_messages_body() {
        let r = prepare(Dialect::Anthropic, rich()).unwrap();
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.answer, AnswerFormat::Sse);
        assert_eq!(
            r.headers,
            vec![("anthropic-version", "2023-06-01".to_owned())]
        );
        // PROTOCOLS §2.1; shapes as in docs.claude.com "Messages" and "Tool use".
        assert_eq!(
            body_of(&r),
            json!({
                "model": "claude-x",
                "max_tokens": 300,
                "system": "Be brief.\n\nUse metric units.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in these pictures, and the weather in Paris and London?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "London"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C sunny"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "12C\nrain"},
                        {"type": "text", "text": "Thanks. Summarize."},
                        {"type": "text", "text": "In one line."}
                    ]}
                ],
                "temperature": 1.0,
                "top_p": 0.9,
                "stop_sequences": ["END", "STOP"],
                "metadata": {"user_id": "user-42"},
                "tools": [{"name": "get_weather", "description": "Weather for a city",
                           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
                "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
                "stream": true
            })
        );
        assert_eq!(
            r.dropped,
            vec![
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "messages[].name",
                "messages[].content[].image_url.detail",
                "tools[].function.strict",
                "logit_bias"
            ]
        );
    }

    #[test]
    fn bedrock_invoke_body_and_path() {
        let mut body = rich();
        body["messages"][2]["content"].as_array_mut().unwrap().pop(); // no URL images on Bedrock
        let t = target(
            Dialect::BedrockAnthropic,
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        );
        let r = prepare_chat(&t, &chat(body.clone())).unwrap();
        assert_eq!(
            r.path,
            "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke-with-response-stream"
        );
        assert_eq!(r.answer, AnswerFormat::EventStream);
        assert!(r.headers.is_empty());
        let b = body_of(&r);
        assert_eq!(b["anthropic_version"], "bedrock-2023-05-31");
        assert!(b.get("model").is_none() && b.get("stream").is_none(), "{b}");
        assert_eq!(b["max_tokens"], 300);
        assert_eq!(b["messages"][0]["content"][1]["source"]["type"], "base64");

        body["stream"] = json!(false);
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0";
        let r = prepare_chat(&target(Dialect::BedrockAnthropic, arn), &chat(body)).unwrap();
        assert_eq!(
            r.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
        );
        assert_eq!(r.answer, AnswerFormat::Json);

        let err = prepare(Dialect::BedrockAnthropic, rich()).unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("messages[2].content[2].image_url")
        );
        assert!(err.message.contains("base64"), "{}", err.message);
    }

    #[test]
    fn vertex_raw_predict_body_and_path() {
        let t = target(Dialect::VertexAnthropic, "claude-3-5-sonnet-v2@20241022");
        // Claude on Vertex takes images as base64 only (the gateway fetches URLs first).
        let err = prepare_chat(&t, &chat(rich())).unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("messages[2].content[2].image_url")
        );
        let inlined = rich().to_string().replace(
            "https://example.com/cat.jpg",
            "data:image/jpeg;base64,/9j/4AAQ",
        );
        let r = prepare_chat(&t, &chat(serde_json::from_str(&inlined).unwrap())).unwrap();
        assert_eq!(
            r.path,
            "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:streamRawPredict"
        );
        assert_eq!(r.answer, AnswerFormat::Sse);
        let b = body_of(&r);
        assert_eq!(b["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(b["stream"], true);
        assert!(b.get("model").is_none());
        assert_eq!(b["messages"][0]["content"][2]["source"]["type"], "base64");

        let r = prepare_chat(
            &t,
            &chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .unwrap();
        assert!(
            r.path.ends_with("claude-3-5-sonnet-v2@20241022:rawPredict"),
            "{}",
            r.path
        );
        assert_eq!(r.answer, AnswerFormat::Json);
        assert!(body_of(&r).get("stream").is_none());

        let no_project = Target { project: None, ..t };
        let err = prepare_chat(
            &no_project,
            &chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .unwrap_err();
        assert_eq!(err.param, None);
        assert!(
            err.message.contains("project") && err.message.contains("configuration"),
            "{}",
            err.message
        );
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert_eq!(
            body_of(&r),
            json!({"model": "claude-x", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
        );
        assert_eq!(r.answer, AnswerFormat::Json);
        assert!(r.dropped.is_empty());
        let t = Target {
            api_version: Some("2024-01-01"),
            ..target(Dialect::Anthropic, "c")
        };
        let r = prepare_chat(&t, &chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1, "response_format": {"type": "text"}}))).unwrap();
        assert_eq!(
            r.headers,
            vec![("anthropic-version", "2024-01-01".to_owned())]
        );
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        // Legacy completions: the prompt is one user message, max_tokens 16 by default.
        let p = parse_request(
            Endpoint::Completions,
            br#"{"model":"m","prompt":"Say hi","echo":false}"#,
        )
        .unwrap();
        let r = prepare_chat(
            &target(Dialect::Anthropic, "c"),
            &ChatRequest::from_parsed(&p).unwrap(),
        )
        .unwrap();
        let b = body_of(&r);
        assert_eq!(b["max_tokens"], 16);
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": "Say hi"}])
        );
        assert_eq!(r.dropped, vec!["echo"]);
    }

    #[test]
    fn tool_choice_mapping() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let choice = |tc: Value, parallel: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools});
            if !tc.is_null() {
                b["tool_choice"] = tc;
            }
            if !parallel.is_null() {
                b["parallel_tool_calls"] = parallel;
            }
            body_of(&prepare(Dialect::Anthropic, b).unwrap())
                .get("tool_choice")
                .cloned()
        };
        assert_eq!(
            choice(json!("none"), Value::Null),
            Some(json!({"type": "none"}))
        );
        assert_eq!(
            choice(json!("auto"), Value::Null),
            Some(json!({"type": "auto"}))
        );
        assert_eq!(
            choice(json!("required"), Value::Null),
            Some(json!({"type": "any"}))
        );
        assert_eq!(
            choice(json!("required"), json!(false)),
            Some(json!({"type": "any", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            choice(Value::Null, json!(false)),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        );
        assert_eq!(choice(Value::Null, json!(true)), None);
        assert_eq!(choice(Value::Null, Value::Null), None);
        // A tool without `parameters` gets the empty object schema.
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}),
        )
        .unwrap();
        assert_eq!(
            body_of(&r)["tools"],
            json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
        );
        // tool_choice without tools: `auto`/`none` are no-ops, `required` cannot be honoured.
        let r = prepare(Dialect::Anthropic, json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "none", "parallel_tool_calls": false})).unwrap();
        assert!(body_of(&r).get("tool_choice").is_none());
        assert_eq!(param(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})).as_deref(), Some("tool_choice"));
    }

    #[test]
    fn prefill_history_and_empty_parts() {
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "m", "messages": [
                {"role": "user", "content": ""},
                {"role": "user", "content": "Name a color."},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "Sure: "},
                {"role": "user", "content": "Go on."},
                {"role": "system", "content": "late system"},
                {"role": "assistant", "content": "The color is  \n"}
            ]}),
        )
        .unwrap();
        assert_eq!(
            body_of(&r),
            json!({"model": "claude-x", "max_tokens": 4096, "system": "late system", "messages": [
                {"role": "user", "content": "Name a color."},
                {"role": "assistant", "content": "Sure: "},
                {"role": "user", "content": "Go on."},
                {"role": "assistant", "content": "The color is"}
            ]})
        );
        // A tool result with an image keeps block content; an empty one has no content.
        let r = prepare(Dialect::Anthropic, json!({"model": "m", "messages": [
            {"role": "user", "content": "draw"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}},
                                                 {"id": "t2", "type": "function", "function": {"name": "f", "arguments": " {} "}}]},
            {"role": "user", "content": "(waiting)"},
            {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "here"}, {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}}]},
            {"role": "tool", "tool_call_id": "t2", "content": ""}
        ]})).unwrap();
        assert_eq!(
            body_of(&r)["messages"],
            json!([
                {"role": "user", "content": "draw"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [
                        {"type": "text", "text": "here"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}}]},
                    {"type": "tool_result", "tool_use_id": "t2"},
                    {"type": "text", "text": "(waiting)"}]}
            ])
        );
    }

    /// Issue 15.1: `reasoning_effort` turns extended thinking on, within Anthropic's rules.
    #[test]
    fn reasoning_effort_becomes_extended_thinking() {
        let user = json!([{"role": "user", "content": "hi"}]);
        for dialect in [
            Dialect::Anthropic,
            Dialect::BedrockAnthropic,
            Dialect::VertexAnthropic,
        ] {
            let r = prepare(
                dialect,
                json!({"model": "c", "messages": user, "reasoning_effort": "medium",
                    "max_tokens": 300, "temperature": 0.5, "top_p": 0.9, "seed": 1}),
            )
            .unwrap();
            let b = body_of(&r);
            assert_eq!(
                b["thinking"],
                json!({"type": "enabled", "budget_tokens": 4096}),
                "{dialect:?}"
            );
            assert_eq!(b["max_tokens"], 4396, "budget + the client's limit");
            for gone in ["temperature", "top_p", "top_k"] {
                assert!(b.get(gone).is_none(), "{gone}");
            }
            assert_eq!(r.dropped, ["seed", "temperature", "top_p"]);
        }
        // Defaults: max_tokens 4096 + budget; temperature 1 is allowed; low → the minimum.
        let mut req = chat(
            json!({"model": "c", "messages": user, "reasoning_effort": "low",
            "temperature": 1}),
        );
        req.top_k = Some(5);
        let r = prepare_chat(&target(Dialect::Anthropic, "claude-x"), &req).unwrap();
        let b = body_of(&r);
        assert_eq!(b["thinking"]["budget_tokens"], 1024);
        assert_eq!(b["max_tokens"], 4096 + 1024);
        assert_eq!(b["temperature"], 1.0);
        assert_eq!(r.dropped, ["top_k"]);
        // An explicit budget below Anthropic's minimum is raised to it; high → 16384.
        req.reasoning = Some(Reasoning {
            effort: None,
            budget_tokens: Some(100),
        });
        let b = body_of(&prepare_chat(&target(Dialect::Anthropic, "claude-x"), &req).unwrap());
        assert_eq!(b["thinking"]["budget_tokens"], 1024);
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": user, "reasoning_effort": "high"}),
            )
            .unwrap(),
        );
        assert_eq!(b["thinking"]["budget_tokens"], 16384);
        // Without reasoning: no thinking, sampling untouched.
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": user, "temperature": 0.5}),
            )
            .unwrap(),
        );
        assert!(b.get("thinking").is_none());
        assert_eq!(b["temperature"], 0.5);
        // A forced tool is not allowed with thinking; auto and none are.
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "f"}}),
        ] {
            assert_eq!(
                param(
                    json!({"model": "c", "messages": user, "reasoning_effort": "low",
                    "tools": tools, "tool_choice": choice})
                )
                .as_deref(),
                Some("tool_choice")
            );
        }
        for choice in ["auto", "none"] {
            assert!(prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": user, "reasoning_effort": "low",
                    "tools": tools, "tool_choice": choice})
            )
            .is_ok());
        }
        // A tool loop's continuation cannot carry the signed thinking block back: no thinking
        // there (named), even with a forced tool; a new user question thinks again.
        let mut loop_ = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"}
        ]);
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "c", "messages": loop_, "reasoning_effort": "low", "temperature": 0.2,
                "tools": tools, "tool_choice": "required"}),
        )
        .unwrap();
        let b = body_of(&r);
        assert!(b.get("thinking").is_none());
        assert_eq!(
            (b["max_tokens"].as_u64(), b["temperature"].as_f64()),
            (Some(4096), Some(0.2))
        );
        assert_eq!(r.dropped, ["reasoning_effort"]);
        loop_.as_array_mut().unwrap().extend([
            json!({"role": "assistant", "content": "18C in Paris."}),
            json!({"role": "user", "content": "thanks"}),
        ]);
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": loop_, "reasoning_effort": "low", "tools": tools}),
            )
            .unwrap(),
        );
        assert_eq!(b["thinking"]["budget_tokens"], 1024);
    }

    /// Issue 15.2: the assistant turn's `thinking_blocks` (as the answer rendered them) go
    /// back first in that turn, and the continuation keeps thinking on; without a signed block
    /// the rule stays (no thinking, named); with thinking off nothing is sent back.
    #[test]
    fn signed_thinking_blocks_keep_thinking_on_in_tool_loops() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let history = |blocks: Value| {
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Checking.", "thinking_blocks": blocks,
                 "tool_calls": [{"id": "toolu_1", "type": "function",
                                 "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
            ])
        };
        let signed = json!([
            {"type": "thinking", "thinking": "Need the tool.", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "cmVk"}
        ]);
        for dialect in [
            Dialect::Anthropic,
            Dialect::BedrockAnthropic,
            Dialect::VertexAnthropic,
        ] {
            let r = prepare(
                dialect,
                json!({"model": "c", "messages": history(signed.clone()),
                    "reasoning_effort": "low", "tools": tools}),
            )
            .unwrap();
            let b = body_of(&r);
            assert_eq!(
                b["thinking"],
                json!({"type": "enabled", "budget_tokens": 1024})
            );
            assert_eq!(
                b["messages"][1]["content"],
                json!([
                    {"type": "thinking", "thinking": "Need the tool.", "signature": "c2ln"},
                    {"type": "redacted_thinking", "data": "cmVk"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
                ]),
                "{dialect:?}"
            );
            assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        }
        // Unsigned (a stream's reassembled reasoning): nothing verifiable, today's rule.
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "c", "messages": history(json!([{"type": "thinking", "thinking": "x"}])),
                "reasoning_effort": "low", "tools": tools}),
        )
        .unwrap();
        let b = body_of(&r);
        assert!(b.get("thinking").is_none());
        assert_eq!(b["messages"][1]["content"][0]["type"], "text");
        assert_eq!(r.dropped, ["reasoning_effort"]);
        // Thinking off: the blocks stay home (Claude refuses them in a final assistant turn).
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": history(signed.clone()), "tools": tools}),
            )
            .unwrap(),
        );
        assert_eq!(b["messages"][1]["content"][0]["type"], "text");
        // A breakpoint on the assistant text still lands on the text block.
        let mut msgs = history(signed);
        msgs[1]["content"] = json!([{"type": "text", "text": "Checking.",
            "cache_control": {"type": "ephemeral"}}]);
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "c", "messages": msgs, "reasoning_effort": "low", "tools": tools}),
            )
            .unwrap(),
        );
        assert_eq!(
            b["messages"][1]["content"][2]["cache_control"]["type"],
            "ephemeral"
        );
        assert!(b["messages"][1]["content"][0]
            .get("cache_control")
            .is_none());
        // Malformed entries are refused by name.
        let bad = chat_err(json!({"model": "c", "messages": history(json!([{"type": "x"}]))}));
        assert_eq!(bad.as_deref(), Some("messages[1].thinking_blocks[0]"));
        let bad = chat_err(json!({"model": "c", "messages": history(json!("x"))}));
        assert_eq!(bad.as_deref(), Some("messages[1].thinking_blocks"));
    }

    fn chat_err(body: Value) -> Option<String> {
        let raw = serde_json::to_vec(&body).unwrap();
        ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap())
            .unwrap_err()
            .param
    }

    #[test]
    fn rejections_name_the_parameter() {
        let user = json!({"role": "user", "content": "x"});
        let with = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [user]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        assert_eq!(param(with(json!({"n": 2}))).as_deref(), Some("n"));
        assert_eq!(
            param(with(json!({"response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}}})))
            .as_deref(),
            Some("response_format")
        );
        assert_eq!(
            param(with(
                json!({"tools": [{"type": "function", "function": {"name": JSON_TOOL}}]})
            ))
            .as_deref(),
            Some("tools[0].function.name")
        );
        assert_eq!(
            param(with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}}))).as_deref(),
            Some("response_format.json_schema.schema")
        );
        for (messages, p) in [
            (
                json!([user, {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!([user, {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!([{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]),
                "messages[0].content[1].image_url",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]),
                "messages[0].content[0].image_url",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}, user]),
                "messages[0].content[0]",
            ),
            (
                json!([user, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]),
                "messages[1].content[0]",
            ),
            (
                json!([{"role": "system", "content": "s"}, {"role": "assistant", "content": "hi"}, user]),
                "messages",
            ),
            (
                json!([{"role": "system", "content": "only a system prompt"}]),
                "messages",
            ),
        ] {
            assert_eq!(
                param(json!({"model": "m", "messages": messages})).as_deref(),
                Some(p),
                "{messages}"
            );
        }
    }

    // ---- answers ----------------------------------------------------------------------------

    #[test]
    fn parses_text_answer_with_cache_usage() {
        // docs.claude.com "Messages" response example, with prompt-caching usage fields.
        let c = parse_chat(br#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"text","text":"Hi! My name is Claude."},{"type":"text","text":" Nice to meet you.","citations":null}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,
                     "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":0},"service_tier":"standard"}}"#).unwrap();
        assert_eq!(c.id.as_deref(), Some("msg_013Zva2CMHLNnXjNJJKqJ2EF"));
        let ch = &c.choices[0];
        assert_eq!(
            ch.content.as_deref(),
            Some("Hi! My name is Claude. Nice to meet you.")
        );
        assert_eq!(ch.finish_reason, Some(FinishReason::Stop));
        assert!(ch.tool_calls.is_empty() && ch.reasoning.is_none());
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens
            ),
            (3195, 503, 3698, 1000)
        );
        assert_eq!((u.cache_write_tokens, u.cache_write_1h_tokens), (100, 0));
        // One-hour writes are told apart (priced at their own rate).
        let c = parse_chat(br#"{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":1,"cache_creation_input_tokens":300,"cache_read_input_tokens":0,
                     "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}}"#).unwrap();
        let u = c.usage.unwrap();
        assert_eq!((u.cache_write_tokens, u.cache_write_1h_tokens), (300, 200));
    }

    #[test]
    fn parses_tool_calls_and_thinking() {
        let c = parse_chat(br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[
              {"type":"thinking","thinking":"The user wants weather.","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
              {"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
              {"type":"text","text":"I'll check both."},
              {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"Paris"}},
              {"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{"location":"London, UK"}}],
            "stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":91}}"#).unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.reasoning.as_deref(), Some("The user wants weather."));
        assert_eq!(ch.content.as_deref(), Some("I'll check both."));
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            ch.tool_calls,
            vec![
                ToolCall {
                    id: "toolu_01A09q90qw90lq917835lq9".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris"}"#.into()
                },
                ToolCall {
                    id: "toolu_01B".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"London, UK"}"#.into()
                },
            ]
        );
        assert_eq!(
            ch.thinking_blocks,
            [
                ThinkingBlock::Thinking {
                    thinking: "The user wants weather.".into(),
                    signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into()
                },
                ThinkingBlock::Redacted {
                    data: "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP".into()
                }
            ]
        );
        assert_eq!(c.usage, Some(Usage::new(472, 91)));
        // Tool calls only: no content.
        let c = parse_chat(br#"{"id":"m","type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#).unwrap();
        assert_eq!(c.choices[0].content, None);
        assert_eq!(c.choices[0].tool_calls[0].arguments, "{}");
    }

    #[test]
    fn finish_reasons_and_bad_answers() {
        for (stop, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::StopSequence),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
        ] {
            let body = format!(
                r#"{{"id":"m","type":"message","content":[],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":0}}}}"#
            );
            let c = parse_chat(body.as_bytes()).unwrap();
            assert_eq!(c.choices[0].finish_reason, Some(want), "{stop}");
            assert_eq!(c.choices[0].content.as_deref(), Some(""));
        }
        assert!(parse_chat(b"<html>").is_err());
        assert!(parse_chat(br#"{"id":"m","type":"message"}"#).is_err());
        let e = parse_chat(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("Overloaded"), "{e:?}");
    }

    // ---- streams ----------------------------------------------------------------------------

    fn ctx(include_usage: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "claude",
            created: 1,
            fallback_id: "req_1",
            front: FrontDoor::Chat,
            include_usage,
            echo: "",
        }
    }

    /// Anthropic SSE: `event: <type>` then `data: <json>` (the event name equals the type).
    fn sse(events: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            let v: Value = serde_json::from_str(e).unwrap();
            out.extend_from_slice(
                format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap()).as_bytes(),
            );
        }
        out
    }

    /// docs.claude.com "Streaming messages", basic streaming request (verbatim event bodies).
    const TEXT_STREAM: &str = "event: message_start\n\
data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-4-6\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n\
event: content_block_start\n\
data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"! \\u00e9\\n\"}}\n\n\
event: content_block_stop\n\
data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n\
event: message_delta\n\
data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n\
event: message_stop\n\
data: {\"type\": \"message_stop\"}\n\n";

    #[test]
    fn text_stream() {
        let (out, end, usage) = every_split(|| sse_stream(&ctx(true)), TEXT_STREAM.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(25, 15)));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Hello! é\n");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        let ev = events(&out);
        assert_eq!(
            ev[0]["id"],
            "chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
        );
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        let usage_chunk = &ev[ev.len() - 2];
        assert_eq!(usage_chunk["usage"]["prompt_tokens"], 25);
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 15);
        assert_eq!(ev.last().unwrap(), "[DONE]");
        // Without include_usage: no usage chunk, but usage() still reports it.
        let (out, _, usage) = every_split(|| sse_stream(&ctx(false)), TEXT_STREAM.as_bytes());
        assert!(events(&out).iter().all(|e| e.get("usage").is_none()));
        assert_eq!(usage, Some(Usage::new(25, 15)));
        // CRLF line ends (Vertex's front end) give the same result.
        let crlf = TEXT_STREAM.replace('\n', "\r\n");
        assert_eq!(
            every_split(|| sse_stream(&ctx(false)), crlf.as_bytes()).0,
            out
        );
    }

    /// A recording stream notes `message_start`'s id and model and the finish reason (as the
    /// client is told it); a stream that does not record keeps nothing.
    #[test]
    fn the_answer_is_noted_only_when_recorded() {
        for split in [0, 10, 200, TEXT_STREAM.len() - 3] {
            let (a, b) = TEXT_STREAM.as_bytes().split_at(split);
            let mut t = sse_stream(&ctx(false));
            t.answer().unwrap().record = true;
            let mut out = Vec::new();
            t.feed(a, &mut out);
            t.feed(b, &mut out);
            assert_eq!(t.finish(&mut out), StreamEnd::Complete);
            let got = t.answer().unwrap().clone();
            assert_eq!(
                got.id.as_deref(),
                Some("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY")
            );
            assert_eq!(got.model.as_deref(), Some("claude-opus-4-6"));
            assert_eq!(got.finish_reasons, ["stop"]);
        }
        let max_tokens = TEXT_STREAM.replace("end_turn", "max_tokens");
        let mut t = sse_stream(&ctx(false));
        t.answer().unwrap().record = true;
        t.feed(max_tokens.as_bytes(), &mut Vec::new());
        assert_eq!(t.answer().unwrap().finish_reasons, ["length"]);
        let mut t = sse_stream(&ctx(false));
        t.feed(TEXT_STREAM.as_bytes(), &mut Vec::new());
        assert_eq!(
            *t.answer().unwrap(),
            crate::translate::StreamAnswer::default()
        );
    }

    /// docs.claude.com "Streaming messages", streaming request with tool use — extended to two
    /// parallel calls, prompt-cache usage, and the cumulative usage `message_delta` carries now.
    fn tool_stream() -> Vec<u8> {
        sse(&[
            r#"{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":128,"output_tokens":2},"content":[],"stop_reason":null}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type": "ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the weather."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"tz\": \"PST\"}"}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_03","name":"ping_server","input":{}}}"#,
            r#"{"type":"content_block_stop","index":3}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":128,"output_tokens":89}}"#,
            r#"{"type":"message_stop"}"#,
        ])
    }

    #[test]
    fn tool_call_stream_with_parallel_calls() {
        let (out, end, usage) = every_split(|| sse_stream(&ctx(true)), &tool_stream());
        assert_eq!(end, StreamEnd::Complete);
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Okay, let's check the weather.");
        assert_eq!(
            calls,
            vec![
                (
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                    "get_weather".into(),
                    r#"{"location": "San Francisco, CA"}"#.into()
                ),
                (
                    "toolu_02".into(),
                    "get_time".into(),
                    r#"{"tz": "PST"}"#.into()
                ),
                ("toolu_03".into(), "ping_server".into(), "{}".into()),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let mut want = Usage::new(600, 89);
        want.cached_tokens = 128;
        assert_eq!(usage, Some(want));
        let ev = events(&out);
        let u = &ev[ev.len() - 2]["usage"];
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 128);
        // The first fragment of each call carries its OpenAI index (tool blocks only).
        let starts: Vec<(u64, String)> = ev
            .iter()
            .filter_map(|e| e["choices"].get(0)?["delta"]["tool_calls"].get(0).cloned())
            .filter(|tc| tc.get("id").is_some())
            .map(|tc| {
                (
                    tc["index"].as_u64().unwrap(),
                    tc["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            starts,
            vec![
                (0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into()),
                (1, "toolu_02".into()),
                (2, "toolu_03".into())
            ]
        );
    }

    /// docs.claude.com "Streaming messages", extended thinking example (shortened).
    fn thinking_stream() -> Vec<u8> {
        sse(&[
            r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-opus-4-6","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me solve this step by step:\n\n1. First break down 27 * 453"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"\n2. 453 = 400 + 50 + 3"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"27 * 453 = 12,231"}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":100}}"#,
            r#"{"type":"message_stop"}"#,
        ])
    }

    #[test]
    fn thinking_stream_becomes_reasoning_content() {
        let (out, end, _) = every_split(|| sse_stream(&ctx(false)), &thinking_stream());
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        let reasoning: String = ev
            .iter()
            .filter_map(|e| {
                e["choices"].get(0)?["delta"]["reasoning_content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(reasoning, "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3");
        // Each signed block reaches the client whole, in the delta that ends it.
        let blocks: Vec<Value> = ev
            .iter()
            .filter_map(|e| {
                e["choices"].get(0)?["delta"]
                    .get("thinking_blocks")
                    .cloned()
            })
            .collect();
        assert_eq!(
            blocks,
            [
                json!([{"type": "thinking",
                    "thinking": "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3",
                    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}]),
                json!([{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}]),
            ]
        );
        let (text, _, finish) = reassemble(&out);
        assert_eq!(text, "27 * 453 = 12,231");
        assert_eq!(finish.as_deref(), Some("length"));
    }

    #[test]
    fn mid_stream_error_event() {
        // docs.claude.com "Streaming messages", error events.
        let mut input = sse(&[
            r#"{"type":"message_start","message":{"id":"msg_e","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        ]);
        input.extend_from_slice(b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n");
        input.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ignored\"}}\n\n");
        let (out, end, usage) = every_split(|| sse_stream(&ctx(true)), &input);
        assert_eq!(end, StreamEnd::ProviderError("Overloaded".into()));
        assert_eq!(usage, Some(Usage::new(5, 1)));
        let ev = events(&out);
        assert_eq!(reassemble(&out).0, "Hel");
        let last = ev.last().unwrap();
        assert_eq!(last["error"]["message"], "Overloaded");
        assert_eq!(last["error"]["type"], "server_error");
        assert_eq!(last["error"]["code"], "overloaded_error");
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));

        let input =
            sse(&[r#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#]);
        let (out, _, _) = every_split(|| sse_stream(&ctx(false)), &input);
        let ev = events(&out);
        assert_eq!(ev[0]["error"]["type"], "rate_limit_error");
        assert_eq!(ev[0]["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn truncated_streams() {
        let full = TEXT_STREAM.as_bytes();
        let cut = TEXT_STREAM.find("event: message_delta").unwrap();
        for input in [&full[..cut], &full[..cut + 30], &b""[..]] {
            let (out, end, _) = every_split(|| sse_stream(&ctx(false)), input);
            assert_eq!(end, StreamEnd::Truncated);
            let ev = events(&out);
            assert_eq!(ev.last().unwrap()["error"]["code"], "stream_truncated");
        }
        // An unreadable event is a corrupt stream, not something to skip silently.
        let mut bad = full[..cut].to_vec();
        bad.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\n\n",
        );
        bad.extend_from_slice(&full[cut..]);
        let (out, end, _) = every_split(|| sse_stream(&ctx(false)), &bad);
        assert_eq!(end, StreamEnd::Truncated);
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
        // A final event missing only its blank line still counts.
        let (_, end, _) = every_split(
            || sse_stream(&ctx(false)),
            full.strip_suffix(b"\n").unwrap(),
        );
        assert_eq!(end, StreamEnd::Complete);
    }

    #[test]
    fn legacy_completion_stream() {
        let c = ResponseCtx {
            front: FrontDoor::Completions,
            ..ctx(false)
        };
        let (out, end, _) = every_split(|| sse_stream(&c), TEXT_STREAM.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let ev = events(&out);
        assert_eq!(ev[0]["object"], "text_completion");
        assert_eq!(ev[0]["id"], "cmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
        let text: String = ev
            .iter()
            .filter_map(|e| e["choices"].get(0)?["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, "Hello! é\n");
    }

    /// Bedrock InvokeModelWithResponseStream: each Anthropic event, as JSON, base64 in a `chunk`.
    fn bedrock(events: &[&str]) -> Vec<u8> {
        use base64::Engine as _;
        let mut out = Vec::new();
        for e in events {
            let b64 = base64::engine::general_purpose::STANDARD.encode(e);
            out.extend(encode_event(
                "chunk",
                format!(r#"{{"bytes":"{b64}"}}"#).as_bytes(),
            ));
        }
        out
    }

    fn exception(kind: &str, payload: &[u8]) -> Vec<u8> {
        encode_message(
            &[
                (":exception-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            payload,
        )
    }

    const BEDROCK_EVENTS: [&str; 7] = [
        r#"{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}"#,
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":9,"invocationLatency":300,"firstByteLatency":100}}"#,
    ];

    #[test]
    fn bedrock_eventstream() {
        let input = bedrock(&BEDROCK_EVENTS);
        let (out, end, usage) = every_split(|| eventstream_stream(&ctx(true)), &input);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(21, 9)));
        let (text, _, finish) = reassemble(&out);
        assert_eq!(
            (text.as_str(), finish.as_deref()),
            ("Hi there", Some("stop"))
        );
        assert_eq!(events(&out)[0]["id"], "chatcmpl-msg_bdrk_01");

        // Usage from the invocation metrics alone.
        let input = bedrock(&[
            r#"{"type":"message_start","message":{"id":"m","content":[]}}"#,
            BEDROCK_EVENTS[2],
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"}}"#,
            BEDROCK_EVENTS[6],
        ]);
        let (out, end, usage) = every_split(|| eventstream_stream(&ctx(false)), &input);
        assert_eq!((end, usage), (StreamEnd::Complete, Some(Usage::new(21, 9))));
        assert_eq!(reassemble(&out).2.as_deref(), Some("length"));
    }

    #[test]
    fn bedrock_exceptions_and_corruption() {
        for (kind, status_type, code) in [
            (
                "throttlingException",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (
                "modelStreamErrorException",
                "server_error",
                "modelStreamErrorException",
            ),
            (
                "validationException",
                "invalid_request_error",
                "validationException",
            ),
            (
                "internalServerException",
                "server_error",
                "internalServerException",
            ),
            (
                "serviceUnavailableException",
                "server_error",
                "serviceUnavailableException",
            ),
            (
                "modelTimeoutException",
                "timeout_error",
                "modelTimeoutException",
            ),
        ] {
            let mut input = bedrock(&BEDROCK_EVENTS[..3]);
            input.extend(exception(kind, br#"{"message":"Something went wrong"}"#));
            input.extend(bedrock(&BEDROCK_EVENTS[3..]));
            let (out, end, _) = every_split(|| eventstream_stream(&ctx(false)), &input);
            assert_eq!(
                end,
                StreamEnd::ProviderError("Something went wrong".into()),
                "{kind}"
            );
            let ev = events(&out);
            let err = &ev.last().unwrap()["error"];
            assert_eq!(
                (err["type"].as_str(), err["code"].as_str()),
                (Some(status_type), Some(code)),
                "{kind}"
            );
            assert_eq!(reassemble(&out).0, "Hi");
        }
        // A bad checksum: the frame boundaries can no longer be trusted.
        let mut input = bedrock(&BEDROCK_EVENTS);
        let second = bedrock(&BEDROCK_EVENTS[..1]).len() + 20;
        input[second] ^= 0x40;
        let (out, end, _) = every_split(|| eventstream_stream(&ctx(false)), &input);
        assert_eq!(end, StreamEnd::Truncated);
        assert_eq!(
            events(&out).last().unwrap()["error"]["code"],
            "stream_truncated"
        );
        // EOF inside a frame, and EOF between frames before message_stop.
        let input = bedrock(&BEDROCK_EVENTS);
        for cut in [input.len() - 5, bedrock(&BEDROCK_EVENTS[..6]).len()] {
            let (_, end, _) = every_split(|| eventstream_stream(&ctx(false)), &input[..cut]);
            assert_eq!(end, StreamEnd::Truncated);
        }
        // Undecodable chunk bytes.
        let input = encode_event("chunk", br#"{"bytes":"%%%"}"#);
        assert_eq!(
            every_split(|| eventstream_stream(&ctx(false)), &input).1,
            StreamEnd::Truncated
        );
    }

    // ---- errors -----------------------------------------------------------------------------

    fn reply(status: u16, body: &str) -> (u16, Value) {
        let r = error(status, body.as_bytes());
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn error_mapping_table() {
        let anthropic = |t: &str, m: &str| {
            format!(
                r#"{{"type":"error","error":{{"type":"{t}","message":"{m}"}},"request_id":"req_011"}}"#
            )
        };
        for (status, kind, message, want_status, want_type, want_code) in [
            (
                400,
                "invalid_request_error",
                "messages: roles must alternate",
                400,
                "invalid_request_error",
                "invalid_request_error",
            ),
            (
                400,
                "invalid_request_error",
                "prompt is too long: 208310 tokens > 200000 maximum",
                400,
                "invalid_request_error",
                "context_length_exceeded",
            ),
            (
                401,
                "authentication_error",
                "invalid x-api-key",
                502,
                "server_error",
                "authentication_error",
            ),
            (
                402,
                "billing_error",
                "credit balance too low",
                502,
                "server_error",
                "billing_error",
            ),
            (
                403,
                "permission_error",
                "no access",
                403,
                "permission_error",
                "permission_error",
            ),
            (
                404,
                "not_found_error",
                "model: claude-9",
                404,
                "not_found_error",
                "model_not_found",
            ),
            (
                404,
                "not_found_error",
                "Not found",
                404,
                "not_found_error",
                "not_found_error",
            ),
            (
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
                413,
                "invalid_request_error",
                "request_too_large",
            ),
            (
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (
                500,
                "api_error",
                "Internal server error",
                500,
                "server_error",
                "api_error",
            ),
            (
                504,
                "timeout_error",
                "Request timed out",
                504,
                "timeout_error",
                "timeout_error",
            ),
            (
                529,
                "overloaded_error",
                "Overloaded",
                503,
                "server_error",
                "overloaded_error",
            ),
        ] {
            let (s, v) = reply(status, &anthropic(kind, message));
            assert_eq!(s, want_status, "{status} {kind}");
            assert_eq!(v["error"]["type"], want_type, "{status} {kind}");
            assert_eq!(v["error"]["code"], want_code, "{status} {kind}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(message),
                "{v}"
            );
        }
        let (_, v) = reply(401, &anthropic("authentication_error", "invalid x-api-key"));
        assert_eq!(
            v["error"]["message"],
            "The provider rejected the gateway's credentials. invalid x-api-key"
        );
        // Bedrock's own body shape, without the error-type header.
        let (s, v) = reply(
            429,
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (429, Some("rate_limit_exceeded"))
        );
        assert_eq!(
            v["error"]["message"],
            "Too many requests, please wait before trying again."
        );
        // Non-JSON bodies.
        let (s, v) = reply(529, "<html>overloaded</html>");
        assert_eq!(
            (s, v["error"]["message"].as_str()),
            (503, Some("Provider returned HTTP 529."))
        );
        let (s, v) = reply(502, "");
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (500, Some("server_error"))
        );
        let (s, _) = reply(408, "timeout");
        assert_eq!(s, 504);
    }

    #[test]
    fn event_strings_borrow_from_the_input() {
        let json = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"plain"}}"#;
        let ev: Event<'_> = serde_json::from_slice(json).unwrap();
        assert!(matches!(
            ev.delta.unwrap().text,
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn fast_delta_agrees_with_the_full_parse() {
        let full = |json: &str| {
            let ev: Event<'_> = serde_json::from_str(json).unwrap();
            let d = ev.delta.unwrap();
            let piece = d
                .text
                .or(d.partial_json)
                .or(d.thinking)
                .unwrap()
                .into_owned();
            (ev.index.unwrap(), piece)
        };
        for json in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a \"quoted\" \\ back\nslash \u00e9 \ud83d\ude00 é"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"ends with backslash \\"}}"#,
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}  "#,
        ] {
            let (index, _, piece) =
                fast_delta(json.as_bytes()).unwrap_or_else(|| panic!("fast path missed {json}"));
            assert_eq!((index, piece.into_owned()), full(json), "{json}");
        }
        // Other layouts take the full parse.
        for json in [
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","extra":1}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}, "more""#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"unterminated"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"raw\ncontrol\"}}",
            r#"{"type":"content_block_delta","index":99999999999,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"bad \x"}}"#,
        ] {
            assert!(fast_delta(json.as_bytes()).is_none(), "{json}");
        }
    }

    #[test]
    fn bedrock_chunks_with_other_layouts() {
        use base64::Engine as _;
        // A padded payload (seen on Bedrock stream events) goes through `chunk_bytes`.
        let mut input = Vec::new();
        for e in BEDROCK_EVENTS {
            let b64 = base64::engine::general_purpose::STANDARD.encode(e);
            input.extend(encode_event(
                "chunk",
                format!(r#"{{"bytes":"{b64}","p":"abcdefghij"}}"#).as_bytes(),
            ));
        }
        let (out, end, _) = every_split(|| eventstream_stream(&ctx(false)), &input);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(reassemble(&out).0, "Hi there");
        // Unknown event types are skipped.
        let mut input = encode_event("somethingNew", b"{}");
        input.extend(bedrock(&BEDROCK_EVENTS));
        assert_eq!(
            every_split(|| eventstream_stream(&ctx(false)), &input).1,
            StreamEnd::Complete
        );
    }

    // ---- response_format (forced tool) --------------------------------------------------------

    fn person_schema() -> Value {
        json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"], "additionalProperties": false, "title": "Person"})
    }

    #[test]
    fn response_format_becomes_a_forced_tool_on_every_host() {
        let user = json!({"role": "user", "content": "Ann is 31."});
        for dialect in [
            Dialect::Anthropic,
            Dialect::BedrockAnthropic,
            Dialect::VertexAnthropic,
        ] {
            let r = prepare(
                dialect,
                json!({"model": "m", "messages": [user],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "Person", "strict": true, "schema": person_schema()}}}),
            )
            .unwrap();
            let b = body_of(&r);
            assert_eq!(b["tools"].as_array().unwrap().len(), 1, "{dialect:?}");
            assert_eq!(b["tools"][0]["name"], JSON_TOOL);
            assert_eq!(b["tools"][0]["input_schema"], person_schema());
            assert!(b["tools"][0]["description"]
                .as_str()
                .unwrap()
                .contains("Person"));
            assert_eq!(b["tool_choice"], json!({"type": "tool", "name": JSON_TOOL}));
            assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        }
        // json_object: any object.
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "m", "messages": [user], "response_format": {"type": "json_object"}}),
            )
            .unwrap(),
        );
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(b["tool_choice"]["type"], "tool");
        // `text` changes nothing.
        let b = body_of(
            &prepare(
                Dialect::Anthropic,
                json!({"model": "m", "messages": [user], "response_format": {"type": "text"}}),
            )
            .unwrap(),
        );
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none());
    }

    #[test]
    fn response_format_next_to_caller_tools() {
        let user = json!({"role": "user", "content": "x"});
        let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
        for (choice, want) in [
            (
                Value::Null,
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                json!("auto"),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                json!("required"),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (json!("none"), json!({"type": "tool", "name": JSON_TOOL})),
        ] {
            let mut req = json!({"model": "m", "messages": [user], "tools": tools,
                "response_format": {"type": "json_object"}});
            if !choice.is_null() {
                req["tool_choice"] = choice.clone();
            }
            let b = body_of(&prepare(Dialect::Anthropic, req).unwrap());
            let names: Vec<&str> = b["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["lookup", JSON_TOOL], "{choice}");
            assert_eq!(b["tool_choice"], want, "{choice}");
        }
    }

    #[test]
    fn response_format_with_reasoning_offers_the_json_tool_unforced() {
        let r = prepare(
            Dialect::Anthropic,
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
                "reasoning_effort": "low", "response_format": {"type": "json_object"}}),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["thinking"]["type"], "enabled");
        assert_eq!(v["tool_choice"], json!({"type": "auto"}));
        assert_eq!(v["tools"][0]["name"], "switchyard_json_response");
    }

    #[test]
    fn json_tool_with_thinking_is_not_forced() {
        let jt = JsonTool {
            description: "d".into(),
            schema: json!({"type": "object"}),
            force: Force::Named,
        };
        let (mut tools, mut choice) = (Vec::new(), None);
        add_json_tool(&jt, true, &mut tools, &mut choice);
        assert_eq!(
            serde_json::to_value(choice).unwrap(),
            json!({"type": "auto"})
        );
        assert_eq!(tools.len(), 1);
    }

    #[test]
    fn json_tool_answer_becomes_the_content() {
        let c = parse_chat(br#"{"id":"msg_1","type":"message","role":"assistant","content":[
            {"type":"tool_use","id":"toolu_1","name":"switchyard_json_response","input":{"name":"Ann","age":31}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5}}"#)
        .unwrap();
        let ch = &c.choices[0];
        // (serde_json re-serializes the input with its keys sorted.)
        assert_eq!(ch.content.as_deref(), Some(r#"{"age":31,"name":"Ann"}"#));
        assert!(ch.tool_calls.is_empty());
        assert_eq!(ch.finish_reason, Some(FinishReason::Stop));
        // Text around it is not JSON and is left out; max_tokens stays `length`.
        let c = parse_chat(br#"{"id":"m","type":"message","content":[{"type":"text","text":"Sure:"},
            {"type":"tool_use","id":"t","name":"switchyard_json_response","input":{}}],"stop_reason":"max_tokens"}"#)
        .unwrap();
        assert_eq!(c.choices[0].content.as_deref(), Some("{}"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
        // With a caller tool called instead: an ordinary tool call.
        let c = parse_chat(br#"{"id":"m","type":"message","content":[
            {"type":"tool_use","id":"t","name":"lookup","input":{"q":1}}],"stop_reason":"tool_use"}"#)
        .unwrap();
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.choices[0].tool_calls[0].name, "lookup");
        assert_eq!(c.choices[0].content, None);
    }

    fn json_tool_events() -> [&'static str; 9] {
        [
            r#"{"type":"message_start","message":{"id":"msg_j","type":"message","role":"assistant","content":[],"usage":{"input_tokens":30,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_j","name":"switchyard_json_response","input":{}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"name\": \"Ann\""}}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ", \"age\": 31}"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"ping"}"#,
        ]
    }

    #[test]
    fn json_tool_stream_becomes_content_deltas() {
        let input = sse(&json_tool_events());
        let (out, end, usage) = every_split(|| sse_stream(&ctx(false)), &input);
        assert_eq!(
            (end, usage),
            (StreamEnd::Complete, Some(Usage::new(30, 12)))
        );
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, r#"{"name": "Ann", "age": 31}"#);
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        assert!(!String::from_utf8(out).unwrap().contains("tool_calls"));
        // Bedrock InvokeModel framing, and a tool called with no input at all.
        let ev = json_tool_events();
        for (events, want) in [
            (ev.to_vec(), r#"{"name": "Ann", "age": 31}"#),
            (vec![ev[0], ev[1], ev[5], ev[6], ev[7]], "{}"),
        ] {
            let (out, end, _) = every_split(|| eventstream_stream(&ctx(false)), &bedrock(&events));
            assert_eq!(end, StreamEnd::Complete);
            let (text, calls, finish) = reassemble(&out);
            assert_eq!(
                (text.as_str(), calls.len(), finish.as_deref()),
                (want, 0, Some("stop"))
            );
        }
        // A caller tool next to it keeps `tool_calls`.
        let mut mixed = ev.to_vec();
        mixed.splice(
            5..5,
            [
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"lookup","input":{}}}"#,
                r#"{"type":"content_block_stop","index":1}"#,
            ],
        );
        let (out, _, _) = every_split(|| sse_stream(&ctx(false)), &sse(&mixed));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, r#"{"name": "Ann", "age": 31}"#);
        assert_eq!(
            calls,
            vec![("toolu_2".into(), "lookup".into(), "{}".into())]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
    }

    /// Issue 15.5: an OpenAI `file` part becomes a base64 `document` block on every Claude
    /// host; other media types and files outside user messages are refused by name.
    #[test]
    fn file_parts_become_document_blocks() {
        let body = json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"text","text":"sum up"},
            {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"q3.pdf"}}]}]});
        for dialect in [
            Dialect::Anthropic,
            Dialect::BedrockAnthropic,
            Dialect::VertexAnthropic,
        ] {
            let v = body_of(&prepare(dialect, body.clone()).unwrap());
            assert_eq!(
                v["messages"][0]["content"],
                json!([{"type":"text","text":"sum up"},
                    {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="},"title":"q3.pdf"}]),
                "{dialect:?}"
            );
        }
        let e = prepare(
            Dialect::Anthropic,
            json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":[
                {"type":"file","file":{"file_data":"data:text/csv;base64,YSxi"}}]}]}),
        )
        .err()
        .unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].file"));
    }
}
