//! AWS Bedrock runtime: the Converse API for chat (every model family) and InvokeModel for
//! embedding models (Titan text embeddings, Cohere embed). PROTOCOLS.md §3.
//!
//! # Chat — `Dialect::BedrockConverse`
//! `POST /model/{modelId}/converse` (JSON answer) or `/model/{modelId}/converse-stream`
//! (`application/vnd.amazon.eventstream` answer). The model id is one path label,
//! percent-encoded as the AWS SDKs send it (botocore `percent_encode`: everything but
//! `A-Za-z0-9-._~`, so `:` → `%3A`, `/` in ARNs → `%2F`).
//!
//! Request mapping (OpenAI → Converse):
//! - `system` and `developer` messages → `system:[{text}]`, one block per message, in order
//!   (an image in them → 400 naming `messages[i].content[j].image_url`).
//! - `user` → a `user` turn of `{text}` / `{image:{format,source:{bytes}}}` blocks; images must
//!   be `data:` URLs of png/jpeg/gif/webp (Converse takes bytes only: an `http(s)` URL or another
//!   type → 400 naming `messages[i].content[j].image_url`). `image_url.detail` is dropped.
//!   A `file` part → `{document:{format,name,source:{bytes}}}` (pdf, csv, doc(x), xls(x),
//!   html, txt, md; the name sanitized to Converse's character set); Converse wants a text
//!   block in the same message, so a document without one → 400 naming the part.
//! - `assistant` → an `assistant` turn: text blocks, then `{toolUse:{toolUseId,name,input}}` per
//!   tool call (`arguments` must be a JSON object, else 400 naming
//!   `messages[i].tool_calls[j].function.arguments`; an empty string counts as `{}`).
//! - `tool` → `{toolResult:{toolUseId,content:[{text}|{image}],status:"success"}}` in a `user` turn.
//! - Consecutive turns of the same Converse role are merged (Converse requires alternation), so
//!   consecutive tool results — and a user message right after them — form one user turn.
//!   Empty text parts are skipped (Converse rejects blank text); a message left with no
//!   content → 400 naming `messages[i].content`.
//! - The conversation must start with a user turn: a leading assistant message → 400 naming
//!   that message (`messages[i]`); no user/assistant message at all → 400 naming `messages`.
//!   A final assistant message is sent as is (prefill, where the model supports it).
//! - `max_tokens` → `inferenceConfig.maxTokens`; `temperature` → `temperature` **clamped to
//!   0–1** (Converse's range; OpenAI allows 0–2); `top_p` → `topP`; `stop` → `stopSequences`.
//! - `tools` → `toolConfig.tools[].toolSpec{name,description,inputSchema{json}}`;
//!   `tool_choice` `auto` → `{auto:{}}`, `required` → `{any:{}}`, named → `{tool:{name}}`,
//!   `required` without tools → 400 naming `tool_choice`. `none`: Converse has no "none", so
//!   `toolConfig` is left out — unless the history contains tool calls or results, which
//!   Converse only accepts with a `toolConfig`: then the tools are sent, `tool_choice` is
//!   listed as dropped, and when the client sent no tools at all, minimal tool specs
//!   (`{"type":"object"}` schemas) are synthesized from the tool names in the history.
//!   `tools[i].function.strict: true` is dropped.
//! - `response_format` `json_object` / `json_schema` → a forced tool
//!   ([`super::json_tool::JSON_TOOL`], `toolChoice` `{tool:{name}}`, or `{any:{}}` next to the
//!   caller's tools) whose `inputSchema` is the caller's schema; its call comes back as the
//!   `content`, `finish_reason: stop` (see [`super::json_tool`] for the rules and refusals).
//!   Converse accepts `any` / `tool` choices only on models that support them (Claude, Mistral
//!   Large, Nova). `text` is the default and needs nothing. `n > 1` → 400 naming `n`.
//! - Reasoning (`reasoning_effort`, a Messages client's `thinking`): for Claude models (ids
//!   with `anthropic.` or `claude`, inference profiles and ARNs included) →
//!   `additionalModelRequestFields: {"thinking": {"type":"enabled","budget_tokens":B}}`, as
//!   the Bedrock user guide's "Extended thinking" page shows for Converse, with the same rules
//!   as on InvokeModel (`super::anthropic`: effort → budget 1024 / 4096 / 16384, `maxTokens`
//!   raised to budget + the client's limit or 4096, `temperature` other than 1 and `topP`
//!   dropped, a forced `tool_choice` → 400, no thinking on a tool-loop continuation unless its
//!   assistant message brought back `thinking_blocks`). An assistant message's signed blocks
//!   ([`crate::chat::Message::thinking`]) go first in its turn as `reasoningContent`
//!   (`reasoningText {text, signature}` / `redactedContent`), Claude only and only while
//!   thinking is on (Bedrock: "include the text and its signature unmodified"). Other
//!   families: dropped and named
//!   (`reasoning_effort`) — their controls differ per model and are not mapped yet.
//! - Dropped (listed in `UpstreamRequest::dropped`): `seed`, `presence_penalty`,
//!   `frequency_penalty`, `parallel_tool_calls`, `user`, `messages[i].name`, and every field in
//!   [`ChatRequest::other`].
//!
//! Prompt caching: each [`ChatRequest::cache`] breakpoint becomes a `cachePoint` block after
//! the system text, content block or tool it follows, on Claude and Nova (not in Nova's
//! tools); elsewhere `cache_control` is named as dropped. At most 4, the last kept.
//!
//! Answer mapping: `output.message.content[]` `text` → content (concatenated), `toolUse` →
//! tool calls (`input` re-serialized as the `arguments` string), `reasoningContent.reasoningText.text`
//! → `Choice::reasoning`; a signed `reasoningText` and `redactedContent` →
//! `Choice::thinking_blocks` (OpenAI clients: `thinking_blocks`). `stopReason` per PROTOCOLS 8.1: `end_turn`/`stop_sequence` → stop,
//! `max_tokens`/`model_context_window_exceeded` → length, `tool_use` → tool_calls,
//! `guardrail_intervened`/`content_filtered` → content_filter, `malformed_model_output`/
//! `malformed_tool_use` and anything unknown → stop. Usage: `prompt_tokens` = `inputTokens` +
//! `cacheReadInputTokens` + `cacheWriteInputTokens` (Bedrock reports them apart),
//! `cached_tokens` = `cacheReadInputTokens`. Converse bodies carry no response id.
//!
//! Stream ([`converse_stream`], §3.5): frames are decoded with [`crate::eventstream::Decoder`].
//! `messageStart` → role chunk; `contentBlockStart` with `toolUse` → first tool-call fragment
//! (index counts tool calls only); `contentBlockDelta` `text` / `toolUse.input` /
//! `reasoningContent.text` → content / arguments / `reasoning_content` (`reasoningContent`
//! `signature` / `redactedContent` → a `thinking_blocks` delta); `messageStop` →
//! finish chunk; `metadata` (after `messageStop`) → usage chunk and `[DONE]`. EOF after
//! `messageStop` without `metadata` still completes (usage unknown); EOF before it, a frame
//! cut short, or a bad CRC → truncated. `exception` frames (`:exception-type`
//! `throttlingException`, `modelStreamErrorException`, `validationException`, …) and `error`
//! frames (`:error-code`/`:error-message`) → one OpenAI error event typed as [`error`] would
//! map the same exception. Unknown event types and unknown fields (e.g. the `"p"` padding)
//! are ignored.
//!
//! # Embeddings — `Dialect::BedrockEmbed`
//! `POST /model/{modelId}/invoke` (§3.8):
//! - Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`): one call per input,
//!   `{"inputText","dimensions"?,"normalize":true}`; `dimensions` must be 256, 512 or 1024.
//! - Titan V1 / G1 (`amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-02`): one call
//!   per input, `{"inputText"}` only; `dimensions` → 400.
//! - Cohere Embed (`cohere.embed-*`): one call, `{"texts":[…≤96],"input_type":"search_document",
//!   "embedding_types":["float"]}`; `dimensions` → 400 except on Embed v4, where it becomes
//!   `output_dimension` (256/512/1024/1536).
//! - Any other model → 400 naming `model`. `user` and other fields are dropped.
//!
//! Answers: Titan `embedding` (tokens: `inputTextTokenCount` summed over calls, else the
//! `x-amzn-bedrock-input-token-count` header); Cohere `embeddings` as `[[…]]` or
//! `{"float":[[…]]}`, tokens from the header.
//!
//! # Errors ([`error`], §3.6 / §8.2)
//! Exception name from `x-amzn-errortype` (before `:`) or the body's `__type`; message from
//! `message` / `Message`; `code` = the exception name except where OpenAI has a code of its
//! own (`rate_limit_exceeded`, `model_not_found`, `context_length_exceeded`).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::embeddings::{Embeddings, EmbeddingsRequest};
use crate::chat::request::{data_url, CacheAt, CacheTtl, Reasoning};
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Part, ResponseCtx, Role,
    ThinkingBlock, ToolCall, ToolChoice,
};
use crate::eventstream::{Decoder, Message as Frame};
use crate::openai::{error_type_for_status, InvalidRequest, Usage};
use crate::providers::json_tool::{self, Force, JsonTool, JSON_TOOL};
use crate::translate::{
    not_for, Answer, AnswerFormat, BadAnswer, EmbeddingsCall, ErrorHints, ErrorReply, StreamEnd,
    StreamTranslator, Target, Translator, UpstreamRequest,
};

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// `/model/{percent-encoded id}/{op}`.
fn model_path(model: &str, op: &str) -> String {
    let mut p = String::with_capacity(8 + model.len() * 3 + op.len());
    p.push_str("/model/");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            p.push(b as char);
        } else {
            let _ = write!(p, "%{b:02X}");
        }
    }
    p.push('/');
    p.push_str(op);
    p
}

// ---------------------------------------------------------------------------------------------
// Converse request
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ConverseBody<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock>,
    #[serde(
        rename = "inferenceConfig",
        skip_serializing_if = "InferenceConfig::is_empty"
    )]
    inference_config: InferenceConfig<'a>,
    #[serde(rename = "toolConfig", skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(
        rename = "additionalModelRequestFields",
        skip_serializing_if = "Option::is_none"
    )]
    additional: Option<Additional>,
}

/// `additionalModelRequestFields`: model-specific fields Converse passes to the model.
#[derive(Serialize)]
struct Additional {
    thinking: super::anthropic::ThinkingOut,
}

/// Whether a Converse model id names a Claude model (foundation model, inference profile or ARN).
/// Claude models (ids with `anthropic.` or `claude`: inference profiles and ARNs included).
pub(crate) fn is_claude(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("claude")
}

/// A `system` entry: text, or a prompt-cache checkpoint after the text before it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum SystemBlock {
    Text(String),
    CachePoint(CachePoint),
}

/// `{"type":"default"}`: the `cachePoint` block Converse takes in `system`, `messages` and
/// `toolConfig.tools` (the prompt up to it is cached).
#[derive(Serialize, Clone, Copy)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

const CACHE_POINT: CachePoint = CachePoint { kind: "default" };

/// Bedrock caches at most this many checkpoints per request (as Anthropic does).
const MAX_CACHE_POINTS: usize = 4;

/// Whether Converse takes cache checkpoints for this model (Claude and Nova, per the Bedrock
/// prompt-caching documentation), and whether in `toolConfig.tools` too (Claude only).
fn caching(model: &str) -> (bool, bool) {
    let claude = is_claude(model);
    (claude || model.contains("nova"), claude)
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block: a union serialized as an object with exactly one key.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(&'a str),
    Image(ImageBlock<'a>),
    Document(DocumentBlock<'a>),
    ToolUse(ToolUseBlock<'a>),
    ToolResult(ToolResultBlock<'a>),
    CachePoint(CachePoint),
    /// Claude's signed reasoning sent back, first in its assistant turn.
    ReasoningContent(ReasoningOut<'a>),
}

/// `{"reasoningText":{"text","signature"}}` | `{"redactedContent":"<base64>"}` (a union).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ReasoningOut<'a> {
    ReasoningText { text: &'a str, signature: &'a str },
    RedactedContent(&'a str),
}

/// `{"document":{"format":"pdf","name":"…","source":{"bytes":"<base64>"}}}`.
#[derive(Serialize)]
struct DocumentBlock<'a> {
    format: &'static str,
    name: String,
    source: BytesSource<'a>,
}

#[derive(Serialize)]
struct ImageBlock<'a> {
    format: &'static str,
    source: BytesSource<'a>,
}

#[derive(Serialize)]
struct BytesSource<'a> {
    bytes: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock<'a> {
    tool_use_id: Cow<'a, str>,
    name: &'a str,
    input: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultBlock<'a> {
    tool_use_id: Cow<'a, str>,
    content: Vec<ResultBlock<'a>>,
    status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ResultBlock<'a> {
    Text(&'a str),
    Image(ImageBlock<'a>),
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
struct ToolConfig<'a> {
    tools: Vec<ToolEntry<'a>>,
    #[serde(rename = "toolChoice", skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolEntry<'a> {
    ToolSpec(ToolSpec<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: Cow<'a, Value>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct NamedTool<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoiceOut<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool<'a>),
}

fn image_format(mime: &str) -> Option<&'static str> {
    Some(match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

/// Converse's document formats (`DocumentBlock.format`) by media type.
fn document_format(mime: &str) -> Option<&'static str> {
    Some(match mime.to_ascii_lowercase().as_str() {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A document name Converse accepts: it allows only alphanumerics, single whitespace,
/// hyphens, parentheses and square brackets, 1–200 characters (API reference,
/// `DocumentBlock.name`). ASCII letters and digits are kept; other characters (the `.` of
/// `report.pdf`, accented letters) become hyphens, runs of whitespace one space; an empty
/// result is `document-{i}-{j}`.
pub(crate) fn document_name(name: Option<&str>, i: usize, j: usize) -> String {
    let mut out = String::with_capacity(name.map_or(16, |n| n.len().min(800)));
    let mut chars = 0;
    for c in name.unwrap_or_default().chars() {
        if chars >= 200 {
            break;
        }
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            out.push(c);
        } else if c.is_whitespace() {
            if out.is_empty() || out.ends_with(' ') {
                continue;
            }
            out.push(' ');
        } else {
            out.push('-');
        }
        chars += 1;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.is_empty() {
        out = format!("document-{i}-{j}");
    }
    out
}

/// A file part as a Converse document block (bytes only).
fn document_block<'a>(
    data: &'a str,
    mime: &str,
    name: Option<&str>,
    i: usize,
    j: usize,
) -> Result<DocumentBlock<'a>, InvalidRequest> {
    let Some(format) = document_format(mime) else {
        let param = format!("messages[{i}].content[{j}].file");
        return Err(InvalidRequest::new(
            format!("Invalid '{param}': document type '{mime}' is not supported by Bedrock Converse (pdf, csv, doc, docx, xls, xlsx, html, txt, md)."),
            Some(&param),
        ));
    };
    Ok(DocumentBlock {
        format,
        name: document_name(name, i, j),
        source: BytesSource { bytes: data },
    })
}

/// An OpenAI image part as a Converse image block (bytes only).
fn image_block<'a>(url: &'a str, at: &str) -> Result<ImageBlock<'a>, InvalidRequest> {
    let param = format!("{at}.image_url");
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(InvalidRequest::new(
            format!("Invalid '{param}': Bedrock Converse accepts image bytes only, not URLs. Send the image as a base64 data URL (data:image/png;base64,...)."),
            Some(&param),
        ));
    }
    let Some((mime, data)) = data_url(url) else {
        return Err(InvalidRequest::new(
            format!("Invalid '{param}': expected a base64 data URL (data:image/png;base64,...)."),
            Some(&param),
        ));
    };
    let Some(format) = image_format(mime) else {
        return Err(InvalidRequest::new(
            format!("Invalid '{param}': image type '{mime}' is not supported by Bedrock Converse (png, jpeg, gif, webp)."),
            Some(&param),
        ));
    };
    Ok(ImageBlock {
        format,
        source: BytesSource { bytes: data },
    })
}

/// Parses tool-call arguments into the JSON object Converse wants as `input`.
fn tool_input(arguments: &str, at: &str) -> Result<Value, InvalidRequest> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => {
            let param = format!("{at}.function.arguments");
            Err(InvalidRequest::new(
                format!("Invalid '{param}': expected a JSON object encoded as a string."),
                Some(&param),
            ))
        }
    }
}

fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

/// Builds the Converse / ConverseStream request.
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(InvalidRequest::new(
            "Invalid 'n': Bedrock Converse generates one choice per request; 'n' must be 1.",
            Some("n"),
        ));
    }
    let json_tool = json_tool::plan(req)?;
    if req.tool_choice == Some(ToolChoice::Required) && req.tools.is_empty() {
        return Err(InvalidRequest::new(
            "Invalid value for 'tool_choice': 'required' is only allowed when 'tools' are specified.",
            Some("tool_choice"),
        ));
    }

    let mut dropped: Vec<String> = Vec::new();
    let (cache_model, cache_tools) = caching(t.upstream_model);
    let cache = cache_model && !req.cache.is_empty();
    if !req.cache.is_empty()
        && (!cache_model
            || (!cache_tools && req.cache.iter().any(|c| matches!(c.at, CacheAt::Tool(_)))))
    {
        // No checkpoints on this model (or none in its tools): named rather than lost.
        dropped.push("cache_control".into());
    }
    let mut system: Vec<SystemBlock> = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(req.messages.len());
    let mut first_turn_message = None;
    let mut tool_history = false;
    // Claude's thinking blocks go back only with thinking on (see `super::anthropic`).
    let thinking_on = req.reasoning.is_some()
        && is_claude(t.upstream_model)
        && super::anthropic::keeps_thinking(req);
    let mut size_hint = 256;

    for (i, m) in req.messages.iter().enumerate() {
        if m.name.is_some() {
            dropped.push(format!("messages[{i}].name"));
        }
        let mut blocks: Vec<Block<'_>> = Vec::with_capacity(m.content.len() + m.tool_calls.len());
        for (j, p) in m.content.iter().enumerate() {
            if let Part::Image {
                detail: Some(_), ..
            } = p
            {
                dropped.push(format!("messages[{i}].content[{j}].image_url.detail"));
            }
        }
        let role = match m.role {
            Role::System | Role::Developer => {
                for (j, p) in m.content.iter().enumerate() {
                    if !matches!(p, Part::Text(_)) {
                        let param = match p {
                            Part::Image { .. } => format!("messages[{i}].content[{j}].image_url"),
                            _ => format!("messages[{i}].content[{j}]"),
                        };
                        return Err(InvalidRequest::new(
                            format!(
                                "Invalid '{param}': system and developer messages carry text only."
                            ),
                            Some(&param),
                        ));
                    }
                }
                let text = m.text();
                size_hint += text.len() + 16;
                if !text.is_empty() {
                    system.push(SystemBlock::Text(text));
                    // Markers on a system message's parts: after its text (Converse gets
                    // one text block per message).
                    if cache {
                        let mut ttls = req.cache.iter().filter(|c| match c.at {
                            CacheAt::Part { message, .. } | CacheAt::Message(message) => {
                                message == i
                            }
                            CacheAt::Tool(_) => false,
                        });
                        if let Some(c) = ttls.next_back() {
                            cache_ttl(c.ttl, &mut dropped);
                            system.push(SystemBlock::CachePoint(CACHE_POINT));
                        }
                    }
                }
                continue;
            }
            Role::User | Role::Assistant => {
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(s) if s.is_empty() => {}
                        Part::Text(s) => {
                            size_hint += s.len() + 16;
                            blocks.push(Block::Text(s));
                        }
                        Part::Image { url, .. } => {
                            let at = format!("messages[{i}].content[{j}]");
                            if m.role == Role::Assistant {
                                let param = format!("{at}.image_url");
                                return Err(InvalidRequest::new(
                                    format!("Invalid '{param}': assistant messages cannot carry images."),
                                    Some(&param),
                                ));
                            }
                            size_hint += url.len() + 64;
                            blocks.push(Block::Image(image_block(url, &at)?));
                        }
                        Part::File { data, mime, name } => {
                            if m.role == Role::Assistant {
                                let param = format!("messages[{i}].content[{j}]");
                                return Err(InvalidRequest::new(
                                    format!(
                                        "Invalid '{param}': assistant messages cannot carry files."
                                    ),
                                    Some(&param),
                                ));
                            }
                            size_hint += data.len() + 128;
                            blocks.push(Block::Document(document_block(
                                data,
                                mime,
                                name.as_deref(),
                                i,
                                j,
                            )?));
                        }
                    }
                }
                // Converse wants a text block beside a document in the same message.
                if let Some(j) = m
                    .content
                    .iter()
                    .position(|p| matches!(p, Part::File { .. }))
                {
                    if !blocks.iter().any(|b| matches!(b, Block::Text(_))) {
                        let param = format!("messages[{i}].content[{j}]");
                        return Err(InvalidRequest::new(
                            format!("Invalid '{param}': Bedrock Converse needs a text part in the same message as a document; add the question as a text part."),
                            Some(&param),
                        ));
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    tool_history = true;
                    size_hint += c.arguments.len() + c.id.len() + c.name.len() + 64;
                    let input =
                        tool_input(&c.arguments, &format!("messages[{i}].tool_calls[{j}]"))?;
                    blocks.push(Block::ToolUse(ToolUseBlock {
                        tool_use_id: tool_use_id(&c.id),
                        name: &c.name,
                        input,
                    }));
                }
                if m.role == Role::User {
                    "user"
                } else {
                    "assistant"
                }
            }
            Role::Tool => {
                tool_history = true;
                let mut content = Vec::with_capacity(m.content.len());
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(s) if s.is_empty() => {}
                        Part::Text(s) => {
                            size_hint += s.len() + 16;
                            content.push(ResultBlock::Text(s));
                        }
                        Part::Image { url, .. } => {
                            size_hint += url.len() + 64;
                            content.push(ResultBlock::Image(image_block(
                                url,
                                &format!("messages[{i}].content[{j}]"),
                            )?));
                        }
                        Part::File { .. } => {
                            let param = format!("messages[{i}].content[{j}]");
                            return Err(InvalidRequest::new(
                                format!("Invalid '{param}': tool messages cannot carry files."),
                                Some(&param),
                            ));
                        }
                    }
                }
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                size_hint += id.len() + 64;
                blocks.push(Block::ToolResult(ToolResultBlock {
                    tool_use_id: tool_use_id(id),
                    content,
                    status: "success",
                }));
                "user"
            }
        };
        if cache {
            cache_points(req, i, &mut blocks, &mut dropped);
        }
        if thinking_on && m.role == Role::Assistant && !m.thinking.is_empty() {
            let reasoning = m.thinking.iter().map(|b| {
                Block::ReasoningContent(match b {
                    ThinkingBlock::Thinking {
                        thinking,
                        signature,
                    } => ReasoningOut::ReasoningText {
                        text: thinking,
                        signature,
                    },
                    ThinkingBlock::Redacted { data } => ReasoningOut::RedactedContent(data),
                })
            });
            blocks.splice(0..0, reasoning);
        }
        if blocks.is_empty() {
            let param = format!("messages[{i}].content");
            return Err(InvalidRequest::new(
                format!(
                    "Invalid '{param}': Bedrock Converse does not accept empty message content."
                ),
                Some(&param),
            ));
        }
        if first_turn_message.is_none() {
            first_turn_message = Some(i);
            if role == "assistant" {
                let param = format!("messages[{i}]");
                return Err(InvalidRequest::new(
                    format!("Invalid '{param}': a Bedrock Converse conversation must start with a user message, not an assistant message."),
                    Some(&param),
                ));
            }
        }
        push_turn(&mut turns, role, blocks);
    }
    if turns.is_empty() {
        return Err(InvalidRequest::new(
            "Invalid 'messages': Bedrock Converse needs at least one user message besides system messages.",
            Some("messages"),
        ));
    }

    // Tools.
    let mut tools: Vec<ToolEntry<'_>> = Vec::with_capacity(req.tools.len());
    for (i, tool) in req.tools.iter().enumerate() {
        if tool.strict == Some(true) {
            dropped.push(format!("tools[{i}].function.strict"));
        }
        size_hint += tool.name.len() + tool.description.as_ref().map_or(0, String::len) + 128;
        tools.push(ToolEntry::ToolSpec(ToolSpec {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: InputSchema {
                json: Cow::Borrowed(&tool.parameters),
            },
        }));
        if let (true, Some(ttl)) = (cache && cache_tools, req.cache_at(CacheAt::Tool(i))) {
            cache_ttl(ttl, &mut dropped);
            tools.push(ToolEntry::CachePoint(CACHE_POINT));
        }
    }
    let tool_choice = match &req.tool_choice {
        Some(ToolChoice::Auto) => Some(ToolChoiceOut::Auto(Empty {})),
        Some(ToolChoice::Required) => Some(ToolChoiceOut::Any(Empty {})),
        Some(ToolChoice::Named(name)) => Some(ToolChoiceOut::Tool(NamedTool { name })),
        Some(ToolChoice::None) | None => None,
    };
    let tool_config = if tool_history {
        // Converse rejects toolUse / toolResult blocks without a toolConfig.
        if req.tool_choice == Some(ToolChoice::None) {
            dropped.push("tool_choice".into());
        }
        if tools.is_empty() {
            tools = synthesized_tools(req);
        }
        Some(ToolConfig {
            tools,
            tool_choice: if req.tool_choice == Some(ToolChoice::None) || req.tools.is_empty() {
                None
            } else {
                tool_choice
            },
        })
    } else if tools.is_empty() || req.tool_choice == Some(ToolChoice::None) {
        None
    } else {
        Some(ToolConfig { tools, tool_choice })
    };

    let mut tool_config = tool_config;

    for (name, present) in [
        ("seed", req.seed.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("parallel_tool_calls", req.parallel_tool_calls.is_some()),
        ("user", req.user.is_some()),
    ] {
        if present {
            dropped.push(name.into());
        }
    }
    dropped.extend(req.other_names().map(str::to_owned));
    let mut inference_config = InferenceConfig {
        max_tokens: req.max_tokens,
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        stop_sequences: &req.stop,
    };
    let mut additional = None;
    if let Some(r) = &req.reasoning {
        if is_claude(t.upstream_model) {
            if let Some(c) = super::anthropic::claude_thinking(
                r,
                req,
                inference_config.temperature,
                &mut dropped,
            )? {
                inference_config.max_tokens = Some(c.max_tokens);
                inference_config.temperature = c.temperature;
                inference_config.top_p = None;
                additional = Some(Additional {
                    thinking: c.thinking,
                });
            }
        } else {
            dropped.push(Reasoning::PARAM.into());
        }
    }
    if let Some(jt) = &json_tool {
        // Claude refuses a forced tool while thinking: then the JSON tool is offered (auto).
        add_json_tool(jt, additional.is_some(), &mut tool_config);
    }

    if cache {
        limit_cache_points(&mut tool_config, &mut system, &mut turns, &mut dropped);
    }
    let body = ConverseBody {
        messages: turns,
        system,
        inference_config,
        tool_config,
        additional,
    };
    let mut bytes = Vec::with_capacity(size_hint);
    serde_json::to_writer(&mut bytes, &body).expect("serializing to a Vec cannot fail");
    let (op, answer) = if req.stream {
        ("converse-stream", AnswerFormat::EventStream)
    } else {
        ("converse", AnswerFormat::Json)
    };
    Ok(UpstreamRequest {
        path: model_path(t.upstream_model, op),
        body: bytes,
        headers: Vec::new(),
        answer,
        dropped,
    })
}

/// A 1-hour ttl cannot be asked for through Converse's `cachePoint` (`type: default` only):
/// the checkpoint is kept with Bedrock's default ttl and `cache_control.ttl` named as dropped.
fn cache_ttl(ttl: Option<CacheTtl>, dropped: &mut Vec<String>) {
    if ttl == Some(CacheTtl::OneHour) && !dropped.iter().any(|d| d == "cache_control.ttl") {
        dropped.push("cache_control.ttl".into());
    }
}

/// Inserts message `i`'s checkpoints into its `blocks`: after part `j` → after the last
/// block emitted for parts up to `j` (empty text emits none); after the message → at its end.
/// A tool result is one block: any marker on it goes after it.
fn cache_points(
    req: &ChatRequest,
    i: usize,
    blocks: &mut Vec<Block<'_>>,
    dropped: &mut Vec<String>,
) {
    let m = &req.messages[i];
    let mut at: Vec<usize> = Vec::new();
    for c in &req.cache {
        let pos = match c.at {
            CacheAt::Message(k) if k == i => blocks.len(),
            CacheAt::Part { message, .. } if message == i && m.role == Role::Tool => blocks.len(),
            CacheAt::Part { message, part } if message == i => m
                .content
                .iter()
                .take(part.saturating_add(1))
                .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()))
                .count(),
            _ => continue,
        };
        cache_ttl(c.ttl, dropped);
        if pos > 0 && !at.contains(&pos) {
            at.push(pos);
        }
    }
    at.sort_unstable();
    for pos in at.into_iter().rev() {
        blocks.insert(pos.min(blocks.len()), Block::CachePoint(CACHE_POINT));
    }
}

/// Keeps the last [`MAX_CACHE_POINTS`] checkpoints in prompt order (tools, system, messages):
/// the longest cached prefixes save the most. Any removed → `cache_control` named dropped.
fn limit_cache_points(
    tool_config: &mut Option<ToolConfig<'_>>,
    system: &mut Vec<SystemBlock>,
    turns: &mut [Turn<'_>],
    dropped: &mut Vec<String>,
) {
    let in_tools = tool_config.as_ref().map_or(0, |c| {
        c.tools
            .iter()
            .filter(|t| matches!(t, ToolEntry::CachePoint(_)))
            .count()
    });
    let in_system = system
        .iter()
        .filter(|b| matches!(b, SystemBlock::CachePoint(_)))
        .count();
    let in_turns: usize = turns
        .iter()
        .map(|t| {
            t.content
                .iter()
                .filter(|b| matches!(b, Block::CachePoint(_)))
                .count()
        })
        .sum();
    let mut excess = (in_tools + in_system + in_turns).saturating_sub(MAX_CACHE_POINTS);
    if excess == 0 {
        return;
    }
    if !dropped.iter().any(|d| d == "cache_control") {
        dropped.push("cache_control".into());
    }
    if let Some(c) = tool_config {
        c.tools.retain(|t| {
            let drop = excess > 0 && matches!(t, ToolEntry::CachePoint(_));
            excess -= usize::from(drop);
            !drop
        });
    }
    system.retain(|b| {
        let drop = excess > 0 && matches!(b, SystemBlock::CachePoint(_));
        excess -= usize::from(drop);
        !drop
    });
    for t in turns {
        t.content.retain(|b| {
            let drop = excess > 0 && matches!(b, Block::CachePoint(_));
            excess -= usize::from(drop);
            !drop
        });
    }
}

/// Adds the `response_format` tool to the tool config and forces it (see [`json_tool`]).
fn add_json_tool<'a>(jt: &'a JsonTool, thinking: bool, config: &mut Option<ToolConfig<'a>>) {
    let entry = ToolEntry::ToolSpec(ToolSpec {
        name: JSON_TOOL,
        description: Some(&jt.description),
        input_schema: InputSchema {
            json: Cow::Borrowed(&jt.schema),
        },
    });
    let choice = match jt.force {
        _ if thinking => ToolChoiceOut::Auto(Empty {}),
        Force::Named => ToolChoiceOut::Tool(NamedTool { name: JSON_TOOL }),
        Force::Any => ToolChoiceOut::Any(Empty {}),
    };
    match config {
        Some(c) => {
            c.tools.push(entry);
            c.tool_choice = Some(choice);
        }
        None => {
            *config = Some(ToolConfig {
                tools: vec![entry],
                tool_choice: Some(choice),
            })
        }
    }
}

/// Minimal tool specs for the tool names used in the history (when the client sent none).
fn synthesized_tools(req: &ChatRequest) -> Vec<ToolEntry<'_>> {
    static OBJECT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let schema = OBJECT.get_or_init(|| serde_json::json!({"type": "object", "properties": {}}));
    let mut names: Vec<&str> = Vec::new();
    for m in &req.messages {
        for c in &m.tool_calls {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            ToolEntry::ToolSpec(ToolSpec {
                name,
                description: None,
                input_schema: InputSchema {
                    json: Cow::Borrowed(schema),
                },
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Converse answer
// ---------------------------------------------------------------------------------------------

/// A string that borrows from the input when it has no escapes (also inside `Option`, where
/// serde's `#[serde(borrow)]` on `Cow` would not borrow).
#[derive(Debug)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Str)
    }
}

impl Str<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl TokenUsage {
    fn to_openai(self) -> Usage {
        let prompt =
            self.input_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens;
        let mut u = Usage::new(prompt, self.output_tokens);
        u.cached_tokens = self.cache_read_input_tokens;
        u
    }
}

#[derive(Deserialize)]
struct ConverseAnswer<'a> {
    #[serde(borrow)]
    output: Option<AnswerOutput<'a>>,
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Option<Str<'a>>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct AnswerOutput<'a> {
    #[serde(borrow)]
    message: Option<AnswerMessage<'a>>,
}

#[derive(Deserialize)]
struct AnswerMessage<'a> {
    #[serde(borrow, default)]
    content: Vec<AnswerBlock<'a>>,
}

#[derive(Deserialize)]
struct AnswerBlock<'a> {
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(rename = "toolUse", borrow)]
    tool_use: Option<AnswerToolUse<'a>>,
    #[serde(rename = "reasoningContent", borrow)]
    reasoning: Option<AnswerReasoning<'a>>,
}

#[derive(Deserialize)]
struct AnswerToolUse<'a> {
    #[serde(rename = "toolUseId", borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
struct AnswerReasoning<'a> {
    #[serde(rename = "reasoningText", borrow)]
    reasoning_text: Option<ReasoningText<'a>>,
    #[serde(rename = "redactedContent", borrow)]
    redacted: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ReasoningText<'a> {
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    signature: Option<Str<'a>>,
}

/// `stopReason` → OpenAI `finish_reason` (PROTOCOLS 8.1).
fn finish_reason(stop: &str) -> FinishReason {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        "stop_sequence" => FinishReason::StopSequence,
        // end_turn, malformed_model_output, malformed_tool_use, unknown
        _ => FinishReason::Stop,
    }
}

/// Reads a complete Converse answer.
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    let a: ConverseAnswer<'_> = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable Bedrock Converse answer: {e}")))?;
    let Some(message) = a.output.and_then(|o| o.message) else {
        return Err(BadAnswer(
            "Bedrock Converse answer has no output.message".into(),
        ));
    };
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut json: Option<String> = None;
    for block in message.content {
        if let Some(t) = block.text {
            content.get_or_insert_with(String::new).push_str(t.as_str());
        }
        if let Some(tu) = block.tool_use {
            if tu.name.as_str() == JSON_TOOL {
                json.get_or_insert_with(String::new)
                    .push_str(&json_tool::answer_text(&tu.input));
                continue;
            }
            let arguments = match tu.input {
                Value::Null => "{}".to_owned(),
                v => v.to_string(),
            };
            tool_calls.push(ToolCall {
                id: tu.id.0.into_owned(),
                name: tu.name.0.into_owned(),
                arguments,
            });
        }
        let Some(r) = block.reasoning else { continue };
        if let Some(rt) = r.reasoning_text {
            let text = rt.text.as_ref().map_or("", Str::as_str);
            if rt.text.is_some() {
                reasoning.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(sig) = rt.signature.filter(|s| !s.as_str().is_empty()) {
                thinking_blocks.push(ThinkingBlock::Thinking {
                    thinking: text.to_owned(),
                    signature: sig.0.into_owned(),
                });
            }
        }
        if let Some(data) = r.redacted.filter(|d| !d.as_str().is_empty()) {
            thinking_blocks.push(ThinkingBlock::Redacted {
                data: data.0.into_owned(),
            });
        }
    }
    let mut finish = a.stop_reason.as_ref().map(|s| finish_reason(s.as_str()));
    if json.is_some() {
        // The structured answer is the content (any text around it is not JSON).
        content = json;
        if finish == Some(FinishReason::ToolCalls) && tool_calls.is_empty() {
            finish = Some(FinishReason::Stop); // only the response_format tool was called
        }
    }
    Ok(Completion {
        id: None,
        choices: vec![Choice {
            content,
            reasoning,
            thinking_blocks,
            tool_calls,
            finish_reason: Some(finish.unwrap_or(FinishReason::Stop)),
        }],
        usage: a.usage.map(TokenUsage::to_openai),
    })
}

// ---------------------------------------------------------------------------------------------
// ConverseStream
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct BlockStartEvent<'a> {
    #[serde(rename = "contentBlockIndex", default)]
    index: u64,
    #[serde(borrow)]
    start: Option<BlockStart<'a>>,
}

#[derive(Deserialize)]
struct BlockStart<'a> {
    #[serde(rename = "toolUse", borrow)]
    tool_use: Option<ToolUseStart<'a>>,
}

#[derive(Deserialize)]
struct ToolUseStart<'a> {
    #[serde(rename = "toolUseId", borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
}

#[derive(Deserialize)]
struct BlockDeltaEvent<'a> {
    #[serde(rename = "contentBlockIndex", default)]
    index: u64,
    #[serde(borrow)]
    delta: Option<BlockDelta<'a>>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(rename = "toolUse", borrow)]
    tool_use: Option<ToolUseDelta<'a>>,
    #[serde(rename = "reasoningContent", borrow)]
    reasoning: Option<ReasoningDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolUseDelta<'a> {
    #[serde(borrow)]
    input: Option<Str<'a>>,
}

/// `{"text"}` | `{"signature"}` | `{"redactedContent"}` (a union).
#[derive(Deserialize)]
struct ReasoningDelta<'a> {
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    signature: Option<Str<'a>>,
    #[serde(rename = "redactedContent", borrow)]
    redacted: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct BlockStopEvent {
    #[serde(rename = "contentBlockIndex", default)]
    index: u64,
}

#[derive(Deserialize)]
struct MessageStopEvent<'a> {
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct MetadataEvent {
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ExceptionPayload<'a> {
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(rename = "Message", borrow)]
    message_upper: Option<Str<'a>>,
}

/// Translation state (everything but the decoder, so the decoder's callback can borrow it).
struct StreamState {
    writer: ChunkWriter,
    /// (content block index, tool call index) of the tool-use blocks seen.
    tool_blocks: Vec<(u64, usize)>,
    /// The `response_format` tool's block (index, whether input was sent): its input streams
    /// as content.
    json_block: Option<(u64, bool)>,
    stopped: bool,
    usage: Option<Usage>,
    end: Option<StreamEnd>,
}

struct ConverseStream {
    decoder: Decoder,
    state: StreamState,
}

/// A translator for a ConverseStream answer.
pub fn converse_stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(ConverseStream {
        decoder: Decoder::new(),
        state: StreamState {
            writer: ChunkWriter::new(ctx),
            tool_blocks: Vec::new(),
            json_block: None,
            stopped: false,
            usage: None,
            end: None,
        },
    })
}

impl StreamState {
    fn on_frame(&mut self, m: &Frame<'_>, out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        match m.message_type() {
            Some("event") => self.on_event(m.event_type().unwrap_or(""), m.payload, out),
            Some("exception") => {
                let name = m.str_header(":exception-type").unwrap_or("exception");
                let p = serde_json::from_slice::<ExceptionPayload<'_>>(m.payload).ok();
                let msg = p
                    .as_ref()
                    .and_then(|p| p.message.as_ref().or(p.message_upper.as_ref()));
                self.fail(out, name, msg.map(Str::as_str));
            }
            Some("error") => {
                let name = m.str_header(":error-code").unwrap_or("error");
                let msg = m.str_header(":error-message");
                self.fail(out, name, msg);
            }
            _ => {}
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, name: &str, message: Option<&str>) {
        let message = match message {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => format!("Bedrock reported {name} during the stream."),
        };
        let mapped = classify(name, 500, &message);
        self.writer.error(
            out,
            &message,
            error_type_for_status(mapped.status),
            Some(&mapped.code),
        );
        self.end = Some(StreamEnd::ProviderError(message));
    }

    fn on_event(&mut self, kind: &str, payload: &[u8], out: &mut Vec<u8>) {
        self.writer.start(out);
        match kind {
            "contentBlockDelta" => {
                let Ok(ev) = serde_json::from_slice::<BlockDeltaEvent<'_>>(payload) else {
                    return;
                };
                let Some(delta) = ev.delta else { return };
                if let Some(t) = delta.text {
                    self.writer.content(out, t.as_str());
                }
                if let Some(input) = delta.tool_use.and_then(|t| t.input) {
                    if let Some((_, sent)) =
                        self.json_block.as_mut().filter(|(b, _)| *b == ev.index)
                    {
                        *sent |= !input.as_str().is_empty();
                        self.writer.content(out, input.as_str());
                    } else if let Some(&(_, call)) =
                        self.tool_blocks.iter().find(|(b, _)| *b == ev.index)
                    {
                        self.writer.tool_call_arguments(out, call, input.as_str());
                    }
                }
                if let Some(r) = delta.reasoning {
                    if let Some(t) = r.text {
                        self.writer.reasoning(out, t.as_str());
                    }
                    if let Some(sig) = r.signature {
                        self.writer.reasoning_signature(out, sig.as_str());
                    }
                    if let Some(data) = r.redacted {
                        self.writer.redacted_thinking(out, data.as_str());
                    }
                }
            }
            "contentBlockStart" => {
                let Ok(ev) = serde_json::from_slice::<BlockStartEvent<'_>>(payload) else {
                    return;
                };
                if let Some(tu) = ev.start.and_then(|s| s.tool_use) {
                    if tu.name.as_str() == JSON_TOOL {
                        self.json_block = Some((ev.index, false));
                        return;
                    }
                    let call = self.tool_blocks.len();
                    self.tool_blocks.push((ev.index, call));
                    self.writer
                        .tool_call_start(out, call, tu.id.as_str(), tu.name.as_str());
                }
            }
            "messageStop" => {
                let reason = serde_json::from_slice::<MessageStopEvent<'_>>(payload)
                    .ok()
                    .and_then(|e| e.stop_reason)
                    .map_or(FinishReason::Stop, |s| finish_reason(s.as_str()));
                let reason = if reason == FinishReason::ToolCalls
                    && self.tool_blocks.is_empty()
                    && self.json_block.is_some()
                {
                    FinishReason::Stop // only the response_format tool was called
                } else {
                    reason
                };
                self.writer.finish(out, reason);
                self.stopped = true;
                if let Some(u) = self.usage {
                    self.complete(out, u);
                }
            }
            "metadata" => {
                let usage = serde_json::from_slice::<MetadataEvent>(payload)
                    .ok()
                    .and_then(|e| e.usage);
                if let Some(u) = usage {
                    let u = u.to_openai();
                    self.usage = Some(u);
                    if self.stopped {
                        self.complete(out, u);
                    }
                }
            }
            "contentBlockStop" => {
                // The response_format tool called with no input: its answer is `{}`.
                if let Some((b, false)) = self.json_block {
                    let index = serde_json::from_slice::<BlockStopEvent>(payload)
                        .map_or(None, |e| Some(e.index));
                    if index == Some(b) {
                        self.json_block = Some((b, true));
                        self.writer.content(out, "{}");
                    }
                }
            }
            // messageStart (role chunk written above), unknown events.
            _ => {}
        }
    }

    fn complete(&mut self, out: &mut Vec<u8>, u: Usage) {
        self.writer.usage(out, u);
        self.writer.done(out);
        self.end = Some(StreamEnd::Complete);
    }
}

impl StreamTranslator for ConverseStream {
    fn ended(&self) -> bool {
        self.state.end.is_some()
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.state.writer.final_response()
    }

    fn answer(&mut self) -> Option<&mut crate::translate::StreamAnswer> {
        Some(self.state.writer.answer())
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.state.end.is_some() {
            return;
        }
        let state = &mut self.state;
        if self
            .decoder
            .feed(chunk, |m| state.on_frame(m, out))
            .is_err()
            && state.end.is_none()
        {
            state.writer.truncated(out);
            state.end = Some(StreamEnd::Truncated);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let s = &mut self.state;
        if let Some(end) = &s.end {
            return end.clone();
        }
        let end = if self.decoder.finish().is_ok() && s.stopped {
            // messageStop without metadata: the answer is whole, the usage unknown.
            s.writer.done(out);
            StreamEnd::Complete
        } else {
            s.writer.truncated(out);
            StreamEnd::Truncated
        };
        s.end = Some(end.clone());
        end
    }

    fn usage(&self) -> Option<Usage> {
        self.state.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings (InvokeModel)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    TitanV2,
    TitanV1,
    Cohere { v4: bool },
}

fn embed_family(model: &str) -> Option<EmbedFamily> {
    if model.contains("amazon.titan-embed-text-v2") {
        Some(EmbedFamily::TitanV2)
    } else if model.contains("amazon.titan-embed-text-v1")
        || model.contains("amazon.titan-embed-g1-text")
    {
        Some(EmbedFamily::TitanV1)
    } else if model.contains("cohere.embed-") {
        Some(EmbedFamily::Cohere {
            v4: model.contains("cohere.embed-v4"),
        })
    } else {
        None
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanBody<'a> {
    input_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<bool>,
}

#[derive(Serialize)]
struct CohereBody<'a> {
    texts: &'a [String],
    input_type: &'static str,
    embedding_types: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u64>,
}

/// Cohere embed's limit of texts per call.
const COHERE_MAX_TEXTS: usize = 96;

fn bad_dimensions(model: &str, allowed: &str) -> InvalidRequest {
    InvalidRequest::new(
        format!("Invalid 'dimensions': {model} {allowed}."),
        Some("dimensions"),
    )
}

/// Builds the InvokeModel call(s) for an embeddings request.
pub fn prepare_embeddings(
    t: &Target<'_>,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsCall, InvalidRequest> {
    let model = t.upstream_model;
    let Some(family) = embed_family(model) else {
        return Err(InvalidRequest::new(
            format!("Invalid 'model': Bedrock model '{model}' is not a supported embedding model (amazon.titan-embed-text-v1/-v2, amazon.titan-embed-g1-text-02, cohere.embed-*)."),
            Some("model"),
        ));
    };
    let bodies = match family {
        EmbedFamily::TitanV2 => {
            if let Some(d) = req.dimensions {
                if !matches!(d, 256 | 512 | 1024) {
                    return Err(bad_dimensions(model, "supports 256, 512 or 1024 dimensions"));
                }
            }
            req.inputs
                .iter()
                .map(|text| {
                    serde_json::to_vec(&TitanBody {
                        input_text: text,
                        dimensions: req.dimensions,
                        normalize: Some(true),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        }
        EmbedFamily::TitanV1 => {
            if req.dimensions.is_some() {
                return Err(bad_dimensions(model, "does not support choosing dimensions"));
            }
            req.inputs
                .iter()
                .map(|text| {
                    serde_json::to_vec(&TitanBody {
                        input_text: text,
                        dimensions: None,
                        normalize: None,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        }
        EmbedFamily::Cohere { v4 } => {
            if req.inputs.len() > COHERE_MAX_TEXTS {
                return Err(InvalidRequest::new(
                    format!(
                        "Invalid 'input': {model} embeds at most {COHERE_MAX_TEXTS} texts per request; got {}.",
                        req.inputs.len()
                    ),
                    Some("input"),
                ));
            }
            let output_dimension = match req.dimensions {
                None => None,
                Some(d) if v4 && matches!(d, 256 | 512 | 1024 | 1536) => Some(d),
                Some(_) if v4 => {
                    return Err(bad_dimensions(model, "supports 256, 512, 1024 or 1536 dimensions"))
                }
                Some(_) => {
                    return Err(bad_dimensions(model, "does not support choosing dimensions"))
                }
            };
            serde_json::to_vec(&CohereBody {
                texts: &req.inputs,
                input_type: "search_document",
                embedding_types: ["float"],
                output_dimension,
            })
            .map(|b| vec![b])
        }
    }
    .expect("serializing to a Vec cannot fail");
    let mut dropped = Vec::new();
    if req.user.is_some() {
        dropped.push("user".to_owned());
    }
    dropped.extend(req.other.iter().map(|(k, _)| k.clone()));
    Ok(EmbeddingsCall {
        path: model_path(model, "invoke"),
        bodies,
        headers: Vec::new(),
        dropped,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanAnswer {
    embedding: Vec<f32>,
    input_text_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct CohereAnswer {
    embeddings: CohereEmbeddings,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    /// `response_type: "embeddings_floats"`.
    Floats(Vec<Vec<f32>>),
    /// `response_type: "embeddings_by_type"` (when `embedding_types` was sent).
    ByType { float: Vec<Vec<f32>> },
}

/// Combines the InvokeModel answers (one per body, in order).
pub fn parse_embeddings(t: &Target<'_>, answers: &[Answer<'_>]) -> Result<Embeddings, BadAnswer> {
    let Some(family) = embed_family(t.upstream_model) else {
        return Err(BadAnswer(format!(
            "'{}' is not a Bedrock embedding model",
            t.upstream_model
        )));
    };
    if answers.is_empty() {
        return Err(BadAnswer("no Bedrock embeddings answer".into()));
    }
    let mut out = Embeddings::default();
    match family {
        EmbedFamily::TitanV1 | EmbedFamily::TitanV2 => {
            out.vectors.reserve(answers.len());
            for a in answers {
                let t: TitanAnswer = serde_json::from_slice(a.body)
                    .map_err(|e| BadAnswer(format!("unreadable Titan embeddings answer: {e}")))?;
                out.prompt_tokens += t
                    .input_text_token_count
                    .or(a.input_tokens_header)
                    .unwrap_or(0);
                out.vectors.push(t.embedding);
            }
        }
        EmbedFamily::Cohere { .. } => {
            for a in answers {
                let c: CohereAnswer = serde_json::from_slice(a.body)
                    .map_err(|e| BadAnswer(format!("unreadable Cohere embeddings answer: {e}")))?;
                out.prompt_tokens += a.input_tokens_header.unwrap_or(0);
                match c.embeddings {
                    CohereEmbeddings::Floats(v) | CohereEmbeddings::ByType { float: v } => {
                        out.vectors.extend(v)
                    }
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// How one Bedrock exception is reported to the client.
struct Mapped {
    status: u16,
    code: String,
    /// The gateway's own credentials were refused.
    credential: bool,
}

const CREDENTIAL_EXCEPTIONS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
];

fn says_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "too long",
        "too many tokens",
        "too many input tokens",
        "context length",
        "context window",
        "maximum context",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// The exception name as the service model spells it (stream headers use lowerCamel).
fn pascal(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Maps an exception name (any case of its first letter; empty if unknown) and the HTTP
/// status it came with.
fn classify(name: &str, status: u16, message: &str) -> Mapped {
    let code = pascal(name);
    let is = |n: &str| code.eq_ignore_ascii_case(n);
    let m = |status: u16, code: &str| Mapped {
        status,
        code: code.to_owned(),
        credential: false,
    };
    if is("ValidationException") {
        return if says_too_long(message) {
            m(400, "context_length_exceeded")
        } else {
            m(400, &code)
        };
    }
    if is("ServiceQuotaExceededException")
        || is("ThrottlingException")
        || is("ModelNotReadyException")
        || is("TooManyRequestsException")
    {
        return m(429, "rate_limit_exceeded");
    }
    if is("AccessDeniedException") {
        return m(403, &code);
    }
    if is("ResourceNotFoundException") {
        return m(404, "model_not_found");
    }
    if is("ModelTimeoutException") {
        return m(504, &code);
    }
    if is("ModelErrorException") || is("ModelStreamErrorException") {
        return m(502, &code);
    }
    if is("InternalServerException") || is("InternalFailure") {
        return m(500, &code);
    }
    if is("ServiceUnavailableException") {
        return m(503, &code);
    }
    if CREDENTIAL_EXCEPTIONS.iter().any(|n| is(n)) {
        return Mapped {
            status: 502,
            code,
            credential: true,
        };
    }
    // Unknown or missing exception name: go by the HTTP status.
    let by_status = match status {
        401 => {
            return Mapped {
                status: 502,
                code,
                credential: true,
            }
        }
        408 => 504,
        424 => 502,
        429 => return m(429, "rate_limit_exceeded"),
        529 => 503,
        s @ 400..=499 => s,
        503 => 503,
        _ => {
            if status >= 500 {
                500
            } else {
                502
            }
        }
    };
    m(by_status, &code)
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(rename = "Message", borrow)]
    message_upper: Option<Str<'a>>,
    #[serde(rename = "__type", borrow)]
    kind: Option<Str<'a>>,
}

/// Maps a Bedrock error response to the client's OpenAI error.
pub fn error(status: u16, body: &[u8], hints: &ErrorHints<'_>) -> ErrorReply {
    let parsed = serde_json::from_slice::<ErrorBody<'_>>(body).ok();
    let name_of = |s: &str| -> String {
        // `ValidationException:http://internal.amazon.com/…` or `com.amazon…#ValidationException`.
        let s = s.split(':').next().unwrap_or("");
        s.rsplit('#').next().unwrap_or("").trim().to_owned()
    };
    let name = hints
        .aws_error_type
        .map(name_of)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|p| p.kind.as_ref())
                .map(|k| name_of(k.as_str()))
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_default();
    let provider_message = parsed
        .as_ref()
        .and_then(|p| p.message.as_ref().or(p.message_upper.as_ref()))
        .map(Str::as_str)
        .filter(|m| !m.is_empty());
    let message = provider_message
        .map(str::to_owned)
        .unwrap_or_else(|| format!("Provider returned HTTP {status}."));
    let mapped = classify(&name, status, &message);
    let message = if mapped.credential {
        format!("The provider rejected the gateway's credentials. {message}")
    } else {
        message
    };
    let code = (!mapped.code.is_empty()).then_some(mapped.code.as_str());
    ErrorReply::new(mapped.status, &message, code)
}

/// A tool call id as Converse accepts it (`[a-zA-Z0-9_-]+`, at most 64 characters). Ids from
/// other providers can be longer or use other characters (e.g. a Gemini id carrying a thought
/// signature, after a fallback); those become `tu_` + a 64-bit FNV-1a hash of the whole id +
/// `_` + the id's first allowed characters, the same for the call and its result, so the pair
/// still matches and stays recognisable.
fn tool_use_id(id: &str) -> Cow<'_, str> {
    // A Gemini thought signature is no use here (and makes the id long): gone first.
    let id = match super::gemini::host_tool_id(id) {
        Cow::Borrowed(id) => id,
        Cow::Owned(short) => return Cow::Owned(short),
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.len() <= 64 && id.chars().all(allowed) {
        return Cow::Borrowed(id);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let prefix: String = id.chars().filter(|c| allowed(*c)).take(40).collect();
    Cow::Owned(format!("tu_{hash:016x}_{prefix}"))
}

// ---------------------------------------------------------------------------------------------
// Translators
// ---------------------------------------------------------------------------------------------

/// The translator for [`crate::translate::Dialect::BedrockConverse`]: chat only.
pub struct BedrockConverse;

impl Translator for BedrockConverse {
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
        converse_stream(ctx)
    }

    fn translate_error(
        &self,
        _t: &Target<'_>,
        status: u16,
        body: &[u8],
        hints: &ErrorHints<'_>,
    ) -> ErrorReply {
        error(status, body, hints)
    }
}

/// The translator for [`crate::translate::Dialect::BedrockEmbed`]: embeddings only; chat is
/// refused.
pub struct BedrockEmbed;

impl Translator for BedrockEmbed {
    fn prepare_chat(
        &self,
        t: &Target<'_>,
        _req: &ChatRequest,
    ) -> Result<UpstreamRequest, InvalidRequest> {
        Err(not_for(t.dialect, "chat translation"))
    }

    fn parse_chat(&self, t: &Target<'_>, _answer: &Answer<'_>) -> Result<Completion, BadAnswer> {
        Err(BadAnswer(format!(
            "{} answers are not translated",
            t.dialect.as_str()
        )))
    }

    /// Not reached (an embedding model's chat request is refused before it is sent); any
    /// translator will do.
    fn chat_stream(&self, _t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
        super::anthropic::sse_stream(ctx)
    }

    fn prepare_embeddings(
        &self,
        t: &Target<'_>,
        req: &EmbeddingsRequest,
    ) -> Result<EmbeddingsCall, InvalidRequest> {
        prepare_embeddings(t, req)
    }

    fn parse_embeddings(
        &self,
        t: &Target<'_>,
        answers: &[Answer<'_>],
    ) -> Result<Embeddings, BadAnswer> {
        parse_embeddings(t, answers)
    }

    fn translate_error(
        &self,
        _t: &Target<'_>,
        status: u16,
        body: &[u8],
        hints: &ErrorHints<'_>,
    ) -> ErrorReply {
        error(status, body, hints)
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures follow the documented wire shapes: Converse / ConverseStream request and
    //! response syntax from the AWS API reference (API_runtime_Converse.html,
    //! API_runtime_ConverseStream.html) and botocore's `bedrock-runtime` 2023-09-30 service
    //! model (ConverseStreamOutput members, ContentBlockDeltaEvent, MessageStopEvent,
    //! ConverseStreamMetadataEvent, modeled stream exceptions); `reasoningContent` deltas per
    //! the SDKs' ReasoningContentBlockDelta union (text | signature | redactedContent); Titan
    //! and Cohere embeddings per the Bedrock user guide (model-parameters-titan-embed-text,
    //! model-parameters-embed-v3 / -v4).
    use super::*;
    use crate::eventstream::{encode_event, encode_message, HeaderValue};
    use crate::front::FrontDoor;
    use crate::openai::{parse_request, Endpoint};
    use crate::translate::testing::{events, every_split, reassemble};
    use crate::translate::Dialect;
    use serde_json::json;

    const MODEL: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";

    fn target(model: &str) -> Target<'_> {
        Target {
            dialect: Dialect::BedrockConverse,
            upstream_model: model,
            project: None,
            location: None,
            api_version: None,
        }
    }

    fn chat(body: Value) -> ChatRequest {
        let raw = serde_json::to_vec(&body).unwrap();
        ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap()).unwrap()
    }

    fn prep(body: Value) -> Result<UpstreamRequest, InvalidRequest> {
        prepare_chat(&target(MODEL), &chat(body))
    }

    fn native(r: &UpstreamRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn weather_tool() -> Value {
        json!({"type":"function","function":{"name":"get_weather","description":"Weather for a city",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}})
    }

    /// Issue 15.1: Claude on Converse thinks through `additionalModelRequestFields.thinking`
    /// under Anthropic's rules; other families name `reasoning_effort` as dropped.
    #[test]
    fn reasoning_effort_on_converse() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "high", "max_tokens": 100, "temperature": 0.2, "top_p": 0.5});
        for model in [
            MODEL,
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/claude-x",
        ] {
            let r = prepare_chat(&target(model), &chat(body.clone())).unwrap();
            let v = native(&r);
            assert_eq!(
                v["additionalModelRequestFields"],
                json!({"thinking": {"type": "enabled", "budget_tokens": 16384}}),
                "{model}"
            );
            assert_eq!(v["inferenceConfig"], json!({"maxTokens": 16484}));
            assert_eq!(r.dropped, ["temperature", "top_p"]);
        }
        let r = prepare_chat(
            &target("meta.llama3-70b-instruct-v1:0"),
            &chat(body.clone()),
        )
        .unwrap();
        let v = native(&r);
        assert!(v.get("additionalModelRequestFields").is_none());
        assert_eq!(v["inferenceConfig"]["maxTokens"], 100);
        assert_eq!(r.dropped, ["reasoning_effort"]);
        let forced = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "low", "tools": [weather_tool()], "tool_choice": "required"});
        assert_eq!(
            prep(forced).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
        assert!(native(
            &prep(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap()
        )
        .get("additionalModelRequestFields")
        .is_none());
    }

    /// Issue 15.2: Claude's signed reasoning goes back as `reasoningContent` blocks first in
    /// the assistant turn and the tool-loop continuation keeps thinking; other models never
    /// get them.
    #[test]
    fn signed_reasoning_returns_in_converse_tool_loops() {
        let body = json!({"model": "m", "reasoning_effort": "low", "tools": [weather_tool()],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "thinking_blocks": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "c2ln"},
                    {"type": "redacted_thinking", "data": "cmVk"}],
                 "tool_calls": [{"id": "tooluse_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "18C"}]});
        let r = prep(body.clone()).unwrap();
        let v = native(&r);
        assert_eq!(
            v["messages"][1]["content"],
            json!([
                {"reasoningContent": {"reasoningText": {"text": "Use the tool.", "signature": "c2ln"}}},
                {"reasoningContent": {"redactedContent": "cmVk"}},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
            ])
        );
        assert_eq!(
            v["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            1024
        );
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        // A non-Claude model: no reasoning blocks (and its own reasoning_effort rule).
        let v =
            native(&prepare_chat(&target("amazon.nova-pro-v1:0"), &chat(body.clone())).unwrap());
        assert_eq!(v["messages"][1]["content"].as_array().unwrap().len(), 1);
        // Without the blocks: no thinking on the continuation, named.
        let mut unsigned = body;
        unsigned["messages"][1]
            .as_object_mut()
            .unwrap()
            .remove("thinking_blocks");
        let r = prep(unsigned).unwrap();
        assert!(native(&r).get("additionalModelRequestFields").is_none());
        assert_eq!(r.dropped, ["reasoning_effort"]);
    }

    #[test]
    fn rich_request_maps_field_by_field() {
        let r = prep(json!({
            "model": "claude",
            "messages": [
                {"role":"system","content":"Be brief."},
                {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
                {"role":"user","name":"alice","content":[
                    {"type":"text","text":"What is this, and the weather in Paris and London?"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}}]},
                {"role":"assistant","content":"Let me check.","tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"London\"}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18C sunny"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"12C rain"}]},
                {"role":"user","content":"Thanks. And a cat picture?"},
                {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}}]},
                {"role":"assistant","content":"Voici"}
            ],
            "max_tokens": 300, "temperature": 1.5, "top_p": 0.9, "stop": ["END", "STOP"],
            "seed": 7, "user": "u1", "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "parallel_tool_calls": true, "n": 1, "logit_bias": {"50256": -100}, "logprobs": true,
            "tools": [{"type":"function","function":{"name":"get_weather","description":"Weather for a city",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}],
            "tool_choice": "auto"
        }))
        .unwrap();
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
        );
        assert_eq!(r.answer, AnswerFormat::Json);
        assert!(r.headers.is_empty());
        let v = native(&r);
        assert_eq!(
            v["system"],
            json!([{"text":"Be brief."},{"text":"Answer in French."}])
        );
        assert_eq!(
            v["messages"][0],
            json!({"role":"user","content":[
                {"text":"What is this, and the weather in Paris and London?"},
                {"image":{"format":"png","source":{"bytes":"iVBORw0KGgo="}}}]})
        );
        assert_eq!(
            v["messages"][1],
            json!({"role":"assistant","content":[
                {"text":"Let me check."},
                {"toolUse":{"toolUseId":"call_1","name":"get_weather","input":{"city":"Paris"}}},
                {"toolUse":{"toolUseId":"call_2","name":"get_weather","input":{"city":"London"}}}]})
        );
        // Both tool results and the following user messages form one user turn.
        assert_eq!(
            v["messages"][2],
            json!({"role":"user","content":[
                {"toolResult":{"toolUseId":"call_1","content":[{"text":"18C sunny"}],"status":"success"}},
                {"toolResult":{"toolUseId":"call_2","content":[{"text":"12C rain"}],"status":"success"}},
                {"text":"Thanks. And a cat picture?"},
                {"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}]})
        );
        assert_eq!(
            v["messages"][3],
            json!({"role":"assistant","content":[{"text":"Voici"}]})
        );
        assert_eq!(v["messages"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens":300,"temperature":1.0,"topP":0.9,"stopSequences":["END","STOP"]})
        );
        assert_eq!(
            v["toolConfig"],
            json!({"tools":[{"toolSpec":{"name":"get_weather","description":"Weather for a city",
                "inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}}],
                "toolChoice":{"auto":{}}})
        );
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(
            r.dropped,
            vec![
                "messages[2].name",
                "messages[2].content[1].image_url.detail",
                "tools[0].function.strict",
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "parallel_tool_calls",
                "user",
                "logit_bias",
                "logprobs",
            ]
        );
    }

    #[test]
    fn minimal_stream_request_and_model_id_encoding() {
        let req = chat(
            json!({"model":"c","messages":[{"role":"user","content":"hi"}],"stream":true,
            "stream_options":{"include_usage":true}}),
        );
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";
        let r = prepare_chat(&target(arn), &req).unwrap();
        assert_eq!(
            r.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"
        );
        assert_eq!(r.answer, AnswerFormat::EventStream);
        assert_eq!(
            native(&r),
            json!({"messages":[{"role":"user","content":[{"text":"hi"}]}]})
        );
        assert!(r.dropped.is_empty());
        assert_eq!(model_path("a b~c_d.e-f", "x"), "/model/a%20b~c_d.e-f/x");
    }

    #[test]
    fn temperature_is_clamped_to_converse_range() {
        for (t, want) in [(0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (2.0, 1.0)] {
            let r = prep(
                json!({"model":"c","messages":[{"role":"user","content":"x"}],"temperature":t}),
            )
            .unwrap();
            assert_eq!(native(&r)["inferenceConfig"], json!({"temperature": want}));
        }
    }

    #[test]
    fn every_rejection_names_its_parameter() {
        let user = json!({"role":"user","content":"hi"});
        let img = |url: &str| json!({"type":"image_url","image_url":{"url":url}});
        let call = |args: &str| {
            json!({"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"f","arguments":args}}]})
        };
        for (body, param) in [
            (json!({"model":"c","messages":[user],"n":2}), "n"),
            (
                json!({"model":"c","messages":[user],"response_format":{"type":"json_object"},
                    "tools":[weather_tool()],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}),
                "response_format",
            ),
            (
                json!({"model":"c","messages":[user],"response_format":{"type":"json_schema",
                    "json_schema":{"name":"x","schema":{"type":"string"}}}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"model":"c","messages":[user],"tools":[weather_tool(),
                    {"type":"function","function":{"name":JSON_TOOL}}]}),
                "tools[1].function.name",
            ),
            (
                json!({"model":"c","messages":[{"role":"user","content":[{"type":"text","text":"see"},
                    img("https://example.com/cat.png")]}]}),
                "messages[0].content[1].image_url",
            ),
            (
                json!({"model":"c","messages":[{"role":"user","content":[img("data:image/bmp;base64,Qk0=")]}]}),
                "messages[0].content[0].image_url",
            ),
            (
                json!({"model":"c","messages":[{"role":"user","content":[img("ftp://x/y.png")]}]}),
                "messages[0].content[0].image_url",
            ),
            (
                json!({"model":"c","messages":[{"role":"assistant","content":"Hello"},user]}),
                "messages[0]",
            ),
            (
                json!({"model":"c","messages":[{"role":"system","content":"s"},{"role":"assistant","content":"Hello"},user]}),
                "messages[1]",
            ),
            (
                json!({"model":"c","messages":[{"role":"system","content":"s"}]}),
                "messages",
            ),
            (
                json!({"model":"c","messages":[user, call("[1,2]")]}),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!({"model":"c","messages":[user, call("{not json")]}),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!({"model":"c","messages":[{"role":"user","content":""}]}),
                "messages[0].content",
            ),
            (
                json!({"model":"c","messages":[{"role":"system","content":[img("data:image/png;base64,AA==")]},user]}),
                "messages[0].content[0].image_url",
            ),
            (
                json!({"model":"c","messages":[user,{"role":"assistant","content":[img("data:image/png;base64,AA==")]}]}),
                "messages[1].content[0].image_url",
            ),
            (
                json!({"model":"c","messages":[user],"tool_choice":"required"}),
                "tool_choice",
            ),
        ] {
            let err = prep(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
            assert!(err.message.contains(param), "{}", err.message);
        }
        // Empty arguments mean no arguments.
        let r = prep(json!({"model":"c","messages":[user, call(""), {"role":"tool","tool_call_id":"c1","content":"ok"}],
            "tools":[weather_tool()]}))
        .unwrap();
        assert_eq!(
            native(&r)["messages"][1]["content"][0]["toolUse"]["input"],
            json!({})
        );
    }

    #[test]
    fn tool_choice_variants() {
        let ask = json!([{"role":"user","content":"weather in Paris?"}]);
        let history = json!([
            {"role":"user","content":"weather in Paris?"},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_9","content":"sunny"}
        ]);
        let with = |tc: Value, msgs: &Value| {
            prep(json!({"model":"c","messages":msgs,"tools":[weather_tool()],"tool_choice":tc}))
                .unwrap()
        };
        assert_eq!(
            native(&with(json!("auto"), &ask))["toolConfig"]["toolChoice"],
            json!({"auto":{}})
        );
        assert_eq!(
            native(&with(json!("required"), &ask))["toolConfig"]["toolChoice"],
            json!({"any":{}})
        );
        assert_eq!(
            native(&with(
                json!({"type":"function","function":{"name":"get_weather"}}),
                &ask
            ))["toolConfig"]["toolChoice"],
            json!({"tool":{"name":"get_weather"}})
        );
        // No tool_choice: tools without a toolChoice (the model decides).
        let r = prep(json!({"model":"c","messages":ask,"tools":[weather_tool()]})).unwrap();
        assert!(native(&r)["toolConfig"].get("toolChoice").is_none());
        assert_eq!(
            native(&r)["toolConfig"]["tools"].as_array().unwrap().len(),
            1
        );
        // none without tool history: no toolConfig at all, nothing lost.
        let r = with(json!("none"), &ask);
        assert!(native(&r).get("toolConfig").is_none());
        assert!(r.dropped.is_empty());
        // none with tool history: Converse needs the toolConfig, so tool_choice is dropped.
        let r = with(json!("none"), &history);
        let v = native(&r);
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["name"],
            "get_weather"
        );
        assert!(v["toolConfig"].get("toolChoice").is_none());
        assert_eq!(r.dropped, vec!["tool_choice"]);
        // Tool history without tools: specs are synthesized from the history.
        let r = prep(json!({"model":"c","messages":history})).unwrap();
        assert_eq!(
            native(&r)["toolConfig"],
            json!({"tools":[{"toolSpec":{"name":"get_weather","inputSchema":{"json":{"type":"object","properties":{}}}}}]})
        );
        assert_eq!(
            native(&r)["messages"][2],
            json!({"role":"user","content":[{"toolResult":{"toolUseId":"call_9","content":[{"text":"sunny"}],"status":"success"}}]})
        );
    }

    #[test]
    fn legacy_completion_prompt_becomes_one_user_turn() {
        let p = parse_request(
            Endpoint::Completions,
            br#"{"model":"m","prompt":"Say hi","echo":true}"#,
        )
        .unwrap();
        let req = ChatRequest::from_parsed(&p).unwrap();
        let r = prepare_chat(&target("meta.llama3-70b-instruct-v1:0"), &req).unwrap();
        assert_eq!(
            native(&r),
            json!({"messages":[{"role":"user","content":[{"text":"Say hi"}]}],"inferenceConfig":{"maxTokens":16}})
        );
        assert_eq!(r.dropped, vec!["echo"]);
    }

    // ---- answers ----

    #[test]
    fn parses_text_answer_with_cached_usage() {
        let c = parse_chat(
            br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello! "},{"text":"How can I help?"}]}},
                "stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":8,"totalTokens":20,
                "cacheReadInputTokens":100,"cacheWriteInputTokens":5},"metrics":{"latencyMs":401}}"#,
        )
        .unwrap();
        assert_eq!(c.id, None);
        assert_eq!(c.choices.len(), 1);
        let ch = &c.choices[0];
        assert_eq!(ch.content.as_deref(), Some("Hello! How can I help?"));
        assert_eq!(ch.reasoning, None);
        assert!(ch.tool_calls.is_empty());
        assert_eq!(ch.finish_reason, Some(FinishReason::Stop));
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens
            ),
            (117, 8, 125, 100)
        );
    }

    #[test]
    fn parses_tool_calls_and_reasoning() {
        let c = parse_chat(
            br#"{"output":{"message":{"role":"assistant","content":[{"text":"I'll check."},
                {"toolUse":{"toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q","name":"get_weather","input":{"city":"Paris"}}},
                {"toolUse":{"toolUseId":"tooluse_2","name":"get_weather","input":{"city":"London"}}}]}},
                "stopReason":"tool_use","usage":{"inputTokens":30,"outputTokens":40,"totalTokens":70}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content.as_deref(), Some("I'll check."));
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            ch.tool_calls,
            vec![
                ToolCall {
                    id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ToolCall {
                    id: "tooluse_2".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"London"}"#.into()
                },
            ]
        );
        assert_eq!(c.usage, Some(Usage::new(30, 40)));

        let c = parse_chat(
            br#"{"output":{"message":{"role":"assistant","content":[
                {"reasoningContent":{"reasoningText":{"text":"The user greets me.","signature":"EqoBCkgIARAB"}}},
                {"reasoningContent":{"redactedContent":"ZW5jcnlwdGVk"}},
                {"text":"Hi!"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":9,"totalTokens":14}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.reasoning.as_deref(), Some("The user greets me."));
        assert_eq!(ch.content.as_deref(), Some("Hi!"));
        let rendered = crate::chat::response::render(
            &c,
            &ResponseCtx {
                client_model: "m",
                created: 1,
                fallback_id: "r",
                front: FrontDoor::Chat,
                include_usage: false,
                echo: "",
            },
        );
        let v: Value = serde_json::from_slice(&rendered).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"],
            "The user greets me."
        );
        assert_eq!(
            v["choices"][0]["message"]["thinking_blocks"],
            json!([
                {"type": "thinking", "thinking": "The user greets me.", "signature": "EqoBCkgIARAB"},
                {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
            ])
        );
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::StopSequence),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("malformed_model_output", FinishReason::Stop),
            ("malformed_tool_use", FinishReason::Stop),
            ("something_new", FinishReason::Stop),
        ] {
            let body = format!(
                r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"x"}}]}}}},"stopReason":"{stop}","usage":{{"inputTokens":1,"outputTokens":1,"totalTokens":2}}}}"#
            );
            assert_eq!(
                parse_chat(body.as_bytes()).unwrap().choices[0].finish_reason,
                Some(want),
                "{stop}"
            );
        }
    }

    #[test]
    fn unreadable_answers_are_bad_answers() {
        assert!(parse_chat(b"<html>").is_err());
        assert!(parse_chat(b"{}").is_err());
        assert!(parse_chat(br#"{"output":{}}"#).is_err());
        assert!(parse_chat(br#"{"output":{"message":{"content":[{"text":5}]}}}"#).is_err());
    }

    // ---- streams ----

    fn ev(kind: &str, payload: Value) -> Vec<u8> {
        encode_event(kind, &serde_json::to_vec(&payload).unwrap())
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        encode_message(
            &[
                (":exception-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            &serde_json::to_vec(&json!({"message": message})).unwrap(),
        )
    }

    fn ctx(include_usage: bool, legacy: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "claude",
            created: 1_700_000_000,
            fallback_id: "req-1",
            front: FrontDoor::legacy(legacy),
            include_usage,
            echo: "",
        }
    }

    fn run(input: &[u8], include_usage: bool) -> (Vec<u8>, StreamEnd, Option<Usage>) {
        every_split(|| converse_stream(&ctx(include_usage, false)), input)
    }

    fn text_stream() -> Vec<u8> {
        [
            ev("messageStart", json!({"role":"assistant"})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"text":" wörld \"q\""}})),
            ev("contentBlockStop", json!({"contentBlockIndex":0,"p":"abcd"})),
            ev("someFutureEvent", json!({"x":1})),
            ev("messageStop", json!({"stopReason":"end_turn","p":"abcdefgh"})),
            ev("metadata", json!({"usage":{"inputTokens":10,"outputTokens":3,"totalTokens":13,"cacheReadInputTokens":4},
                "metrics":{"latencyMs":200},"p":"abc"})),
        ]
        .concat()
    }

    #[test]
    fn text_stream_with_usage() {
        let (out, end, usage) = run(&text_stream(), true);
        assert_eq!(end, StreamEnd::Complete);
        let mut want = Usage::new(14, 3);
        want.cached_tokens = 4;
        assert_eq!(usage, Some(want));
        assert_eq!(
            reassemble(&out),
            ("Hello wörld \"q\"".into(), vec![], Some("stop".into()))
        );
        let evs = events(&out);
        assert_eq!(
            evs[0]["choices"][0]["delta"],
            json!({"role":"assistant","content":""})
        );
        assert_eq!(evs[0]["id"], "chatcmpl-req-1");
        assert_eq!(evs[0]["model"], "claude");
        let n = evs.len();
        assert_eq!(evs[n - 1], json!("[DONE]"));
        assert_eq!(evs[n - 2]["choices"], json!([]));
        assert_eq!(evs[n - 2]["usage"]["prompt_tokens"], 14);
        assert_eq!(
            evs[n - 2]["usage"]["prompt_tokens_details"]["cached_tokens"],
            4
        );
        assert_eq!(evs[n - 3]["choices"][0]["finish_reason"], "stop");

        // Without include_usage: no usage chunk, but the usage is still known.
        let (out, end, usage) = run(&text_stream(), false);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(want));
        assert!(events(&out).iter().all(|e| e.get("usage").is_none()));
    }

    #[test]
    fn first_event_is_written_at_once() {
        let mut t = converse_stream(&ctx(false, false));
        let mut out = Vec::new();
        t.feed(&ev("messageStart", json!({"role":"assistant"})), &mut out);
        assert_eq!(events(&out).len(), 1);
    }

    #[test]
    fn parallel_tool_call_stream() {
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"text":"Checking."}})),
            ev("contentBlockStop", json!({"contentBlockIndex":0})),
            ev("contentBlockStart", json!({"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_a","name":"get_weather"}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}})),
            ev("contentBlockStop", json!({"contentBlockIndex":1})),
            ev("contentBlockStart", json!({"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"tooluse_b","name":"get_weather"}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"city\":\"London\"}"}}})),
            ev("contentBlockStop", json!({"contentBlockIndex":2})),
            ev("messageStop", json!({"stopReason":"tool_use"})),
            ev("metadata", json!({"usage":{"inputTokens":50,"outputTokens":20,"totalTokens":70},"metrics":{"latencyMs":9}})),
        ]
        .concat();
        let (out, end, usage) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(50, 20)));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Checking.");
        assert_eq!(
            calls,
            vec![
                (
                    "tooluse_a".into(),
                    "get_weather".into(),
                    r#"{"city":"Paris"}"#.into()
                ),
                (
                    "tooluse_b".into(),
                    "get_weather".into(),
                    r#"{"city":"London"}"#.into()
                ),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        // The second call's index counts tool calls, not content blocks.
        let second = events(&out)
            .into_iter()
            .find(|e| e["choices"][0]["delta"]["tool_calls"][0]["id"] == "tooluse_b")
            .unwrap();
        assert_eq!(second["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
    }

    #[test]
    fn reasoning_stream_carries_signed_blocks() {
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"Let me think"}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"reasoningContent":{"text":" more."}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"c2lnbmF0dXJl"}}})),
            ev("contentBlockStop", json!({"contentBlockIndex":0})),
            ev("contentBlockDelta", json!({"contentBlockIndex":1,"delta":{"reasoningContent":{"redactedContent":"cmVkYWN0ZWQ="}}})),
            ev("contentBlockDelta", json!({"contentBlockIndex":2,"delta":{"text":"Answer"}})),
            ev("messageStop", json!({"stopReason":"max_tokens"})),
            ev("metadata", json!({"usage":{"inputTokens":3,"outputTokens":30,"totalTokens":33},"metrics":{"latencyMs":9}})),
        ]
        .concat();
        let (out, end, _) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        let reasoning: String = events(&out)
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["reasoning_content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(reasoning, "Let me think more.");
        assert_eq!(
            reassemble(&out),
            ("Answer".into(), vec![], Some("length".into()))
        );
        let blocks: Vec<Value> = events(&out)
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
                json!([{"type": "thinking", "thinking": "Let me think more.", "signature": "c2lnbmF0dXJl"}]),
                json!([{"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="}]),
            ]
        );
    }

    #[test]
    fn mid_stream_exception_becomes_an_error_event() {
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"text":"Hel"}}),
            ),
            exception("modelStreamErrorException", "The model failed to stream."),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"text":"ignored"}}),
            ),
            ev("messageStop", json!({"stopReason":"end_turn"})),
        ]
        .concat();
        let (out, end, usage) = run(&input, true);
        assert_eq!(
            end,
            StreamEnd::ProviderError("The model failed to stream.".into())
        );
        assert_eq!(usage, None);
        let evs = events(&out);
        let last = evs.last().unwrap();
        assert_eq!(last["error"]["message"], "The model failed to stream.");
        assert_eq!(last["error"]["type"], "server_error");
        assert_eq!(last["error"]["code"], "ModelStreamErrorException");
        assert!(!evs.contains(&json!("[DONE]")));
        assert_eq!(reassemble(&out).0, "Hel");

        for (kind, typ, code) in [
            (
                "throttlingException",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (
                "validationException",
                "invalid_request_error",
                "ValidationException",
            ),
            (
                "internalServerException",
                "server_error",
                "InternalServerException",
            ),
            (
                "serviceUnavailableException",
                "server_error",
                "ServiceUnavailableException",
            ),
            (
                "modelTimeoutException",
                "timeout_error",
                "ModelTimeoutException",
            ),
        ] {
            let input = [
                ev("messageStart", json!({"role":"assistant"})),
                exception(kind, "nope"),
            ]
            .concat();
            let (out, end, _) = run(&input, false);
            assert_eq!(end, StreamEnd::ProviderError("nope".into()));
            let last = events(&out).pop().unwrap();
            assert_eq!(
                (
                    last["error"]["type"].as_str(),
                    last["error"]["code"].as_str()
                ),
                (Some(typ), Some(code)),
                "{kind}"
            );
        }

        // An unmodeled `error` message.
        let err = encode_message(
            &[
                (":message-type", HeaderValue::String("error".into())),
                (":error-code", HeaderValue::String("InternalFailure".into())),
                (":error-message", HeaderValue::String("boom".into())),
            ],
            b"",
        );
        let (out, end, _) = run(
            &[ev("messageStart", json!({"role":"assistant"})), err].concat(),
            false,
        );
        assert_eq!(end, StreamEnd::ProviderError("boom".into()));
        assert_eq!(
            events(&out).pop().unwrap()["error"]["code"],
            "InternalFailure"
        );
    }

    #[test]
    fn eof_before_message_stop_is_truncated() {
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"text":"Hel"}}),
            ),
        ]
        .concat();
        let (out, end, _) = run(&input, true);
        assert_eq!(end, StreamEnd::Truncated);
        assert_eq!(
            events(&out).pop().unwrap()["error"]["code"],
            "stream_truncated"
        );

        // A frame cut short at EOF (even after messageStop).
        let full = text_stream();
        let (out, end, _) = run(&full[..full.len() - 5], true);
        assert_eq!(end, StreamEnd::Truncated);
        assert_eq!(reassemble(&out).2.as_deref(), Some("stop"));
        assert_eq!(
            events(&out).pop().unwrap()["error"]["code"],
            "stream_truncated"
        );
    }

    #[test]
    fn corrupt_frame_is_truncated() {
        let first = ev("messageStart", json!({"role":"assistant"}));
        let mut second = ev(
            "contentBlockDelta",
            json!({"contentBlockIndex":0,"delta":{"text":"Hello"}}),
        );
        let n = second.len();
        second[n - 8] ^= 0x20; // inside the payload: message CRC mismatch
        let input = [
            first,
            second,
            ev("messageStop", json!({"stopReason":"end_turn"})),
        ]
        .concat();
        let (out, end, _) = run(&input, false);
        assert_eq!(end, StreamEnd::Truncated);
        let evs = events(&out);
        assert_eq!(evs.len(), 2, "role chunk, then the error");
        assert_eq!(evs[1]["error"]["code"], "stream_truncated");
    }

    #[test]
    fn message_stop_without_metadata_completes() {
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"text":"Hi"}}),
            ),
            ev("messageStop", json!({"stopReason":"stop_sequence"})),
        ]
        .concat();
        let (out, end, usage) = run(&input, true);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, None);
        assert_eq!(events(&out).pop().unwrap(), json!("[DONE]"));
        assert_eq!(reassemble(&out), ("Hi".into(), vec![], Some("stop".into())));
    }

    #[test]
    fn legacy_completion_stream() {
        let (out, end, _) = every_split(|| converse_stream(&ctx(false, true)), &text_stream());
        assert_eq!(end, StreamEnd::Complete);
        let evs = events(&out);
        assert_eq!(evs[0]["object"], "text_completion");
        assert_eq!(evs[0]["choices"][0]["text"], "Hello");
        assert_eq!(evs[0]["id"], "cmpl-req-1");
    }

    // ---- embeddings ----

    fn emb(body: Value) -> EmbeddingsRequest {
        let Value::Object(m) = body else { panic!() };
        EmbeddingsRequest::from_body(&m).unwrap()
    }

    fn embed_target(model: &str) -> Target<'_> {
        Target {
            dialect: Dialect::BedrockEmbed,
            ..target(model)
        }
    }

    fn bodies(c: &EmbeddingsCall) -> Vec<Value> {
        c.bodies
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    #[test]
    fn titan_embeddings_one_call_per_input() {
        let t = embed_target("amazon.titan-embed-text-v2:0");
        let c = prepare_embeddings(&t, &emb(json!({"model":"e","input":["a","b"],"dimensions":256,"user":"u","input_type":"query"}))).unwrap();
        assert_eq!(c.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(
            bodies(&c),
            vec![
                json!({"inputText":"a","dimensions":256,"normalize":true}),
                json!({"inputText":"b","dimensions":256,"normalize":true}),
            ]
        );
        assert_eq!(c.dropped, vec!["user", "input_type"]);
        let c = prepare_embeddings(&t, &emb(json!({"model":"e","input":"a"}))).unwrap();
        assert_eq!(bodies(&c), vec![json!({"inputText":"a","normalize":true})]);
        let err = prepare_embeddings(&t, &emb(json!({"model":"e","input":"a","dimensions":300})))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));

        for model in [
            "amazon.titan-embed-text-v1",
            "amazon.titan-embed-g1-text-02",
        ] {
            let t = embed_target(model);
            let c = prepare_embeddings(&t, &emb(json!({"model":"e","input":["a","b"]}))).unwrap();
            assert_eq!(
                bodies(&c),
                vec![json!({"inputText":"a"}), json!({"inputText":"b"})]
            );
            let err =
                prepare_embeddings(&t, &emb(json!({"model":"e","input":"a","dimensions":256})))
                    .unwrap_err();
            assert_eq!(err.param.as_deref(), Some("dimensions"));
        }
    }

    #[test]
    fn cohere_embeddings_one_call() {
        let t = embed_target("cohere.embed-english-v3");
        let c = prepare_embeddings(&t, &emb(json!({"model":"e","input":["a","b"]}))).unwrap();
        assert_eq!(c.path, "/model/cohere.embed-english-v3/invoke");
        assert_eq!(
            bodies(&c),
            vec![
                json!({"texts":["a","b"],"input_type":"search_document","embedding_types":["float"]})
            ]
        );
        let err = prepare_embeddings(&t, &emb(json!({"model":"e","input":"a","dimensions":256})))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));
        let many: Vec<String> = (0..97).map(|i| format!("t{i}")).collect();
        let err = prepare_embeddings(&t, &emb(json!({"model":"e","input":many}))).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
        assert!(prepare_embeddings(&t, &emb(json!({"model":"e","input":many[..96]}))).is_ok());

        let t = embed_target("us.cohere.embed-v4:0");
        let c = prepare_embeddings(&t, &emb(json!({"model":"e","input":"a","dimensions":1024})))
            .unwrap();
        assert_eq!(
            bodies(&c),
            vec![
                json!({"texts":["a"],"input_type":"search_document","embedding_types":["float"],"output_dimension":1024})
            ]
        );
        let err = prepare_embeddings(&t, &emb(json!({"model":"e","input":"a","dimensions":100})))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));

        let err = prepare_embeddings(
            &embed_target("amazon.titan-image-generator-v1"),
            &emb(json!({"model":"e","input":"a"})),
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));
    }

    #[test]
    fn parses_embeddings_answers() {
        let t = embed_target("amazon.titan-embed-text-v2:0");
        let a1 = br#"{"embedding":[0.1,-0.2],"inputTextTokenCount":3,"embeddingsByType":{"float":[0.1,-0.2]}}"#;
        let a2 = br#"{"embedding":[0.3,0.4],"inputTextTokenCount":4,"embeddingsByType":{"float":[0.3,0.4]}}"#;
        let e = parse_embeddings(
            &t,
            &[
                Answer {
                    body: a1,
                    input_tokens_header: Some(3),
                },
                Answer {
                    body: a2,
                    input_tokens_header: Some(4),
                },
            ],
        )
        .unwrap();
        assert_eq!(e.vectors, vec![vec![0.1f32, -0.2], vec![0.3, 0.4]]);
        assert_eq!(e.prompt_tokens, 7);
        // Titan V1 answer, token count from the header when the body has none.
        let e = parse_embeddings(
            &embed_target("amazon.titan-embed-text-v1"),
            &[Answer {
                body: br#"{"embedding":[1.0]}"#,
                input_tokens_header: Some(2),
            }],
        )
        .unwrap();
        assert_eq!((e.vectors, e.prompt_tokens), (vec![vec![1.0f32]], 2));

        let t = embed_target("cohere.embed-english-v3");
        let by_type = br#"{"id":"a1b2","texts":["a","b"],"embeddings":{"float":[[0.1],[0.2]]},"response_type":"embeddings_by_type"}"#;
        let floats = br#"{"id":"a1b2","texts":["a","b"],"embeddings":[[0.1],[0.2]],"response_type":"embeddings_floats"}"#;
        for body in [&by_type[..], &floats[..]] {
            let e = parse_embeddings(
                &t,
                &[Answer {
                    body,
                    input_tokens_header: Some(7),
                }],
            )
            .unwrap();
            assert_eq!(e.vectors, vec![vec![0.1f32], vec![0.2]]);
            assert_eq!(e.prompt_tokens, 7);
        }
        assert!(parse_embeddings(
            &t,
            &[Answer {
                body: b"{}",
                input_tokens_header: None
            }]
        )
        .is_err());
        assert!(parse_embeddings(&t, &[]).is_err());
    }

    // ---- errors ----

    /// (status, exception, body, client status, client type, client code)
    type ErrorCase = (
        u16,
        &'static str,
        &'static str,
        u16,
        &'static str,
        Option<&'static str>,
    );

    #[test]
    fn error_mapping_table() {
        const AMZN: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
        let cases: &[ErrorCase] = &[
            (
                400,
                "ValidationException",
                r#"{"message":"Malformed input request: #: required key [messages] not found"}"#,
                400,
                "invalid_request_error",
                Some("ValidationException"),
            ),
            (
                400,
                "ValidationException",
                r#"{"message":"Input is too long for requested model."}"#,
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            (
                400,
                "ServiceQuotaExceededException",
                r#"{"message":"Your request exceeds the service quota."}"#,
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                403,
                "AccessDeniedException",
                r#"{"message":"You don't have access to the model with the specified model ID."}"#,
                403,
                "permission_error",
                Some("AccessDeniedException"),
            ),
            (
                404,
                "ResourceNotFoundException",
                r#"{"message":"Could not resolve the foundation model from the provided model identifier."}"#,
                404,
                "not_found_error",
                Some("model_not_found"),
            ),
            (
                408,
                "ModelTimeoutException",
                r#"{"message":"Model has timed out."}"#,
                504,
                "timeout_error",
                Some("ModelTimeoutException"),
            ),
            (
                424,
                "ModelErrorException",
                r#"{"message":"The model failed.","originalStatusCode":500}"#,
                502,
                "server_error",
                Some("ModelErrorException"),
            ),
            (
                429,
                "ThrottlingException",
                r#"{"message":"Too many requests, please wait before trying again."}"#,
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                429,
                "ModelNotReadyException",
                r#"{"message":"Model is not ready."}"#,
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                500,
                "InternalServerException",
                r#"{"message":"Internal error."}"#,
                500,
                "server_error",
                Some("InternalServerException"),
            ),
            (
                503,
                "ServiceUnavailableException",
                r#"{"message":"Service unavailable."}"#,
                503,
                "server_error",
                Some("ServiceUnavailableException"),
            ),
        ];
        for &(status, name, body, want_status, want_type, want_code) in cases {
            let header = format!("{name}{AMZN}");
            let r = error(
                status,
                body.as_bytes(),
                &ErrorHints {
                    aws_error_type: Some(&header),
                },
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.status, want_status, "{name}");
            assert_eq!(v["error"]["type"], want_type, "{name}");
            assert_eq!(v["error"]["code"].as_str(), want_code, "{name}");
            let provider: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["message"], provider["message"], "{name}");
        }
        for name in [
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "IncompleteSignatureException",
            "MissingAuthenticationTokenException",
            "ExpiredTokenException",
        ] {
            let r = error(
                403,
                br#"{"message":"The security token included in the request is invalid."}"#,
                &ErrorHints {
                    aws_error_type: Some(&format!("{name}{AMZN}")),
                },
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.status, 502, "{name}");
            assert_eq!(v["error"]["type"], "server_error");
            assert_eq!(v["error"]["code"], name);
            assert_eq!(
                v["error"]["message"],
                "The provider rejected the gateway's credentials. The security token included in the request is invalid."
            );
        }
        // Name from `__type`, message from `Message`.
        let r = error(
            400,
            br#"{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad"}"#,
            &ErrorHints::default(),
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (
                r.status,
                v["error"]["code"].as_str(),
                v["error"]["message"].as_str()
            ),
            (400, Some("ValidationException"), Some("bad"))
        );
        // Non-JSON bodies and unknown exceptions go by status.
        let r = error(502, b"<html>Bad Gateway</html>", &ErrorHints::default());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(v["error"]["message"], "Provider returned HTTP 502.");
        assert_eq!(v["error"]["code"], Value::Null);
        for (status, want) in [
            (429, 429),
            (408, 504),
            (413, 413),
            (424, 502),
            (401, 502),
            (404, 404),
            (503, 503),
            (500, 500),
        ] {
            assert_eq!(
                error(status, b"", &ErrorHints::default()).status,
                want,
                "{status}"
            );
        }
    }

    #[test]
    fn foreign_tool_call_ids_are_shortened_consistently() {
        let long = format!("call_0__ts_{}", "A".repeat(300));
        let short = tool_use_id(&long);
        assert!(short.len() <= 64 && short.starts_with("tu_"), "{short}");
        assert_eq!(short, tool_use_id(&long));
        assert_ne!(short, tool_use_id(&format!("{long}B")));
        assert_eq!(tool_use_id("toolu_01A-b_c"), "toolu_01A-b_c");
        assert!(tool_use_id("call.1").starts_with("tu_"));
        let body = prep(json!({"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","tool_calls":[{"id": long, "type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id": long, "content":"sunny"}]}))
        .unwrap();
        let v: Value = serde_json::from_slice(&body.body).unwrap();
        let used = v["messages"][1]["content"][0]["toolUse"]["toolUseId"]
            .as_str()
            .unwrap();
        assert_eq!(used, short);
        assert_eq!(
            v["messages"][2]["content"][0]["toolResult"]["toolUseId"],
            used
        );
    }

    // ---- response_format (forced tool) --------------------------------------------------------

    fn person_schema() -> Value {
        json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
            "required":["name","age"],"additionalProperties":false})
    }

    #[test]
    fn response_format_with_thinking_offers_the_json_tool_unforced() {
        // Claude refuses a forced tool while thinking (both features from one request).
        let user = json!({"role":"user","content":"Ann is 31."});
        let r = prep(
            json!({"model":"c","messages":[user],"reasoning_effort":"low",
            "response_format":{"type":"json_object"}}),
        )
        .unwrap();
        let v = native(&r);
        assert_eq!(v["toolConfig"]["toolChoice"], json!({"auto":{}}));
        assert_eq!(v["toolConfig"]["tools"][0]["toolSpec"]["name"], JSON_TOOL);
        assert_eq!(
            v["additionalModelRequestFields"]["thinking"]["type"],
            "enabled"
        );
    }

    #[test]
    fn response_format_becomes_a_forced_tool() {
        let user = json!({"role":"user","content":"Ann is 31."});
        let r = prep(
            json!({"model":"c","messages":[user],"response_format":{"type":"json_schema",
            "json_schema":{"name":"Person","strict":true,"schema":person_schema()}}}),
        )
        .unwrap();
        let tc = &native(&r)["toolConfig"];
        assert_eq!(tc["tools"].as_array().unwrap().len(), 1);
        assert_eq!(tc["tools"][0]["toolSpec"]["name"], JSON_TOOL);
        assert_eq!(
            tc["tools"][0]["toolSpec"]["inputSchema"]["json"],
            person_schema()
        );
        assert_eq!(tc["toolChoice"], json!({"tool":{"name":JSON_TOOL}}));
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        let r =
            prep(json!({"model":"c","messages":[user],"response_format":{"type":"json_object"}}))
                .unwrap();
        assert_eq!(
            native(&r)["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
            json!({"type":"object"})
        );
        // Next to the caller's tools: any tool; with `none`, only the JSON tool.
        for (choice, want) in [
            (json!("auto"), json!({"any":{}})),
            (json!("required"), json!({"any":{}})),
            (json!("none"), json!({"tool":{"name":JSON_TOOL}})),
        ] {
            let r = prep(
                json!({"model":"c","messages":[user],"tools":[weather_tool()],
                "tool_choice":choice,"response_format":{"type":"json_object"}}),
            )
            .unwrap();
            let tc = &native(&r)["toolConfig"];
            let names: Vec<&str> = tc["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["toolSpec"]["name"].as_str().unwrap())
                .collect();
            let want_names: &[&str] = if choice == "none" {
                &[JSON_TOOL]
            } else {
                &["get_weather", JSON_TOOL]
            };
            assert_eq!(names, want_names, "{choice}");
            assert_eq!(tc["toolChoice"], want, "{choice}");
        }
        // Tool history without client tools: synthesized specs plus the forced JSON tool.
        let r = prep(json!({"model":"c","messages":[user,
            {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"ok"}],
            "response_format":{"type":"json_object"}}))
        .unwrap();
        let tc = &native(&r)["toolConfig"];
        assert_eq!(tc["tools"][0]["toolSpec"]["name"], "f");
        assert_eq!(tc["tools"][1]["toolSpec"]["name"], JSON_TOOL);
        assert_eq!(tc["toolChoice"], json!({"tool":{"name":JSON_TOOL}}));
    }

    #[test]
    fn json_tool_answer_becomes_the_content() {
        let c = parse_chat(br#"{"output":{"message":{"role":"assistant","content":[
            {"toolUse":{"toolUseId":"tooluse_1","name":"switchyard_json_response","input":{"name":"Ann","age":31}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15}}"#)
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content.as_deref(), Some(r#"{"age":31,"name":"Ann"}"#));
        assert!(ch.tool_calls.is_empty());
        assert_eq!(ch.finish_reason, Some(FinishReason::Stop));
        let c = parse_chat(br#"{"output":{"message":{"role":"assistant","content":[{"text":"Here:"},
            {"toolUse":{"toolUseId":"t","name":"switchyard_json_response","input":null}}]}},"stopReason":"max_tokens"}"#)
        .unwrap();
        assert_eq!(c.choices[0].content.as_deref(), Some("{}"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
    }

    #[test]
    fn json_tool_stream_becomes_content_deltas() {
        let start = ev(
            "contentBlockStart",
            json!({"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"tooluse_j","name":JSON_TOOL}}}),
        );
        let stop = ev("contentBlockStop", json!({"contentBlockIndex":0}));
        let tail = [
            ev("messageStop", json!({"stopReason":"tool_use"})),
            ev(
                "metadata",
                json!({"usage":{"inputTokens":30,"outputTokens":12,"totalTokens":42}}),
            ),
        ]
        .concat();
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            start.clone(),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"name\": \"A"}}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex":0,"delta":{"toolUse":{"input":"nn\", \"age\": 31}"}}}),
            ),
            stop.clone(),
            tail.clone(),
        ]
        .concat();
        let (out, end, usage) = run(&input, false);
        assert_eq!(
            (end, usage),
            (StreamEnd::Complete, Some(Usage::new(30, 12)))
        );
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, r#"{"name": "Ann", "age": 31}"#);
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        assert!(!String::from_utf8(out).unwrap().contains("tool_calls"));
        // Called with no input at all: `{}`.
        let input = [
            ev("messageStart", json!({"role":"assistant"})),
            start,
            stop,
            tail,
        ]
        .concat();
        let (out, end, _) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(reassemble(&out).0, "{}");
        assert_eq!(reassemble(&out).2.as_deref(), Some("stop"));
    }

    /// Issue 15.5: a `file` part becomes a Converse `document` block (format from the media
    /// type, the name sanitized to Converse's character set); a document with no text part
    /// beside it, or of a type Converse cannot read, is refused by name.
    #[test]
    fn file_parts_become_converse_documents() {
        let r = prep(json!({"model":"c","messages":[{"role":"user","content":[
            {"type":"text","text":"sum up"},
            {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"Q3  report_v2.pdf"}},
            {"type":"file","file":{"file_data":"data:text/plain;base64,aGk="}}]}]}))
        .unwrap();
        assert_eq!(
            native(&r)["messages"][0]["content"],
            json!([{"text":"sum up"},
                {"document":{"format":"pdf","name":"Q3 report-v2-pdf","source":{"bytes":"JVBERi0="}}},
                {"document":{"format":"txt","name":"document-0-2","source":{"bytes":"aGk="}}}])
        );
        for (body, param) in [
            (
                json!({"model":"c","messages":[{"role":"user","content":[
                    {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0="}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model":"c","messages":[{"role":"user","content":[{"type":"text","text":"x"},
                    {"type":"file","file":{"file_data":"data:image/bmp;base64,Qk0="}}]}]}),
                "messages[0].content[1].file",
            ),
        ] {
            assert_eq!(prep(body).err().unwrap().param.as_deref(), Some(param));
        }
        assert_eq!(
            document_name(Some("a/b\u{0}c  (1) [x].PDF"), 0, 0),
            "a-b-c (1) [x]-PDF"
        );
        assert_eq!(document_name(Some("   "), 3, 4), "document-3-4");
        assert_eq!(
            document_name(Some(&"é".repeat(300)), 0, 0).chars().count(),
            200
        );
    }
}
