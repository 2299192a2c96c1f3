//! Vertex AI Gemini: `generateContent`, `streamGenerateContent?alt=sse` and text-embedding
//! `:predict` (PROTOCOLS.md §4).
//!
//! **Paths** (below `https://{location}-aiplatform.googleapis.com`):
//! `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! (JSON answer), `…:streamGenerateContent?alt=sse` (SSE answer) and `…:predict` (embeddings).
//! The project and location come from the provider config; a missing one is a 400 that says
//! so. Path segments are percent-encoded.
//!
//! **Request mapping** (`ChatRequest` → `GenerateContentRequest`):
//! - system + developer messages (wherever they appear) → `systemInstruction.parts[0].text`,
//!   joined by blank lines;
//! - user → `user` turn, assistant → `model` turn (an assistant message last is sent as is:
//!   a prefill); text → `text` parts (empty texts are left out: Vertex rejects them); images:
//!   `data:` URLs → `inlineData{mimeType,data}`, `http(s)://` and `gs://` URLs →
//!   `fileData{mimeType,fileUri}` with the MIME type taken from the file extension (unknown
//!   extension or other scheme → 400 naming `messages[i].content[j].image_url`); `file`
//!   parts (PDFs, user messages) → `inlineData{mimeType,data}`;
//! - assistant `tool_calls` → `functionCall{name,args}` parts (arguments must be a JSON object,
//!   else 400 naming `messages[i].tool_calls[j].function.arguments`; an empty string counts as
//!   `{}`);
//! - `tool` messages → `functionResponse{name,response}` parts in a `user` turn; the name is
//!   looked up from the nearest earlier assistant tool call with that id (unknown id → 400
//!   naming `messages[i].tool_call_id`); `response` is the tool content itself when it is a JSON
//!   object, else `{"content": "<text>"}` (Vertex requires an object). Images in tool results
//!   → 400. Consecutive turns of one role (tool results, a user message after them) are merged
//!   into one turn, as Gemini wants strictly alternating turns.
//! - `generationConfig`: `max_tokens` → `maxOutputTokens`, `temperature` (Gemini accepts 0–2,
//!   the same range as OpenAI: passed unchanged, no clamp), `top_p` → `topP`, `stop` →
//!   `stopSequences`, `seed` (int32 on Vertex; out of range → 400 `seed`), `n` →
//!   `candidateCount` (n > 1 only without streaming: the stream writer renders one choice →
//!   400 `n`), penalties → `presencePenalty`/`frequencyPenalty`; `response_format` json_object
//!   → `responseMimeType: application/json`, json_schema → also `responseSchema`.
//! - JSON Schemas (tool parameters, response schema) are converted to Vertex's OpenAPI-3.0
//!   subset: type names upper-cased, `"type":[X,"null"]` and `anyOf` with `{"type":"null"}` →
//!   `nullable`, `oneOf` → `anyOf`, `const` → one-value `enum`, non-string `enum` values →
//!   strings (+ `format:"enum"`, as Vertex documents for integer enums); `$schema`,
//!   `additionalProperties`, `strict` and every other keyword outside the subset are left out;
//!   `$ref`/`$defs`/`definitions`, `allOf` and tuple `items` → 400 naming the schema's
//!   parameter. A function without properties is declared without `parameters` (Vertex rejects
//!   an OBJECT with no properties).
//! - tools → `tools[0].functionDeclarations`; tool_choice none/auto/required/named →
//!   `toolConfig.functionCallingConfig.mode` NONE/AUTO/ANY/ANY + `allowedFunctionNames`
//!   (`required` without tools → 400 `tool_choice`).
//! - reasoning (`reasoning_effort`, or a Messages client's `thinking`) →
//!   `generationConfig.thinkingConfig` (Gemini API "Gemini thinking" guide,
//!   ai.google.dev/gemini-api/docs/thinking; Vertex AI "Thinking" docs): Gemini 3 models
//!   (`gemini-3…`) get `thinkingLevel` — the effort upper-cased (`MINIMAL`/`LOW`/`MEDIUM`/
//!   `HIGH`; Gemini 3 Pro has only `LOW` and `HIGH`, so minimal/low → `LOW`, medium/high →
//!   `HIGH` there; a budget-only request takes the effort nearest its budget); other models
//!   (2.5) get `thinkingBudget` — the client's budget, else minimal/low 1024, medium 4096,
//!   high 16384 ([`crate::chat::request::Reasoning::budget`]), capped at 24576 (the largest
//!   every 2.5 model accepts). The two must not be sent together (Google answers 400).
//!   `includeThoughts: true` always, so the thought summaries come back as `reasoning_content`.
//!   Models before 2.5 (`gemini-1…`, `gemini-2.0…`) do not think: reasoning is dropped and
//!   named (`reasoning_effort`) there.
//! - dropped (listed in `UpstreamRequest::dropped`): `user`, `parallel_tool_calls` (Gemini
//!   decides on parallel calls itself), message `name`s, image `detail`, tools' `strict`, and
//!   every unknown field in `ChatRequest::other`.
//!
//! **Answers**: `candidates` → choices in `index` order; text parts joined; parts with
//! `thought: true` → `Choice::reasoning`; `functionCall` parts → tool calls with the part's
//! `id` or a synthesized `call_{n}` (n counts calls across the answer), carrying the part's
//! `thoughtSignature` as described below (signatures on text parts are dropped: OpenAI has no
//! slot for them and Google does not validate them); finish reasons per PROTOCOLS 8.1 (`STOP`
//! with a function call → `tool_calls`); a prompt blocked by `promptFeedback.blockReason` (no
//! candidates) → one choice with content `""` and `content_filter`. Usage: `promptTokenCount`
//! (includes cached), `candidatesTokenCount + thoughtsTokenCount` as completion,
//! `cachedContentTokenCount` as cached tokens; `responseId` → the completion id.
//!
//! **Streams** (`alt=sse`): data-only events, each a partial `GenerateContentResponse`
//! (Google ends lines with CRLF; [`SseFramer`] accepts every line end). Text → content, thought
//! text → reasoning, each (complete) `functionCall` → one tool-call start plus its whole
//! arguments; the finish reason is written when it arrives; the last `usageMetadata` wins. There
//! is no `[DONE]`: at EOF the stream is complete if a finish reason (or a prompt block) was
//! seen, else truncated. A `data: {"error":{…}}` event (or the bare JSON error object
//! python-genai also accepts) → one OpenAI error event, mapped as below. Fast path: after the
//! first event, a one-line event that holds nothing but one text part (and fields that change
//! nothing: `role`, count-less `usageMetadata`, `modelVersion`, `createTime`, `responseId`) is
//! recognised byte by byte (`scan`, `fast_text`) and its JSON string literal is copied to the
//! client as is ([`ChunkWriter::content_json`]) when it is in the form `serde_json` writes;
//! every other event takes `parse_event` and the typed parse, with the same client bytes.
//!
//! **Thought signatures** (Gemini API "Thought signatures" guide,
//! ai.google.dev/gemini-api/docs/thought-signatures; Vertex AI
//! cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures). Gemini 3 (and 2.5 with
//! thinking) put an opaque `thoughtSignature` (proto `bytes`, standard base64 in JSON) beside
//! `functionCall` in a part — on the first call of a parallel batch only, on each call of
//! sequential steps — and Gemini 3 answers 400 ("function call `f` in the N. content block is
//! missing a `thought_signature`") when the first function call of any step of the current
//! turn (the model turns after the last user turn with content other than function responses)
//! comes back without it, in its original part. OpenAI has no field for it, so it travels in
//! the tool call id:
//! - id = `{plain}__ts_{s}` where `plain` is the usual id (`call_{n}` or Gemini's own) and `s`
//!   is unpadded URL-safe base64 of the signature bytes followed by their CRC-32 (4 bytes,
//!   big-endian). Only `[A-Za-z0-9_-]` is used. Every other host (after a fallback) gets
//!   [`host_tool_id`] instead: `{plain}_{hash}`, short and without the signature, which only
//!   Gemini can use. The split is at the first `__ts_`; a plain
//!   id that would make it ambiguous, or a signature that is not canonical base64, leaves the
//!   id plain. Size: `len(plain) + 5 + ⌈4(n+4)/3⌉` for an n-byte signature, i.e. the
//!   signature's own base64 length + about 11 (observed Gemini 3 signatures: tens of bytes to
//!   a few KB). OpenAI documents no id limit and its SDKs, LangChain etc. keep ids as opaque
//!   strings; a client that truncates ids loses the signature (checksum), not the call.
//! - Requests: each assistant tool call whose id splits this way gets `thoughtSignature`
//!   (standard base64 — exactly what Vertex sent) back on its own `functionCall` part; ids that
//!   do not split (no separator, bad base64, checksum mismatch, e.g. truncated) are plain ids.
//!   Gemini needs no id (`functionCall`/`functionResponse` are matched by name and order);
//!   tool results find their call by the full id, or else by the plain part.
//! - For Gemini 3 and later (`gemini-N…`, N ≥ 3) the first `functionCall` of each current-turn
//!   model turn that still has no signature (history from another provider, a client that
//!   rewrote ids) gets Google's documented bypass value `skip_thought_signature_validator`
//!   (the Gemini API also accepts `context_engineering_is_the_way_to_go`; Vertex documents the
//!   former). Older turns are not validated and stay as they are; Gemini 2.5 and older get
//!   nothing (they do not validate).
//!
//! **Errors** (§4.6) `{"error":{"code","message","status"}}`: INVALID_ARGUMENT /
//! FAILED_PRECONDITION / OUT_OF_RANGE → 400, UNAUTHENTICATED → 502 (the gateway's credential),
//! PERMISSION_DENIED → 403, NOT_FOUND → 404 `model_not_found`, RESOURCE_EXHAUSTED → 429
//! `rate_limit_exceeded`, DEADLINE_EXCEEDED → 504, UNAVAILABLE → 503, ABORTED /
//! ALREADY_EXISTS → 409, UNIMPLEMENTED → 400 (the model cannot do what was asked; retrying
//! will not help), INTERNAL / UNKNOWN / DATA_LOSS / CANCELLED → 500; `code` is the status
//! string otherwise, or `context_length_exceeded` for Vertex's "input token count … exceeds
//! the maximum number of tokens allowed" 400. Unknown statuses fall back to the HTTP status.
//!
//! **Embeddings** (`:predict`): `{"instances":[{"content":…}],"parameters":
//! {"outputDimensionality":…}}` (parameters only with `dimensions`); at most 250 instances
//! per call, and one per call for `gemini-embedding-*` models (Vertex documents that limit),
//! so several calls may be made. Vectors from `predictions[].embeddings.values`, tokens =
//! sum of `statistics.token_count`. `user` and unknown fields are dropped.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json_scan;
use crate::chat::embeddings::{Embeddings, EmbeddingsRequest};
use crate::chat::request::{data_url, Effort, Reasoning};
use crate::chat::OwnedResponseCtx;
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Part, ResponseCtx, ResponseFormat,
    Role, ToolCall, ToolChoice,
};
use crate::openai::{error_type_for_status, InvalidRequest, Usage};
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    Answer, AnswerFormat, BadAnswer, EmbeddingsCall, ErrorHints, ErrorReply, StreamEnd,
    StreamTranslator, Target, Translator, UpstreamRequest,
};

// ---------------------------------------------------------------------------------------------
// Paths

/// Appends `s` percent-encoded as one path segment (RFC 3986 unreserved and `@` kept).
fn push_segment(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`.
fn model_path(t: &Target<'_>, method: &str) -> Result<String, InvalidRequest> {
    let lacks = |what: &str| {
        InvalidRequest::new(
            format!("The provider configuration for this model lacks the Vertex AI {what}; the gateway cannot call Vertex AI without it."),
            None,
        )
    };
    let project = t
        .project
        .filter(|p| !p.is_empty())
        .ok_or_else(|| lacks("project"))?;
    let location = t
        .location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| lacks("location"))?;
    let mut p = String::with_capacity(96 + t.upstream_model.len());
    p.push_str("/v1/projects/");
    push_segment(&mut p, project);
    p.push_str("/locations/");
    push_segment(&mut p, location);
    p.push_str("/publishers/google/models/");
    push_segment(&mut p, t.upstream_model);
    p.push(':');
    p.push_str(method);
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<PartOut<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction {
    parts: [TextPart; 1],
}

#[derive(Serialize)]
struct TextPart {
    text: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PartOut<'a> {
    Text {
        text: &'a str,
    },
    InlineData {
        #[serde(rename = "inlineData")]
        inline_data: Blob<'a>,
    },
    FileData {
        #[serde(rename = "fileData")]
        file_data: FileData<'a>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCallOut<'a>,
        /// A sibling of `functionCall` in the same part, as Gemini returned it.
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<Cow<'static, str>>,
    },
    FunctionResponse {
        #[serde(rename = "functionResponse")]
        function_response: FunctionResponseOut<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Serialize)]
struct FunctionResponseOut<'a> {
    name: &'a str,
    response: Value,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

/// `generationConfig.thinkingConfig`: a level (Gemini 3) or a budget (2.5), never both.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    include_thoughts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_budget: Option<u64>,
}

/// The largest `thinkingBudget` every Gemini 2.5 model accepts (Flash and Flash-Lite: 24576;
/// Pro: 32768).
const MAX_THINKING_BUDGET: u64 = 24576;

/// The thinking config for `model` (see the module doc); None for models that do not think.
fn thinking_config(model: &str, r: &Reasoning) -> Option<ThinkingConfig> {
    let model = model.rsplit('/').next().unwrap_or(model);
    if model.starts_with("gemini-1") || model.starts_with("gemini-2.0") {
        return None;
    }
    Some(if model.starts_with("gemini-3") {
        let pro = model.contains("-pro");
        let level = match (r.effort(), pro) {
            (Effort::Minimal | Effort::Low, true) => "LOW",
            (Effort::Medium | Effort::High, true) => "HIGH",
            (Effort::Minimal, false) => "MINIMAL",
            (Effort::Low, false) => "LOW",
            (Effort::Medium, false) => "MEDIUM",
            (Effort::High, false) => "HIGH",
        };
        ThinkingConfig {
            include_thoughts: true,
            thinking_level: Some(level),
            thinking_budget: None,
        }
    } else {
        ThinkingConfig {
            include_thoughts: true,
            thinking_level: None,
            thinking_budget: Some(r.budget().min(MAX_THINKING_BUDGET)),
        }
    })
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.stop_sequences.is_empty()
            && self.seed.is_none()
            && self.candidate_count.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolOut<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

/// The MIME type Vertex needs for a `fileData` URI, from its file extension.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn image_part<'a>(i: usize, j: usize, url: &'a str) -> Result<PartOut<'a>, InvalidRequest> {
    let param = || format!("messages[{i}].content[{j}].image_url");
    if url.starts_with("data:") {
        let (mime, data) = data_url(url).ok_or_else(|| {
            InvalidRequest::new(
                format!(
                    "Invalid '{}': expected a base64 data URL (data:<mime>;base64,<data>).",
                    param()
                ),
                Some(&param()),
            )
        })?;
        return Ok(PartOut::InlineData {
            inline_data: Blob {
                mime_type: mime,
                data,
            },
        });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("gs://"))
    {
        return Err(InvalidRequest::new(
            format!(
                "Invalid '{}': Vertex AI accepts data URLs, http(s) URLs and gs:// URIs.",
                param()
            ),
            Some(&param()),
        ));
    }
    let mime_type = mime_from_extension(url).ok_or_else(|| {
        InvalidRequest::new(
            format!("Invalid '{}': Vertex AI needs the image's MIME type, and it cannot be told from this URL's file extension (supported: .png, .jpg, .jpeg, .gif, .webp, .heic, .heif, .pdf). Send the image as a data URL instead.", param()),
            Some(&param()),
        )
    })?;
    Ok(PartOut::FileData {
        file_data: FileData {
            mime_type,
            file_uri: url,
        },
    })
}

/// Tool call arguments as the JSON object Gemini wants.
fn arguments_object(i: usize, j: usize, args: &str) -> Result<Value, InvalidRequest> {
    if args.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            Err(InvalidRequest::new(
                format!("Invalid '{param}': expected a JSON object encoded as a string."),
                Some(&param),
            ))
        }
    }
}

fn push_dropped(dropped: &mut Vec<String>, name: &str) {
    if !dropped.iter().any(|d| d == name) {
        dropped.push(name.to_owned());
    }
}

/// Builds the `generateContent` / `streamGenerateContent?alt=sse` request.
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    let (method, answer) = if req.stream {
        ("streamGenerateContent?alt=sse", AnswerFormat::Sse)
    } else {
        ("generateContent", AnswerFormat::Json)
    };
    let path = model_path(t, method)?;
    let mut dropped = Vec::new();

    let mut contents: Vec<Content<'_>> = Vec::with_capacity(req.messages.len());
    fn push_turn<'a>(contents: &mut Vec<Content<'a>>, role: &'static str, parts: Vec<PartOut<'a>>) {
        if parts.is_empty() {
            return;
        }
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(Content { role, parts }),
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.name.is_some() && matches!(m.role, Role::User | Role::Assistant) {
            push_dropped(&mut dropped, "messages[].name");
        }
        match m.role {
            Role::System | Role::Developer => {}
            Role::User | Role::Assistant => {
                let mut parts = Vec::with_capacity(m.content.len() + m.tool_calls.len());
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => parts.push(PartOut::Text { text: t }),
                        Part::Image { url, detail } => {
                            if detail.as_deref().is_some_and(|d| d != "auto") {
                                push_dropped(&mut dropped, "messages[].content[].image_url.detail");
                            }
                            parts.push(image_part(i, j, url)?);
                        }
                        // Gemini reads PDFs (and other documents) as inline data.
                        Part::File { data, mime, .. } if m.role == Role::User => {
                            parts.push(PartOut::InlineData {
                                inline_data: Blob {
                                    mime_type: mime,
                                    data,
                                },
                            })
                        }
                        Part::File { .. } => {
                            let param = format!("messages[{i}].content[{j}]");
                            return Err(InvalidRequest::new(
                                format!("Invalid '{param}': only user messages can carry files."),
                                Some(&param),
                            ));
                        }
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    parts.push(PartOut::FunctionCall {
                        function_call: FunctionCallOut {
                            name: &c.name,
                            args: arguments_object(i, j, &c.arguments)?,
                        },
                        thought_signature: split_call_id(&c.id).1.map(Cow::Owned),
                    });
                }
                let role = if m.role == Role::User {
                    "user"
                } else {
                    "model"
                };
                push_turn(&mut contents, role, parts);
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let earlier_calls = || {
                    req.messages[..i]
                        .iter()
                        .rev()
                        .filter(|p| p.role == Role::Assistant)
                        .flat_map(|p| p.tool_calls.iter())
                };
                let name = earlier_calls()
                    .find(|c| c.id == id)
                    .or_else(|| {
                        // The same call when one side carries a thought signature and the
                        // other does not.
                        let plain = split_call_id(id).0;
                        earlier_calls().find(|c| split_call_id(&c.id).0 == plain)
                    })
                    .map(|c| c.name.as_str())
                    .ok_or_else(|| {
                        let param = format!("messages[{i}].tool_call_id");
                        InvalidRequest::new(
                            format!("Invalid '{param}': no earlier assistant tool call has the id '{id}'. Vertex AI needs the function name of every tool result."),
                            Some(&param),
                        )
                    })?;
                if let Some(j) = m.content.iter().position(|p| !matches!(p, Part::Text(_))) {
                    let param = format!("messages[{i}].content[{j}]");
                    return Err(InvalidRequest::new(
                        format!("Invalid '{param}': tool results can only carry text for this provider."),
                        Some(&param),
                    ));
                }
                let text = m.text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        let mut o = Map::new();
                        o.insert("content".into(), Value::String(text));
                        Value::Object(o)
                    }
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![PartOut::FunctionResponse {
                        function_response: FunctionResponseOut { name, response },
                    }],
                );
            }
        }
    }
    if contents.is_empty() {
        return Err(InvalidRequest::new(
            "Invalid 'messages': Vertex AI needs at least one user or assistant message with content.",
            Some("messages"),
        ));
    }
    if validates_signatures(t.upstream_model) {
        bypass_missing_signatures(&mut contents);
    }

    let system_instruction =
        req.system_text()
            .filter(|s| !s.is_empty())
            .map(|text| SystemInstruction {
                parts: [TextPart { text }],
            });

    if req.stream && req.n.is_some_and(|n| n > 1) {
        return Err(InvalidRequest::new(
            "Invalid 'n': this provider streams one choice; n > 1 is only supported without streaming.",
            Some("n"),
        ));
    }
    let seed = match req.seed {
        None => None,
        Some(s) => Some(i32::try_from(s).map_err(|_| {
            InvalidRequest::new(
                "Invalid 'seed': Vertex AI accepts a 32-bit signed integer.",
                Some("seed"),
            )
        })?),
    };
    let (response_mime_type, response_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (
            Some("application/json"),
            Some(clean_schema(schema, "response_format.json_schema.schema")?),
        ),
    };
    let thinking_config = req
        .reasoning
        .as_ref()
        .and_then(|r| thinking_config(t.upstream_model, r));
    if req.reasoning.is_some() && thinking_config.is_none() {
        push_dropped(&mut dropped, Reasoning::PARAM);
    }
    let generation_config = GenerationConfig {
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: &req.stop,
        seed,
        candidate_count: req.n,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_mime_type,
        response_schema,
        thinking_config,
    };

    let mut tools = Vec::new();
    if !req.tools.is_empty() {
        let mut decls = Vec::with_capacity(req.tools.len());
        for (i, tool) in req.tools.iter().enumerate() {
            if tool.strict == Some(true) {
                push_dropped(&mut dropped, "tools[].function.strict");
            }
            let params =
                clean_schema(&tool.parameters, &format!("tools[{i}].function.parameters"))?;
            let empty_object = params.get("type").and_then(Value::as_str) == Some("OBJECT")
                && params
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty);
            decls.push(FunctionDeclaration {
                name: &tool.name,
                description: tool.description.as_deref().filter(|d| !d.is_empty()),
                parameters: (!empty_object).then_some(params),
            });
        }
        tools.push(ToolOut {
            function_declarations: decls,
        });
    }
    let tool_config = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Required) if req.tools.is_empty() => {
            return Err(InvalidRequest::new(
                "Invalid 'tool_choice': 'required' needs 'tools'.",
                Some("tool_choice"),
            ))
        }
        Some(_) if req.tools.is_empty() => None, // none/auto without tools: nothing to configure
        Some(choice) => Some(ToolConfig {
            function_calling_config: match choice {
                ToolChoice::None => FunctionCallingConfig {
                    mode: "NONE",
                    allowed_function_names: None,
                },
                ToolChoice::Auto => FunctionCallingConfig {
                    mode: "AUTO",
                    allowed_function_names: None,
                },
                ToolChoice::Required => FunctionCallingConfig {
                    mode: "ANY",
                    allowed_function_names: None,
                },
                ToolChoice::Named(name) => FunctionCallingConfig {
                    mode: "ANY",
                    allowed_function_names: Some([name.as_str()]),
                },
            },
        }),
    };

    if req.user.is_some() {
        push_dropped(&mut dropped, "user");
    }
    if req.parallel_tool_calls.is_some() {
        push_dropped(&mut dropped, "parallel_tool_calls");
    }
    for name in req.other_names() {
        push_dropped(&mut dropped, name);
    }

    let body = serde_json::to_vec(&GenerateRequest {
        contents,
        system_instruction,
        generation_config,
        tools,
        tool_config,
    })
    .expect("the request serializes");
    Ok(UpstreamRequest {
        path,
        body,
        headers: Vec::new(),
        answer,
        dropped,
    })
}

// ---------------------------------------------------------------------------------------------
// Thought signatures carried in tool call ids (see the module doc)

/// Between the plain tool call id and the encoded signature.
const SIGNATURE_SEPARATOR: &str = "__ts_";

/// The signature Google documents for function calls it did not produce (Gemini API FAQ:
/// `skip_thought_signature_validator` or `context_engineering_is_the_way_to_go`; Vertex AI
/// documents the former only).
const BYPASS_SIGNATURE: &str = "skip_thought_signature_validator";

/// The OpenAI tool call id for a Gemini function call: `plain`, plus the part's
/// `thoughtSignature` when there is one: `{plain}__ts_{base64url(signature ‖ crc32)}`.
/// A signature that is not canonical standard base64 (Vertex always sends that), or a plain id
/// that would make the separator ambiguous, leaves the id plain (the signature is lost).
fn call_id(plain: String, signature: Option<&str>) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    let Some(signature) = signature else {
        return plain;
    };
    let Ok(mut bytes) = STANDARD.decode(signature) else {
        return plain;
    };
    if bytes.is_empty() {
        return plain;
    }
    let plain_len = plain.len();
    let mut id = plain;
    id.reserve(SIGNATURE_SEPARATOR.len() + (bytes.len() + 4).div_ceil(3) * 4);
    id.push_str(SIGNATURE_SEPARATOR);
    if id.find(SIGNATURE_SEPARATOR) != Some(plain_len) {
        id.truncate(plain_len);
        return id;
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    URL_SAFE_NO_PAD.encode_string(&bytes, &mut id);
    id
}

/// Splits a tool call id made by [`call_id`] into the plain id and the signature (standard
/// base64, exactly as Vertex sent it). Any other id — no separator, empty plain part, a suffix
/// that is not canonical unpadded base64url, too short, or a checksum mismatch (a truncated
/// or edited id) — is a plain id without signature.
fn split_call_id(id: &str) -> (&str, Option<String>) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    let Some(at) = id.find(SIGNATURE_SEPARATOR).filter(|&at| at > 0) else {
        return (id, None);
    };
    let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(&id[at + SIGNATURE_SEPARATOR.len()..]) else {
        return (id, None);
    };
    if bytes.len() <= 4 {
        return (id, None);
    }
    let n = bytes.len() - 4;
    let crc = u32::from_be_bytes([bytes[n], bytes[n + 1], bytes[n + 2], bytes[n + 3]]);
    bytes.truncate(n);
    if crc32fast::hash(&bytes) != crc {
        return (id, None);
    }
    (&id[..at], Some(STANDARD.encode(&bytes)))
}

/// A tool call id for any host but Gemini: an id made by `call_id` (a thought signature
/// inside, which only Gemini can use) becomes `{plain}_{h}` with `h` 16 hex digits of a 64-bit
/// FNV-1a hash of the whole id — short (OpenAI refuses ids over 40 characters), within
/// `[A-Za-z0-9_-]` (Anthropic, Converse), the same for a call and its result, and distinct for
/// calls of different steps that share the plain part (Gemini numbers each answer's calls from
/// `call_0`). Every other id is returned as it is.
pub fn host_tool_id(id: &str) -> Cow<'_, str> {
    if !id.contains(SIGNATURE_SEPARATOR) {
        return Cow::Borrowed(id);
    }
    let (plain, Some(_)) = split_call_id(id) else {
        return Cow::Borrowed(id);
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Cow::Owned(format!("{plain}_{hash:016x}"))
}

/// Gemini 3 and later (`gemini-N…` with N ≥ 3) refuse a current-turn step whose first
/// function call lacks its signature; 2.5 and older do not check.
fn validates_signatures(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("gemini-") else {
        return false;
    };
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse::<u32>().is_ok_and(|major| major >= 3)
}

/// Gives the first `functionCall` part of each model turn in the current turn (the turns after
/// the last user turn with content other than function responses) the documented bypass
/// signature when it has none — history from another provider, or ids a client rewrote.
fn bypass_missing_signatures(contents: &mut [Content<'_>]) {
    let start = contents
        .iter()
        .rposition(|c| {
            c.role == "user"
                && c.parts
                    .iter()
                    .any(|p| !matches!(p, PartOut::FunctionResponse { .. }))
        })
        .map_or(0, |k| k + 1);
    for c in contents[start..].iter_mut().filter(|c| c.role == "model") {
        if let Some(PartOut::FunctionCall {
            thought_signature: sig @ None,
            ..
        }) = c
            .parts
            .iter_mut()
            .find(|p| matches!(p, PartOut::FunctionCall { .. }))
        {
            *sig = Some(Cow::Borrowed(BYPASS_SIGNATURE));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Schema → Vertex Schema (OpenAPI 3.0 subset)

/// Keywords of Vertex's `Schema` kept as they are.
const SCHEMA_KEEP: &[&str] = &[
    "format",
    "title",
    "description",
    "nullable",
    "default",
    "example",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "required",
    "propertyOrdering",
];

fn schema_error(param: &str, what: &str) -> InvalidRequest {
    InvalidRequest::new(
        format!("Invalid '{param}': {what} cannot be translated to a Vertex AI schema (an OpenAPI 3.0 subset). Inline the definitions and simplify the schema."),
        Some(param),
    )
}

fn enum_value(v: &Value) -> (String, bool) {
    match v {
        Value::String(s) => (s.clone(), true),
        other => (other.to_string(), false),
    }
}

/// Converts a JSON Schema to Vertex's `Schema`.
fn clean_schema(v: &Value, param: &str) -> Result<Value, InvalidRequest> {
    let Value::Object(src) = v else {
        // A boolean schema (`true`) or junk: no constraint Vertex can express.
        return Ok(Value::Object(Map::new()));
    };
    for key in ["$ref", "$defs", "definitions"] {
        if src.contains_key(key) {
            return Err(schema_error(param, "'$ref' / '$defs' references"));
        }
    }
    if src.contains_key("allOf") {
        return Err(schema_error(param, "'allOf'"));
    }
    let mut out = Map::new();
    let mut nullable = false;
    let mut any_of: Option<Vec<Value>> = None;
    for (k, val) in src {
        match k.as_str() {
            "type" => match val {
                Value::String(s) if s == "null" => nullable = true,
                Value::String(s) => {
                    out.insert("type".into(), Value::String(s.to_ascii_uppercase()));
                }
                Value::Array(types) => {
                    let mut named: Vec<String> = Vec::new();
                    for t in types.iter().filter_map(Value::as_str) {
                        if t == "null" {
                            nullable = true;
                        } else {
                            named.push(t.to_ascii_uppercase());
                        }
                    }
                    match named.len() {
                        0 => {}
                        1 => {
                            out.insert("type".into(), Value::String(named.remove(0)));
                        }
                        _ => {
                            any_of = Some(
                                named
                                    .into_iter()
                                    .map(|t| {
                                        let mut m = Map::new();
                                        m.insert("type".into(), Value::String(t));
                                        Value::Object(m)
                                    })
                                    .collect(),
                            );
                        }
                    }
                }
                _ => {}
            },
            "properties" => {
                if let Value::Object(props) = val {
                    let mut cleaned = Map::new();
                    for (name, sub) in props {
                        cleaned.insert(name.clone(), clean_schema(sub, param)?);
                    }
                    out.insert("properties".into(), Value::Object(cleaned));
                }
            }
            "items" => match val {
                Value::Array(_) => return Err(schema_error(param, "tuple 'items'")),
                sub => {
                    out.insert("items".into(), clean_schema(sub, param)?);
                }
            },
            "anyOf" | "oneOf" => {
                if let Value::Array(subs) = val {
                    let mut list = Vec::with_capacity(subs.len());
                    for sub in subs {
                        if sub.get("type").and_then(Value::as_str) == Some("null")
                            && sub.as_object().is_some_and(|o| o.len() == 1)
                        {
                            nullable = true;
                        } else {
                            list.push(clean_schema(sub, param)?);
                        }
                    }
                    any_of.get_or_insert_with(Vec::new).extend(list);
                }
            }
            "const" => {
                let (s, is_str) = enum_value(val);
                out.insert("enum".into(), Value::Array(vec![Value::String(s)]));
                if !is_str && !src.contains_key("format") {
                    out.insert("format".into(), Value::String("enum".into()));
                }
            }
            "enum" => {
                if let Value::Array(values) = val {
                    let mut all_str = true;
                    let list = values
                        .iter()
                        .filter(|v| !v.is_null())
                        .map(|v| {
                            let (s, is_str) = enum_value(v);
                            all_str &= is_str;
                            Value::String(s)
                        })
                        .collect();
                    if values.iter().any(Value::is_null) {
                        nullable = true;
                    }
                    out.insert("enum".into(), Value::Array(list));
                    if !all_str && !src.contains_key("format") {
                        out.insert("format".into(), Value::String("enum".into()));
                    }
                }
            }
            k if SCHEMA_KEEP.contains(&k) => {
                out.insert(k.to_owned(), val.clone());
            }
            // `$schema`, `additionalProperties`, `strict`, `examples`, `exclusiveMinimum`, …:
            // outside Vertex's subset, left out.
            _ => {}
        }
    }
    if let Some(mut list) = any_of {
        if list.len() == 1 && !out.contains_key("type") {
            // `anyOf: [X, null]` is just a nullable X.
            if let Value::Object(only) = list.remove(0) {
                for (k, v) in only {
                    out.entry(k).or_insert(v);
                }
            }
        } else if !list.is_empty() {
            out.insert("anyOf".into(), Value::Array(list));
        }
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Answers

/// A JSON string borrowed from the input when it has no escapes. (serde's own `Cow<str>` only
/// borrows as a direct `#[serde(borrow)]` field, never inside an `Option`: every text piece
/// would be copied.)
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A JSON array that is nearly always one element long (candidates of a stream chunk, parts
/// of a text piece): the first element is kept inline, so the common case allocates nothing.
struct Few<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> Few<T> {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl<T> IntoIterator for Few<T> {
    type Item = T;
    type IntoIter = std::iter::Chain<std::option::IntoIter<T>, std::vec::IntoIter<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Few<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Few<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Few<T>, A::Error> {
                let mut few = Few {
                    first: seq.next_element()?,
                    rest: Vec::new(),
                };
                if few.first.is_some() {
                    while let Some(x) = seq.next_element()? {
                        few.rest.push(x);
                    }
                }
                Ok(few)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenResponse<'a> {
    #[serde(default, borrow)]
    candidates: Few<Candidate<'a>>,
    #[serde(default, borrow)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default, borrow)]
    response_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    model_version: Option<Str<'a>>,
    /// Only on a stream's error event.
    #[serde(default, borrow)]
    error: Option<GoogleError<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    /// Omitted for candidate 0 (proto3 default).
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    content: Option<CandidateContent<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct CandidateContent<'a> {
    #[serde(default, borrow)]
    parts: Few<RespPart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RespPart<'a> {
    #[serde(default, borrow)]
    text: Option<Str<'a>>,
    #[serde(default)]
    thought: bool,
    #[serde(default, borrow)]
    function_call: Option<Box<RespFunctionCall<'a>>>,
    #[serde(default, borrow, alias = "thought_signature")]
    thought_signature: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct RespFunctionCall<'a> {
    #[serde(default, borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(default)]
    args: Option<Value>,
}

impl RespFunctionCall<'_> {
    fn arguments(&self) -> String {
        match &self.args {
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => "{}".to_owned(),
        }
    }

    fn id(&self, n: usize) -> String {
        match self.id.as_deref() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("call_{n}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(default, borrow)]
    block_reason: Option<Str<'a>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    /// None for the count-less `{"trafficType":"ON_DEMAND"}` of Vertex's partial stream chunks.
    fn usage(self) -> Option<Usage> {
        if self.prompt_token_count.is_none() && self.candidates_token_count.is_none() {
            return None;
        }
        let mut u = Usage::new(
            self.prompt_token_count.unwrap_or(0),
            self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count,
        );
        u.cached_tokens = self.cached_content_token_count;
        u.reasoning_tokens = self.thoughts_token_count;
        Some(u)
    }
}

/// Gemini `finishReason` → OpenAI (PROTOCOLS 8.1).
fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
            FinishReason::ContentFilter
        }
        r if r.starts_with("IMAGE_") => FinishReason::ContentFilter,
        _ if called_tools => FinishReason::ToolCalls,
        // STOP, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, LANGUAGE,
        // OTHER, FINISH_REASON_UNSPECIFIED, NO_IMAGE, …
        _ => FinishReason::Stop,
    }
}

/// Reads a `generateContent` answer.
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    let mut r: GenResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable Vertex AI generateContent answer: {e}")))?;
    let usage = r.usage_metadata.and_then(UsageMetadata::usage);
    let id = r.response_id.take().map(|s| s.0.into_owned());
    if r.candidates.is_empty() {
        if r.prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_some()
        {
            return Ok(Completion {
                id,
                choices: vec![Choice {
                    content: Some(String::new()),
                    finish_reason: Some(FinishReason::ContentFilter),
                    ..Choice::default()
                }],
                usage,
            });
        }
        return Err(BadAnswer("Vertex AI answered without candidates".into()));
    }
    let mut candidates: Vec<Candidate<'_>> = r.candidates.into_iter().collect();
    candidates.sort_by_key(|c| c.index);
    let mut calls_so_far = 0;
    let choices = candidates
        .into_iter()
        .map(|c| {
            let mut text = String::new();
            let mut reasoning = String::new();
            let mut tool_calls = Vec::new();
            let mut saw_text = false;
            for p in c.content.into_iter().flat_map(|c| c.parts) {
                if let Some(fc) = p.function_call {
                    tool_calls.push(ToolCall {
                        id: call_id(fc.id(calls_so_far), p.thought_signature.as_deref()),
                        name: fc.name.to_string(),
                        arguments: fc.arguments(),
                    });
                    calls_so_far += 1;
                } else if let Some(t) = p.text {
                    if p.thought {
                        reasoning.push_str(&t);
                    } else {
                        saw_text = true;
                        text.push_str(&t);
                    }
                }
            }
            let finish = c.finish_reason.as_deref().map_or(
                if tool_calls.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                },
                |f| finish_reason(f, !tool_calls.is_empty()),
            );
            Choice {
                content: (saw_text || tool_calls.is_empty()).then_some(text),
                reasoning: (!reasoning.is_empty()).then_some(reasoning),
                thinking_blocks: Vec::new(),
                tool_calls,
                finish_reason: Some(finish),
            }
        })
        .collect();
    Ok(Completion { id, choices, usage })
}

// ---------------------------------------------------------------------------------------------
// Stream fast path

/// The text of the event that makes up nearly all of a stream — one text part of candidate 0,
/// nothing else that matters — as its JSON string literal:
/// `{"candidates":[{"content":{"role":"model","parts":[{"text":"…"}]}}],"usageMetadata":
/// {"trafficType":"ON_DEMAND"},"modelVersion":"…","createTime":"…","responseId":"…"}`
/// (any member order, spaces allowed; `role`, `usageMetadata` without token counts,
/// `modelVersion`, `createTime` and `responseId` optional). None for anything else:
/// a thought, a function call, a finish reason, usage counts, an error, other fields, text
/// that [`json_scan::literal`] does not take. The caller uses it only once the stream has
/// started (the first event's `responseId` sets the chunk id).
fn fast_text(data: &[u8]) -> Option<&str> {
    use super::json_scan::{literal, members, plain, token, ws};
    const TOP: [&[u8]; 5] = [
        br#""candidates""#,
        br#""usageMetadata""#,
        br#""modelVersion""#,
        br#""createTime""#,
        br#""responseId""#,
    ];
    const CONTENT: [&[u8]; 2] = [br#""parts""#, br#""role""#];
    let mut text = None;
    let rest = members(token(data, b"{")?, &TOP, |k, v| match k {
        0 => {
            // One candidate with only `content`, which has `parts` with one `text` part and
            // perhaps `role`.
            let v = token(v, br#"[{"content":{"#)?;
            let v = members(v, &CONTENT, |k, v| match k {
                0 => {
                    let (lit, v) = literal(token(v, br#"[{"text":"#)?)?;
                    text = Some(lit);
                    token(v, b"}]")
                }
                _ => token(v, br#""model""#),
            })?;
            token(v, b"}]")
        }
        1 => token(plain(token(v, br#"{"trafficType":"#)?)?.1, b"}"),
        _ => Some(plain(v)?.1),
    })?;
    if !ws(rest).is_empty() {
        return None;
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Stream

struct GeminiStream {
    framer: SseFramer,
    writer: ChunkWriter,
    ctx: OwnedResponseCtx,
    /// Tool calls emitted so far (the next call's index).
    calls: usize,
    /// A finish reason (or a prompt block) was seen.
    finished: bool,
    usage: Option<Usage>,
    /// Set once the stream ended early (provider error, unreadable event).
    ended: Option<StreamEnd>,
}

/// A translator for a `streamGenerateContent?alt=sse` stream.
pub fn stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(GeminiStream {
        framer: SseFramer::new(),
        writer: ChunkWriter::new(ctx),
        ctx: OwnedResponseCtx::new(ctx),
        calls: 0,
        finished: false,
        usage: None,
        ended: None,
    })
}

impl GeminiStream {
    /// Handles one raw SSE event.
    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.ended.is_some() {
            return;
        }
        if self.writer.started() {
            // The common text event, without `parse_event`.
            if let Some(text) = json_scan::sse_line(raw).and_then(fast_text) {
                self.writer.content_json(out, text);
                return;
            }
        }
        let ev = parse_event(raw);
        if ev.has_data {
            self.payload(&ev.data, out);
        } else {
            // python-genai also accepts an error as bare JSON lines (no `data:` prefix).
            let text = raw.trim_ascii();
            if text.first() == Some(&b'{') {
                self.payload(text, out);
            }
        }
    }

    fn payload(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if self.writer.started() {
            // Also here for events of several `data:` lines and the unterminated last one.
            if let Some(text) = fast_text(data) {
                self.writer.content_json(out, text);
                return;
            }
        }
        let r: GenResponse<'_> = match serde_json::from_slice(data) {
            Ok(r) => r,
            Err(_) => {
                self.writer.truncated(out);
                self.ended = Some(StreamEnd::Truncated);
                return;
            }
        };
        if let Some(e) = &r.error {
            let (status, message, code) = map_google_error(e.http_status(), e);
            self.writer.error(
                out,
                &message,
                error_type_for_status(status),
                code.as_deref(),
            );
            self.ended = Some(StreamEnd::ProviderError(message));
            return;
        }
        if !self.writer.started() {
            if let Some(id) = r.response_id.as_deref() {
                let ctx = self.ctx.get();
                self.writer.set_id(&ctx, Some(id));
            }
            if let Some(m) = r.model_version.as_deref() {
                self.writer.provider_model(m);
            }
            self.writer.start(out);
        }
        if let Some(u) = r.usage_metadata.and_then(UsageMetadata::usage) {
            self.usage = Some(u);
        }
        if r.candidates.is_empty()
            && r.prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .is_some()
        {
            self.writer.finish(out, FinishReason::ContentFilter);
            self.finished = true;
            return;
        }
        // Streams are single-choice (n > 1 is rejected up front).
        for c in r.candidates.into_iter().filter(|c| c.index == 0) {
            for p in c.content.into_iter().flat_map(|c| c.parts) {
                if let Some(fc) = p.function_call {
                    let index = self.calls;
                    self.calls += 1;
                    let id = call_id(fc.id(index), p.thought_signature.as_deref());
                    self.writer.tool_call_start(out, index, &id, &fc.name);
                    self.writer.tool_call_arguments(out, index, &fc.arguments());
                } else if let Some(t) = p.text {
                    if p.thought {
                        self.writer.reasoning(out, &t);
                    } else {
                        self.writer.content(out, &t);
                    }
                }
            }
            if let Some(f) = c.finish_reason.as_deref() {
                self.writer.finish(out, finish_reason(f, self.calls > 0));
                self.finished = true;
            }
        }
    }
}

impl StreamTranslator for GeminiStream {
    fn ended(&self) -> bool {
        self.ended.is_some()
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.writer.final_response()
    }

    fn answer(&mut self) -> Option<&mut crate::translate::StreamAnswer> {
        Some(self.writer.answer())
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.ended.is_some() {
            return;
        }
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(chunk, |raw| self.event(raw, out));
        self.framer = framer;
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        if self.ended.is_none() {
            // A last event without its blank line: complete if its JSON is.
            let rest = self.framer.take_rest();
            if !rest.trim_ascii().is_empty() {
                self.event(&rest, out);
            }
        }
        if let Some(end) = &self.ended {
            return end.clone();
        }
        if !self.finished {
            self.writer.truncated(out);
            self.ended = Some(StreamEnd::Truncated);
            return StreamEnd::Truncated;
        }
        if let Some(u) = self.usage {
            self.writer.usage(out, u);
        }
        self.writer.done(out);
        self.ended = Some(StreamEnd::Complete);
        StreamEnd::Complete
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// Vertex's limit of instances per `:predict` call for text-embedding models.
const MAX_INSTANCES: usize = 250;

#[derive(Serialize)]
struct PredictRequest<'a> {
    instances: Vec<Instance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<PredictParameters>,
}

#[derive(Serialize)]
struct Instance<'a> {
    content: &'a str,
}

#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct PredictParameters {
    output_dimensionality: u64,
}

/// Builds the `:predict` call(s) for an embeddings request.
pub fn prepare_embeddings(
    t: &Target<'_>,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsCall, InvalidRequest> {
    let path = model_path(t, "predict")?;
    // gemini-embedding-* models take one instance per request (Vertex "Get text embeddings").
    let per_call = if t.upstream_model.starts_with("gemini-embedding") {
        1
    } else {
        MAX_INSTANCES
    };
    let parameters = req.dimensions.map(|d| PredictParameters {
        output_dimensionality: d,
    });
    let bodies = req
        .inputs
        .chunks(per_call)
        .map(|texts| {
            serde_json::to_vec(&PredictRequest {
                instances: texts.iter().map(|t| Instance { content: t }).collect(),
                parameters,
            })
            .expect("the request serializes")
        })
        .collect();
    let mut dropped = Vec::new();
    if req.user.is_some() {
        dropped.push("user".to_owned());
    }
    for (name, _) in &req.other {
        push_dropped(&mut dropped, name);
    }
    Ok(EmbeddingsCall {
        path,
        bodies,
        headers: Vec::new(),
        dropped,
    })
}

#[derive(Deserialize)]
struct PredictResponse {
    predictions: Vec<Prediction>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictionEmbeddings,
}

#[derive(Deserialize)]
struct PredictionEmbeddings {
    values: Vec<f32>,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    /// An integer in practice; some clients type it as a double.
    #[serde(default)]
    token_count: f64,
}

/// Combines the `:predict` answers, in order.
pub fn parse_embeddings(answers: &[Answer<'_>]) -> Result<Embeddings, BadAnswer> {
    let mut e = Embeddings::default();
    for a in answers {
        let r: PredictResponse = serde_json::from_slice(a.body)
            .map_err(|err| BadAnswer(format!("unreadable Vertex AI predict answer: {err}")))?;
        for p in r.predictions {
            e.prompt_tokens += p
                .embeddings
                .statistics
                .map_or(0, |s| s.token_count.max(0.0) as u64);
            e.vectors.push(p.embeddings.values);
        }
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize)]
struct GoogleErrorEnvelope<'a> {
    #[serde(borrow)]
    error: GoogleError<'a>,
}

#[derive(Deserialize)]
struct GoogleError<'a> {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default, borrow)]
    message: Option<Str<'a>>,
    #[serde(default, borrow)]
    status: Option<Str<'a>>,
}

impl GoogleError<'_> {
    /// The HTTP status the error carries (`code`), for stream errors that have no response
    /// status of their own.
    fn http_status(&self) -> u16 {
        self.code.unwrap_or(500)
    }
}

/// Reads a Google error body (also the `[{"error":…}]` form of non-SSE streams).
fn google_error(body: &[u8]) -> Option<GoogleError<'_>> {
    if let Ok(e) = serde_json::from_slice::<GoogleErrorEnvelope<'_>>(body) {
        return Some(e.error);
    }
    let list: Vec<GoogleErrorEnvelope<'_>> = serde_json::from_slice(body).ok()?;
    list.into_iter().next().map(|e| e.error)
}

/// Whether `body` is Google's error shape `{"error":{"code","message","status"}}`.
pub fn is_google_error(body: &[u8]) -> bool {
    google_error(body)
        .is_some_and(|e| e.message.is_some() && (e.status.is_some() || e.code.is_some()))
}

/// The client status for a provider HTTP status alone (PROTOCOLS 8.2).
fn status_for_http(status: u16) -> u16 {
    match status {
        401 => 502,
        408 => 504,
        400 | 403 | 404 | 409 | 413 | 429 | 503 | 504 => status,
        s if s >= 500 => 500,
        s if s >= 400 => s,
        _ => 502,
    }
}

/// (client status, message, code) for a Google error.
fn map_google_error(http: u16, e: &GoogleError<'_>) -> (u16, String, Option<String>) {
    let message = e
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map_or_else(|| format!("Provider returned HTTP {http}."), str::to_owned);
    let status_name = e.status.as_deref().unwrap_or("");
    let status = match status_name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "UNIMPLEMENTED" => 400,
        "UNAUTHENTICATED" => 502,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "DEADLINE_EXCEEDED" => 504,
        "UNAVAILABLE" => 503,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "CANCELLED" => 500,
        _ => status_for_http(http),
    };
    let code = match status {
        // "The input token count (N) exceeds the maximum number of tokens allowed (M)."
        400 if message.contains("exceeds the maximum number of tokens") => {
            Some("context_length_exceeded".to_owned())
        }
        404 => Some("model_not_found".to_owned()),
        429 => Some("rate_limit_exceeded".to_owned()),
        _ => (!status_name.is_empty()).then(|| status_name.to_owned()),
    };
    let message = if status == 502 && (status_name == "UNAUTHENTICATED" || http == 401) {
        format!("The provider rejected the gateway's credentials. {message}")
    } else {
        message
    };
    (status, message, code)
}

/// Maps a Vertex AI error response to the client's OpenAI error.
pub fn error(status: u16, body: &[u8]) -> ErrorReply {
    match google_error(body) {
        Some(e) if e.message.is_some() || e.status.is_some() => {
            let (s, message, code) = map_google_error(status, &e);
            ErrorReply::new(s, &message, code.as_deref())
        }
        _ => {
            let s = status_for_http(status);
            let message = if s == 502 && status == 401 {
                format!("The provider rejected the gateway's credentials. Provider returned HTTP {status}.")
            } else {
                format!("Provider returned HTTP {status}.")
            };
            ErrorReply::new(s, &message, None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Translator
// ---------------------------------------------------------------------------------------------

/// The translator for [`crate::translate::Dialect::VertexGemini`]: chat and embeddings.
pub struct VertexGemini;

impl Translator for VertexGemini {
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
        stream(ctx)
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
        _t: &Target<'_>,
        answers: &[Answer<'_>],
    ) -> Result<Embeddings, BadAnswer> {
        parse_embeddings(answers)
    }
    fn translate_error(
        &self,
        _t: &Target<'_>,
        status: u16,
        body: &[u8],
        _hints: &ErrorHints<'_>,
    ) -> ErrorReply {
        error(status, body)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::front::FrontDoor;
    use crate::openai::{parse_request, Endpoint};
    use crate::translate::{testing, Dialect};
    use serde_json::json;

    fn target() -> Target<'static> {
        Target {
            dialect: Dialect::VertexGemini,
            upstream_model: "gemini-2.5-flash",
            project: Some("my-proj"),
            location: Some("us-central1"),
            api_version: None,
        }
    }

    fn chat(body: Value) -> ChatRequest {
        let raw = serde_json::to_vec(&body).unwrap();
        ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap()).unwrap()
    }

    fn prepare(body: Value) -> Result<UpstreamRequest, InvalidRequest> {
        prepare_chat(&target(), &chat(body))
    }

    fn native(up: &UpstreamRequest) -> Value {
        serde_json::from_slice(&up.body).unwrap()
    }

    fn ctx(include_usage: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "gem",
            created: 7,
            fallback_id: "req1",
            front: FrontDoor::Chat,
            include_usage,
            echo: "",
        }
    }

    #[test]
    fn rich_request_maps_field_by_field() {
        let up = prepare(json!({
            "model": "gem",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.JPG?x=1"}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/dog.webp"}}
                ]},
                {"role": "assistant", "content": "A cat and a dog."},
                {"role": "developer", "content": "Use tools for weather."},
                {"role": "user", "content": "Weather in Paris and London?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"London\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "call_1", "content": "rainy"},
                {"role": "user", "content": "Thanks. Summarize."}
            ],
            "max_completion_tokens": 300, "temperature": 0.3, "top_p": 0.8, "stop": ["END", "STOP"],
            "seed": 42, "n": 2, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
                {"type": "function", "function": {"name": "now"}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": true, "schema": {"type": "object", "properties": {"summary": {"type": "string"}}}}}
        }))
        .unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(up.answer, AnswerFormat::Json);
        assert!(up.headers.is_empty());
        assert!(up.dropped.is_empty(), "{:?}", up.dropped);
        let v = native(&up);
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "Be brief.\n\nUse tools for weather."}]})
        );
        let contents = v["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 5, "{contents:#?}");
        assert_eq!(
            contents[0],
            json!({"role": "user", "parts": [
                {"text": "What is in these?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/cat.JPG?x=1"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "gs://bucket/dog.webp"}}
            ]})
        );
        assert_eq!(
            contents[1],
            json!({"role": "model", "parts": [{"text": "A cat and a dog."}]})
        );
        assert_eq!(
            contents[2],
            json!({"role": "user", "parts": [{"text": "Weather in Paris and London?"}]})
        );
        assert_eq!(
            contents[3],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}
            ]})
        );
        // Both tool results and the following user text: one user turn.
        assert_eq!(
            contents[4],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get_weather", "response": {"content": "rainy"}}},
                {"text": "Thanks. Summarize."}
            ]})
        );
        assert_eq!(
            v["generationConfig"],
            json!({
                "maxOutputTokens": 300, "temperature": 0.3, "topP": 0.8, "stopSequences": ["END", "STOP"],
                "seed": 42, "candidateCount": 2, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"summary": {"type": "STRING"}}}
            })
        );
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather by city",
                 "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
                {"name": "now"}
            ]}])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "contents",
                "generationConfig",
                "systemInstruction",
                "toolConfig",
                "tools"
            ]
        );
    }

    #[test]
    fn minimal_and_streaming_requests() {
        let up = prepare(json!({"model": "gem", "messages": [{"role": "user", "content": "hi"}], "stream": true}))
            .unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(up.answer, AnswerFormat::Sse);
        assert_eq!(
            native(&up),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
        // Assistant prefill last; json_object; tool_choice modes.
        for (choice, mode) in [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")] {
            let v = native(
                &prepare(json!({"model": "gem", "messages": [
                    {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure:"}],
                    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}],
                    "tool_choice": choice, "response_format": {"type": "json_object"}}))
                .unwrap(),
            );
            assert_eq!(
                v["toolConfig"],
                json!({"functionCallingConfig": {"mode": mode}})
            );
            assert_eq!(
                v["contents"][1],
                json!({"role": "model", "parts": [{"text": "Sure:"}]})
            );
            assert_eq!(
                v["generationConfig"],
                json!({"responseMimeType": "application/json"})
            );
        }
        // tool_choice auto without tools: nothing to configure.
        let v = native(
            &prepare(json!({"model": "gem", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}))
                .unwrap(),
        );
        assert!(v.get("toolConfig").is_none());
        // Path segments are encoded.
        let t = Target {
            upstream_model: "my model",
            location: Some("global"),
            ..target()
        };
        let up = prepare_chat(
            &t,
            &chat(json!({"model": "gem", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .unwrap();
        assert!(up
            .path
            .ends_with("/locations/global/publishers/google/models/my%20model:generateContent"));
    }

    #[test]
    fn dropped_parameters_are_listed() {
        let up = prepare(json!({"model": "gem", "messages": [
                {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}}]}],
            "user": "u1", "parallel_tool_calls": false, "logit_bias": {"1": 2}, "logprobs": true,
            "tools": [{"type": "function", "function": {"name": "f", "strict": true, "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}]}))
        .unwrap();
        assert_eq!(
            up.dropped,
            [
                "messages[].name",
                "messages[].content[].image_url.detail",
                "tools[].function.strict",
                "user",
                "parallel_tool_calls",
                "logit_bias",
                "logprobs"
            ]
        );
        let v = native(&up);
        for k in ["user", "parallelToolCalls", "logitBias", "logprobs"] {
            assert!(v.get(k).is_none(), "{k}");
        }
    }

    #[test]
    fn rejections_name_their_parameter() {
        let user = json!({"role": "user", "content": "hi"});
        let cases: Vec<(Value, Option<&str>)> = vec![
            (
                json!({"model": "gem", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/img"}}]}]}),
                Some("messages[0].content[0].image_url"),
            ),
            (
                json!({"model": "gem", "messages": [user, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}]}]}),
                Some("messages[1].content[1].image_url"),
            ),
            (
                json!({"model": "gem", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}),
                Some("messages[0].content[0].image_url"),
            ),
            (
                json!({"model": "gem", "messages": [user, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                Some("messages[1].tool_calls[0].function.arguments"),
            ),
            (
                json!({"model": "gem", "messages": [user, {"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
                Some("messages[1].tool_call_id"),
            ),
            (
                json!({"model": "gem", "messages": [user, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
                Some("messages[2].content[0]"),
            ),
            (
                json!({"model": "gem", "messages": [user], "n": 2, "stream": true}),
                Some("n"),
            ),
            (
                json!({"model": "gem", "messages": [user], "seed": 5_000_000_000i64}),
                Some("seed"),
            ),
            (
                json!({"model": "gem", "messages": [user], "tool_choice": "required"}),
                Some("tool_choice"),
            ),
            (
                json!({"model": "gem", "messages": [{"role": "system", "content": "only"}]}),
                Some("messages"),
            ),
            (
                json!({"model": "gem", "messages": [user], "response_format": {"type": "json_schema", "json_schema": {"name": "s",
                    "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}}}}}),
                Some("response_format.json_schema.schema"),
            ),
            (
                json!({"model": "gem", "messages": [user], "tools": [{"type": "function", "function": {"name": "f",
                    "parameters": {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}}}]}),
                Some("tools[0].function.parameters"),
            ),
        ];
        for (body, param) in cases {
            let err = prepare(body.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), param, "{body} -> {}", err.message);
        }
        let req = chat(json!({"model": "gem", "messages": [user]}));
        for t in [
            Target {
                project: None,
                ..target()
            },
            Target {
                location: Some(""),
                ..target()
            },
        ] {
            let err = prepare_chat(&t, &req).unwrap_err();
            assert!(
                err.message.contains("provider configuration"),
                "{}",
                err.message
            );
            assert_eq!(err.param, None);
        }
        // n > 1 is fine without streaming; an empty arguments string counts as {}.
        let v = native(
            &prepare(json!({"model": "gem", "n": 3, "messages": [user, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}]}))
                .unwrap(),
        );
        assert_eq!(v["generationConfig"]["candidateCount"], 3);
        assert_eq!(
            v["contents"][1]["parts"][0]["functionCall"]["args"],
            json!({})
        );
    }

    #[test]
    fn tool_results_use_the_nearest_call_with_that_id() {
        // Synthesized ids restart at call_0 every answer: the latest earlier call wins.
        let v = native(
            &prepare(json!({"model": "gem", "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "[1,2]"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": [{"type": "text", "text": "done"}]}
            ]}))
            .unwrap(),
        );
        let c = &v["contents"];
        assert_eq!(
            c[2]["parts"][0]["functionResponse"],
            json!({"name": "first", "response": {"content": "[1,2]"}})
        );
        assert_eq!(
            c[6]["parts"][0]["functionResponse"],
            json!({"name": "second", "response": {"content": "done"}})
        );
    }

    #[test]
    fn json_schemas_become_the_openapi_subset() {
        let s = clean_schema(
            &json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object", "strict": true, "additionalProperties": false,
                "title": "T", "description": "d",
                "properties": {
                    "name": {"type": ["string", "null"], "minLength": 1, "examples": ["x"]},
                    "age": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
                    "kind": {"const": "cat"},
                    "level": {"type": "integer", "enum": [1, 2, 3]},
                    "tags": {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 3},
                    "either": {"oneOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0}]},
                    "multi": {"type": ["string", "integer"]}
                },
                "required": ["name"]
            }),
            "p",
        )
        .unwrap();
        assert_eq!(
            s,
            json!({
                "type": "OBJECT", "title": "T", "description": "d", "required": ["name"],
                "properties": {
                    "name": {"type": "STRING", "nullable": true, "minLength": 1},
                    "age": {"type": "INTEGER", "minimum": 0, "nullable": true},
                    "kind": {"enum": ["cat"]},
                    "level": {"type": "INTEGER", "enum": ["1", "2", "3"], "format": "enum"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING", "format": "email"}, "maxItems": 3},
                    "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
                    "multi": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
                }
            })
        );
        for bad in [
            json!({"$defs": {}}),
            json!({"type": "array", "items": [{"type": "string"}]}),
            json!({"properties": {"a": {"definitions": {}}}}),
        ] {
            assert_eq!(
                clean_schema(&bad, "x").unwrap_err().param.as_deref(),
                Some("x")
            );
        }
    }

    // Answers. Shapes from the Vertex AI "Generate content" reference (GenerateContentResponse).

    #[test]
    fn parses_text_thoughts_and_usage() {
        let c = parse_chat(br#"{"candidates":[{"content":{"role":"model","parts":[
                {"text":"Let me think.","thought":true},
                {"text":"Hello"},{"text":" world","thoughtSignature":"AY89a18i"}]},
              "finishReason":"STOP","safetyRatings":[],"avgLogprobs":-0.04}],
            "usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":2,"totalTokenCount":20,"thoughtsTokenCount":6,
              "cachedContentTokenCount":8,"trafficType":"ON_DEMAND"},
            "modelVersion":"gemini-2.5-flash","createTime":"2025-01-01T00:00:00Z","responseId":"resp-1"}"#)
        .unwrap();
        assert_eq!(c.id.as_deref(), Some("resp-1"));
        assert_eq!(c.choices.len(), 1);
        assert_eq!(c.choices[0].content.as_deref(), Some("Hello world"));
        assert_eq!(c.choices[0].reasoning.as_deref(), Some("Let me think."));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens
            ),
            (12, 8, 20, 8)
        );
        assert_eq!(u.reasoning_tokens, 6, "thoughtsTokenCount");
    }

    /// Issue 15.1: reasoning → `thinkingConfig`: a level for Gemini 3 (Pro has LOW/HIGH
    /// only), a budget for 2.5, thoughts always included.
    #[test]
    fn reasoning_becomes_thinking_config() {
        let config = |model: &'static str, r: Option<Reasoning>| -> Value {
            let mut req =
                chat(json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}));
            req.reasoning = r;
            let t = Target {
                dialect: Dialect::VertexGemini,
                upstream_model: model,
                project: Some("p"),
                location: Some("us-central1"),
                api_version: None,
            };
            let up = prepare_chat(&t, &req).unwrap();
            assert!(up.dropped.is_empty(), "{:?}", up.dropped);
            let v: Value = serde_json::from_slice(&up.body).unwrap();
            v["generationConfig"]["thinkingConfig"].clone()
        };
        let effort = |e| {
            Some(Reasoning {
                effort: Some(e),
                budget_tokens: None,
            })
        };
        let budget = |b| {
            Some(Reasoning {
                effort: None,
                budget_tokens: Some(b),
            })
        };
        assert_eq!(config("gemini-2.5-flash", None), Value::Null);
        let mut req = chat(
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "low"}),
        );
        req.stream = false;
        for old in ["gemini-2.0-flash-001", "gemini-1.5-pro"] {
            let t = Target {
                dialect: Dialect::VertexGemini,
                upstream_model: old,
                project: Some("p"),
                location: Some("us-central1"),
                api_version: None,
            };
            let up = prepare_chat(&t, &req).unwrap();
            assert_eq!(up.dropped, ["reasoning_effort"], "{old}");
            let v: Value = serde_json::from_slice(&up.body).unwrap();
            assert!(v.get("generationConfig").is_none(), "{old}: {v}");
        }
        for (e, b) in [
            (Effort::Minimal, 1024),
            (Effort::Low, 1024),
            (Effort::Medium, 4096),
            (Effort::High, 16384),
        ] {
            assert_eq!(
                config("gemini-2.5-pro", effort(e)),
                json!({"includeThoughts": true, "thinkingBudget": b})
            );
        }
        assert_eq!(
            config("gemini-2.5-flash", budget(100_000))["thinkingBudget"],
            24576
        );
        for (e, flash, pro) in [
            (Effort::Minimal, "MINIMAL", "LOW"),
            (Effort::Low, "LOW", "LOW"),
            (Effort::Medium, "MEDIUM", "HIGH"),
            (Effort::High, "HIGH", "HIGH"),
        ] {
            assert_eq!(
                config("gemini-3-flash-preview", effort(e)),
                json!({"includeThoughts": true, "thinkingLevel": flash})
            );
            assert_eq!(
                config("gemini-3-pro-preview", effort(e))["thinkingLevel"],
                pro
            );
        }
        assert_eq!(
            config("gemini-3-flash-preview", budget(3000))["thinkingLevel"],
            "MEDIUM"
        );
    }

    #[test]
    fn parses_tool_calls_and_candidates_in_index_order() {
        let c = parse_chat(br#"{"candidates":[
              {"index":1,"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"},
              {"content":{"role":"model","parts":[
                {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},
                {"functionCall":{"id":"fc-9","name":"get_weather","args":{"city":"London"}}}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":10}}"#)
        .unwrap();
        assert_eq!(c.id, None);
        let first = &c.choices[0];
        assert_eq!(first.content, None);
        assert_eq!(first.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            first.tool_calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ToolCall {
                    id: "fc-9".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"London"}"#.into()
                },
            ]
        );
        assert_eq!(c.choices[1].tool_calls[0].id, "call_2");
        assert_eq!(c.choices[1].tool_calls[0].arguments, "{}");
    }

    #[test]
    fn maps_every_finish_reason() {
        for (reason, with_call, want) in [
            ("STOP", false, FinishReason::Stop),
            ("STOP", true, FinishReason::ToolCalls),
            ("MAX_TOKENS", false, FinishReason::Length),
            ("MAX_TOKENS", true, FinishReason::Length),
            ("SAFETY", false, FinishReason::ContentFilter),
            ("RECITATION", false, FinishReason::ContentFilter),
            ("BLOCKLIST", false, FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
            ("SPII", false, FinishReason::ContentFilter),
            ("IMAGE_SAFETY", false, FinishReason::ContentFilter),
            (
                "IMAGE_PROHIBITED_CONTENT",
                false,
                FinishReason::ContentFilter,
            ),
            ("MALFORMED_FUNCTION_CALL", false, FinishReason::Stop),
            ("UNEXPECTED_TOOL_CALL", false, FinishReason::Stop),
            ("TOO_MANY_TOOL_CALLS", false, FinishReason::Stop),
            ("LANGUAGE", false, FinishReason::Stop),
            ("OTHER", false, FinishReason::Stop),
            ("FINISH_REASON_UNSPECIFIED", false, FinishReason::Stop),
            ("NO_IMAGE", false, FinishReason::Stop),
        ] {
            let part = if with_call {
                r#"{"functionCall":{"name":"f","args":{"a":1}}}"#
            } else {
                r#"{"text":"x"}"#
            };
            let body = format!(
                r#"{{"candidates":[{{"content":{{"role":"model","parts":[{part}]}},"finishReason":"{reason}"}}]}}"#
            );
            let c = parse_chat(body.as_bytes()).unwrap();
            assert_eq!(
                c.choices[0].finish_reason,
                Some(want),
                "{reason} {with_call}"
            );
        }
        // A SAFETY stop without content: empty text.
        let c = parse_chat(br#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH","blocked":true}]}]}"#).unwrap();
        assert_eq!(c.choices[0].content.as_deref(), Some(""));
        assert_eq!(
            c.choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
    }

    #[test]
    fn blocked_prompts_and_bad_bodies() {
        let c = parse_chat(
            br#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},
            "usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"responseId":"r"}"#,
        )
        .unwrap();
        assert_eq!(c.choices.len(), 1);
        assert_eq!(c.choices[0].content.as_deref(), Some(""));
        assert_eq!(
            c.choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(c.usage.unwrap().prompt_tokens, 9);
        assert!(parse_chat(b"<html>").is_err());
        assert!(parse_chat(b"{}").is_err());
        assert!(parse_chat(br#"{"candidates":"x"}"#).is_err());
    }

    // Thought signatures in tool call ids. Signatures are opaque bytes, standard base64 in
    // JSON; these two have `+`, `/`, with and without padding (the documented answer shape:
    // ai.google.dev/gemini-api/docs/thought-signatures, "Parallel function calling example").
    const SIG_A: &str = "CiQB+/+/ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3hQ==";
    const SIG_B: &str = "CiIB/vvvPiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3Pu";

    fn target_for(model: &'static str) -> Target<'static> {
        Target {
            upstream_model: model,
            ..target()
        }
    }

    fn parallel_answer() -> String {
        format!(
            r#"{{"candidates":[{{"content":{{"role":"model","parts":[
                {{"functionCall":{{"name":"get_weather","args":{{"city":"Paris"}}}},"thoughtSignature":"{SIG_A}"}},
                {{"functionCall":{{"name":"get_weather","args":{{"city":"London"}}}}}}]}},"finishReason":"STOP"}}],
              "usageMetadata":{{"promptTokenCount":10,"candidatesTokenCount":10,"totalTokenCount":20}},"responseId":"r1"}}"#
        )
    }

    /// A request replaying `calls` (id, city) as one assistant turn with their results, then
    /// optionally a second step `(id, city)` with its result.
    fn replay(calls: &[(&str, &str)], step2: Option<(&str, &str)>) -> Value {
        let mut messages = vec![json!({"role": "user", "content": "weather in Paris and London?"})];
        let mut push_step = |calls: &[(&str, &str)]| {
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|(id, city)| json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": format!(r#"{{"city":"{city}"}}"#)}}))
                .collect();
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": tool_calls}));
            for (id, city) in calls {
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": format!("sunny in {city}")}));
            }
        };
        push_step(calls);
        if let Some(call) = step2 {
            push_step(&[call]);
        }
        json!({"model": "gem", "messages": messages, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
    }

    fn model_parts(n: &Value) -> Vec<Value> {
        n["contents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["role"] == "model")
            .flat_map(|c| c["parts"].as_array().unwrap().clone())
            .collect()
    }

    #[test]
    fn thought_signatures_round_trip_through_tool_call_ids() {
        let c = parse_chat(parallel_answer().as_bytes()).unwrap();
        let calls = &c.choices[0].tool_calls;
        // Only the first call of a parallel batch carries a signature.
        assert!(calls[0].id.starts_with("call_0__ts_"), "{}", calls[0].id);
        assert_eq!(calls[1].id, "call_1");
        assert!(calls[0]
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        // 34 bytes + CRC → 51 base64url characters.
        assert_eq!(calls[0].id.len(), "call_0".len() + 5 + 51);
        assert_eq!(
            split_call_id(&calls[0].id),
            ("call_0", Some(SIG_A.to_owned()))
        );
        // Step 2 (sequential): the model calls again, with its own signature.
        let step2 = parse_chat(
            format!(r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"functionCall":{{"name":"get_weather","args":{{"city":"Rome"}}}},"thoughtSignature":"{SIG_B}"}}]}},"finishReason":"STOP"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let id2 = step2.choices[0].tool_calls[0].id.clone();
        assert_eq!(split_call_id(&id2), ("call_0", Some(SIG_B.to_owned())));

        for model in ["gemini-3-pro-preview", "gemini-2.5-flash"] {
            let body = replay(
                &[(&calls[0].id, "Paris"), (&calls[1].id, "London")],
                Some((&id2, "Rome")),
            );
            let n = native(&prepare_chat(&target_for(model), &chat(body)).unwrap());
            // Each signature back in the part it came in, exactly as received; no ids sent.
            assert_eq!(
                model_parts(&n),
                vec![
                    json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG_A}),
                    json!({"functionCall": {"name": "get_weather", "args": {"city": "London"}}}),
                    json!({"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}, "thoughtSignature": SIG_B}),
                ],
                "{model}"
            );
            assert_eq!(
                n["contents"][2]["parts"],
                json!([
                    {"functionResponse": {"name": "get_weather", "response": {"content": "sunny in Paris"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "sunny in London"}}},
                ])
            );
            assert_eq!(n["contents"].as_array().unwrap().len(), 5);
        }
    }

    #[test]
    fn streamed_thought_signatures_round_trip() {
        let input = sse(&[
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Two cities.","thought":true}]}}],"responseId":"r1"}"#,
            &parallel_answer().replace('\n', ""),
        ]);
        let (out, end, _) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        let (_, calls, finish) = testing::reassemble(&out);
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let whole = parse_chat(parallel_answer().as_bytes()).unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        let want: Vec<&str> = whole.choices[0]
            .tool_calls
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, want);
        let body = replay(&[(ids[0], "Paris"), (ids[1], "London")], None);
        let n = native(&prepare_chat(&target_for("gemini-3-flash-preview"), &chat(body)).unwrap());
        assert_eq!(n["contents"][1]["parts"][0]["thoughtSignature"], SIG_A);
        assert!(n["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none());
    }

    #[test]
    fn ids_without_signatures_stay_plain() {
        let answer = r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}},{"functionCall":{"id":"fc-9","name":"get_weather","args":{"city":"London"}}}]},"finishReason":"STOP"}]}"#;
        let c = parse_chat(answer.as_bytes()).unwrap();
        let ids: Vec<&str> = c.choices[0]
            .tool_calls
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["call_0", "fc-9"]);
        let (out, _, _) = run(&sse(&[answer]), false);
        let streamed: Vec<String> = testing::reassemble(&out)
            .1
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(streamed, ["call_0", "fc-9"]);
        // Gemini 2.5 does not validate: no signature is invented.
        let n = native(
            &prepare_chat(
                &target_for("gemini-2.5-flash"),
                &chat(replay(&[("call_0", "Paris"), ("fc-9", "London")], None)),
            )
            .unwrap(),
        );
        assert!(model_parts(&n)
            .iter()
            .all(|p| p.get("thoughtSignature").is_none()));
        // A signature Gemini 3 put on a Gemini-supplied id travels too.
        let id = call_id("fc-9".into(), Some(SIG_B));
        assert!(id.starts_with("fc-9__ts_"));
        assert_eq!(split_call_id(&id), ("fc-9", Some(SIG_B.to_owned())));
    }

    #[test]
    fn gemini_3_gets_the_bypass_signature_on_unsigned_current_turn_calls() {
        // An older turn (not validated), then the current turn: step 1 plain ids (another
        // provider's history), step 2 signed.
        let signed = call_id("call_0".into(), Some(SIG_B));
        let body = json!({"model": "gem", "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "tool_calls": [{"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "cold"},
            {"role": "assistant", "content": "Cold in Oslo."},
            {"role": "user", "content": "and Paris and London?"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "call_def", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_def", "content": "rain"},
            {"role": "assistant", "tool_calls": [{"id": signed, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": signed, "content": "warm"},
        ]});
        let n = native(
            &prepare_chat(&target_for("gemini-3-pro-preview"), &chat(body.clone())).unwrap(),
        );
        let sig = |c: usize, p: usize| {
            n["contents"][c]["parts"][p]
                .get("thoughtSignature")
                .cloned()
        };
        assert_eq!(n["contents"][1]["role"], "model");
        assert_eq!(sig(1, 0), None, "older turns are not validated");
        assert_eq!(n["contents"][5]["role"], "model");
        assert_eq!(sig(5, 0), Some(json!("skip_thought_signature_validator")));
        assert_eq!(sig(5, 1), None, "only the first call of a step");
        assert_eq!(sig(7, 0), Some(json!(SIG_B)), "real signatures are kept");
        // Gemini 2.5 and non-Gemini-3 ids: nothing invented.
        let n = native(&prepare_chat(&target_for("gemini-2.5-pro"), &chat(body)).unwrap());
        assert_eq!(n["contents"][5]["parts"][0].get("thoughtSignature"), None);
        assert_eq!(n["contents"][7]["parts"][0]["thoughtSignature"], SIG_B);
        assert!(validates_signatures("gemini-3-pro-preview"));
        assert!(validates_signatures("gemini-3.1-flash-lite-preview"));
        assert!(validates_signatures("gemini-10-ultra"));
        assert!(!validates_signatures("gemini-2.5-flash"));
        assert!(!validates_signatures("gemini-flash-latest"));
        assert!(!validates_signatures("text-embedding-005"));
    }

    /// Issue 15.2: after a fallback from Gemini, no other host gets the thought signature in a
    /// tool call id: a short id, the same for the call and its result, distinct per step.
    #[test]
    fn other_hosts_get_ids_without_thought_signatures() {
        let a = call_id("call_0".into(), Some(SIG_A));
        let b = call_id("call_0".into(), Some(SIG_B));
        let (ha, hb) = (host_tool_id(&a), host_tool_id(&b));
        assert!(
            ha.starts_with("call_0_") && ha.len() == "call_0_".len() + 16,
            "{ha}"
        );
        assert_ne!(ha, hb, "steps that share the plain id stay apart");
        assert_eq!(host_tool_id(&a), ha, "deterministic");
        for plain in ["call_0", "toolu_01A", "call_0__ts_AAAAAA"] {
            assert_eq!(host_tool_id(plain), plain);
        }
        let req = chat(replay(&[(&a, "Paris")], Some((&b, "London"))));
        let dialects = [
            (Dialect::Anthropic, "claude-x"),
            (Dialect::BedrockAnthropic, "anthropic.claude-x"),
            (Dialect::VertexAnthropic, "claude-x"),
            (Dialect::BedrockConverse, "anthropic.claude-x"),
            (Dialect::OpenAi, "gpt-4o"),
            (Dialect::Watsonx, "ibm/granite"),
            (Dialect::OciGeneric, "meta.llama"),
        ];
        for (dialect, model) in dialects {
            let t = Target {
                dialect,
                upstream_model: model,
                project: Some("p"),
                location: Some("l"),
                api_version: None,
            };
            let up = crate::translate::prepare_chat(&t, &req).unwrap();
            let body = String::from_utf8(up.body).unwrap();
            assert!(!body.contains("__ts_"), "{dialect:?}: {body}");
            assert_eq!(body.matches(ha.as_ref()).count(), 2, "{dialect:?}: {body}");
            assert_eq!(body.matches(hb.as_ref()).count(), 2, "{dialect:?}: {body}");
        }
    }

    #[test]
    fn malformed_signature_ids_are_plain_ids() {
        let good = call_id("call_0".into(), Some(SIG_A));
        let payload = good.strip_prefix("call_0__ts_").unwrap();
        let flipped = {
            let mut b = payload.as_bytes().to_vec();
            b[3] = if b[3] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        for bad in [
            "call_0__ts_".to_owned(),
            "call_0__ts_!!!!".to_owned(),
            "call_0__ts_AAAAAA".to_owned(), // 4 bytes: a checksum without signature
            format!("__ts_{payload}"),      // no plain part
            good[..good.len() - 1].to_owned(), // truncated
            good[..good.len() - 4].to_owned(), // truncated at a base64 boundary
            format!("call_0__ts_{flipped}"), // edited
            format!("{good}="),             // padded
            good.replace('_', "/")
                .replacen("call/0//ts/", "call_0__ts_", 1), // not URL-safe
        ] {
            assert_eq!(split_call_id(&bad), (bad.as_str(), None), "{bad}");
            for (model, want) in [
                ("gemini-2.5-flash", None),
                ("gemini-3-pro-preview", Some(json!(BYPASS_SIGNATURE))),
            ] {
                let n = native(
                    &prepare_chat(&target_for(model), &chat(replay(&[(&bad, "Paris")], None)))
                        .unwrap(),
                );
                assert_eq!(
                    n["contents"][1]["parts"][0]
                        .get("thoughtSignature")
                        .cloned(),
                    want,
                    "{bad} {model}"
                );
                assert_eq!(
                    n["contents"][2]["parts"][0]["functionResponse"]["name"],
                    "get_weather"
                );
            }
        }
        // Signatures that are not canonical standard base64 are not carried.
        assert_eq!(call_id("call_0".into(), Some("sig")), "call_0");
        assert_eq!(call_id("call_0".into(), Some("AY89a18")), "call_0");
        assert_eq!(call_id("call_0".into(), Some("")), "call_0");
        // A provider id that would make the separator ambiguous stays plain.
        assert_eq!(call_id("fc__ts_1".into(), Some(SIG_A)), "fc__ts_1");
        assert_eq!(call_id("fc__ts".into(), Some(SIG_A)), "fc__ts");
        assert_eq!(split_call_id("fc__ts_1"), ("fc__ts_1", None));
    }

    #[test]
    fn tool_results_match_a_signed_call_by_its_plain_id() {
        let signed = call_id("call_0".into(), Some(SIG_A));
        let body = json!({"model": "gem", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": signed, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
        ]});
        let n = native(&prepare_chat(&target_for("gemini-3-pro-preview"), &chat(body)).unwrap());
        assert_eq!(n["contents"][1]["parts"][0]["thoughtSignature"], SIG_A);
        assert_eq!(
            n["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
    }

    // Streams: `data: <GenerateContentResponse>` events, CRLF line ends as Vertex sends them
    // (captured shape: text pieces, then a final chunk with finishReason and full usage).

    fn sse(events: &[&str]) -> Vec<u8> {
        let mut s = Vec::new();
        for e in events {
            s.extend_from_slice(b"data: ");
            s.extend_from_slice(e.as_bytes());
            s.extend_from_slice(b"\r\n\r\n");
        }
        s
    }

    fn run(input: &[u8], include_usage: bool) -> (Vec<u8>, StreamEnd, Option<Usage>) {
        testing::every_split(|| stream(&ctx(include_usage)), input)
    }

    #[test]
    fn streams_text_with_usage() {
        let input = sse(&[
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]}}],"usageMetadata":{"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.5-flash","createTime":"2025-03-10T14:54:45.066123Z","responseId":"tTCwacuE"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":" wörld"}]}}],"usageMetadata":{"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.5-flash","responseId":"tTCwacuE"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"","thoughtSignature":"AY89a18i"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6,"cachedContentTokenCount":1,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.5-flash","responseId":"tTCwacuE"}"#,
        ]);
        let (out, end, usage) = run(&input, true);
        assert_eq!(end, StreamEnd::Complete);
        let ev = testing::events(&out);
        assert_eq!(ev[0]["id"], "chatcmpl-tTCwacuE");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            testing::reassemble(&out),
            ("Hello wörld".into(), vec![], Some("stop".into()))
        );
        let u = ev[ev.len() - 2]["usage"].clone();
        assert_eq!(
            u,
            json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 1}})
        );
        assert_eq!(ev.last().unwrap(), "[DONE]");
        assert_eq!(usage.unwrap().prompt_tokens, 4);
        // Without include_usage no usage chunk, but usage() still reports it.
        let (out, _, usage) = run(&input, false);
        assert!(testing::events(&out)
            .iter()
            .all(|e| e.get("usage").is_none()));
        assert_eq!(usage.unwrap().completion_tokens, 2);
    }

    #[test]
    fn streams_parallel_tool_calls_and_thoughts() {
        let input = sse(&[
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Weather needed.","thought":true}]}}],"responseId":"r2"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"sig"},{"functionCall":{"name":"get_weather","args":{"city":"London"}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":10,"thoughtsTokenCount":5,"totalTokenCount":25},"responseId":"r2"}"#,
        ]);
        let (out, end, usage) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        let (text, calls, finish) = testing::reassemble(&out);
        assert_eq!(text, "");
        assert_eq!(
            calls,
            vec![
                (
                    "call_0".into(),
                    "get_weather".into(),
                    r#"{"city":"Paris"}"#.into()
                ),
                (
                    "call_1".into(),
                    "get_weather".into(),
                    r#"{"city":"London"}"#.into()
                ),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let ev = testing::events(&out);
        assert_eq!(
            ev[1]["choices"][0]["delta"]["reasoning_content"],
            "Weather needed."
        );
        assert_eq!(usage.unwrap().completion_tokens, 15);
    }

    #[test]
    fn mid_stream_error_ends_the_stream() {
        let mut input = sse(&[
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Echo: "}]}}],"usageMetadata":{"trafficType":"ON_DEMAND"},"responseId":"r3"}"#,
            r#"{"error":{"code":429,"message":"Resource exhausted. Please try again later.","status":"RESOURCE_EXHAUSTED"}}"#,
        ]);
        input.extend_from_slice(&sse(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"ignored"}]},"finishReason":"STOP"}]}"#,
        ]));
        let (out, end, usage) = run(&input, false);
        assert_eq!(usage, None, "count-less usageMetadata is no usage");
        assert_eq!(
            end,
            StreamEnd::ProviderError("Resource exhausted. Please try again later.".into())
        );
        let ev = testing::events(&out);
        let last = ev.last().unwrap();
        assert_eq!(last["error"]["type"], "rate_limit_error");
        assert_eq!(last["error"]["code"], "rate_limit_exceeded");
        assert_eq!(testing::reassemble(&out).0, "Echo: ");
        // An error as the first (and only) event, and one as bare JSON lines.
        let (out, end, _) = run(
            &sse(&[
                r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#,
            ]),
            false,
        );
        assert!(matches!(end, StreamEnd::ProviderError(_)));
        let ev = testing::events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["error"]["code"], "INTERNAL");
        assert_eq!(ev[0]["error"]["type"], "server_error");
        let bare = b"{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"The service is currently unavailable.\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n";
        let (out, end, _) = run(bare, false);
        assert!(matches!(end, StreamEnd::ProviderError(_)));
        assert_eq!(testing::events(&out)[0]["error"]["code"], "UNAVAILABLE");
    }

    #[test]
    fn truncated_and_corrupt_streams() {
        // No finishReason before EOF.
        let input =
            sse(&[r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}"#]);
        let (out, end, _) = run(&input, true);
        assert_eq!(end, StreamEnd::Truncated);
        let ev = testing::events(&out);
        assert_eq!(ev.last().unwrap()["error"]["code"], "stream_truncated");
        // Cut in the middle of an event.
        let mut cut = sse(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}]}"#,
        ]);
        cut.truncate(30);
        assert_eq!(run(&cut, false).1, StreamEnd::Truncated);
        // Unreadable JSON.
        assert_eq!(
            run(b"data: {not json}\r\n\r\n", false).1,
            StreamEnd::Truncated
        );
        // Empty stream.
        assert_eq!(run(b"", false).1, StreamEnd::Truncated);
        // A last event missing only its blank line still completes.
        let whole = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"MAX_TOKENS\"}]}";
        let (out, end, _) = run(whole, false);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(
            testing::reassemble(&out),
            ("a".into(), vec![], Some("length".into()))
        );
    }

    #[test]
    fn streams_a_blocked_prompt() {
        let input = sse(&[
            r#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"responseId":"r4"}"#,
        ]);
        let (out, end, _) = run(&input, false);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(
            testing::reassemble(&out),
            ("".into(), vec![], Some("content_filter".into()))
        );
    }

    #[test]
    fn legacy_completion_streams_text() {
        let input = sse(&[
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}"#,
        ]);
        let make = || {
            stream(&ResponseCtx {
                front: FrontDoor::Completions,
                ..ctx(false)
            })
        };
        let (out, end, _) = testing::every_split(make, &input);
        assert_eq!(end, StreamEnd::Complete);
        let ev = testing::events(&out);
        assert_eq!(ev[0]["object"], "text_completion");
        assert_eq!(ev[0]["choices"][0]["text"], "hi");
        assert_eq!(ev[0]["id"], "cmpl-req1");
    }

    // Errors (§4.6).

    #[test]
    fn maps_google_errors() {
        let body = |code: u16, status: &str| {
            format!(
                r#"{{"error":{{"code":{code},"message":"m-{status}","status":"{status}","details":[]}}}}"#
            )
        };
        for (http, status, want, code) in [
            (400, "INVALID_ARGUMENT", 400, Some("INVALID_ARGUMENT")),
            (400, "FAILED_PRECONDITION", 400, Some("FAILED_PRECONDITION")),
            (400, "OUT_OF_RANGE", 400, Some("OUT_OF_RANGE")),
            (401, "UNAUTHENTICATED", 502, Some("UNAUTHENTICATED")),
            (403, "PERMISSION_DENIED", 403, Some("PERMISSION_DENIED")),
            (404, "NOT_FOUND", 404, Some("model_not_found")),
            (409, "ABORTED", 409, Some("ABORTED")),
            (429, "RESOURCE_EXHAUSTED", 429, Some("rate_limit_exceeded")),
            (499, "CANCELLED", 500, Some("CANCELLED")),
            (500, "INTERNAL", 500, Some("INTERNAL")),
            (500, "UNKNOWN", 500, Some("UNKNOWN")),
            (501, "UNIMPLEMENTED", 400, Some("UNIMPLEMENTED")),
            (503, "UNAVAILABLE", 503, Some("UNAVAILABLE")),
            (504, "DEADLINE_EXCEEDED", 504, Some("DEADLINE_EXCEEDED")),
        ] {
            let b = body(http, status);
            assert!(is_google_error(b.as_bytes()));
            let r = error(http, b.as_bytes());
            assert_eq!(r.status, want, "{status}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["code"].as_str(), code, "{status}");
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("m-{status}")));
            assert_eq!(v["error"]["type"], error_type_for_status(want));
        }
        let v: Value =
            serde_json::from_slice(&error(401, body(401, "UNAUTHENTICATED").as_bytes()).body)
                .unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The provider rejected the gateway's credentials."));
        // Non-JSON and foreign bodies.
        for (http, want) in [(502, 500), (429, 429), (401, 502), (408, 504), (413, 413)] {
            let r = error(http, b"<html>Bad Gateway</html>");
            assert_eq!(r.status, want);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("Provider returned HTTP {http}.")));
        }
        let r = error(
            400,
            br#"{"error":{"code":400,"message":"The input token count (1054016) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["error"]["code"].as_str()),
            (400, Some("context_length_exceeded"))
        );
        // The JSON-array form of non-SSE streams.
        let r = error(
            429,
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(r.status, 429);
        // Anthropic's shape is not Google's.
        assert!(!is_google_error(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ));
        assert!(!is_google_error(b"not json"));
    }

    // Embeddings (§4.5).

    #[test]
    fn embeddings_round_trip() {
        let body = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        let req = EmbeddingsRequest::from_body(&body(
            r#"{"model":"e","input":["a","b"],"dimensions":256,"user":"u","input_type":"query"}"#,
        ))
        .unwrap();
        let t = Target {
            upstream_model: "text-embedding-005",
            ..target()
        };
        let call = prepare_embeddings(&t, &req).unwrap();
        assert_eq!(call.path, "/v1/projects/my-proj/locations/us-central1/publishers/google/models/text-embedding-005:predict");
        assert_eq!(call.bodies.len(), 1);
        let v: Value = serde_json::from_slice(&call.bodies[0]).unwrap();
        assert_eq!(
            v,
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 256}})
        );
        assert_eq!(call.dropped, ["user", "input_type"]);
        // gemini-embedding-*: one instance per call; no parameters without dimensions.
        let req =
            EmbeddingsRequest::from_body(&body(r#"{"model":"e","input":["a","b"]}"#)).unwrap();
        let t = Target {
            upstream_model: "gemini-embedding-001",
            ..target()
        };
        let call = prepare_embeddings(&t, &req).unwrap();
        assert_eq!(call.bodies.len(), 2);
        let v: Value = serde_json::from_slice(&call.bodies[1]).unwrap();
        assert_eq!(v, json!({"instances": [{"content": "b"}]}));
        assert!(prepare_embeddings(
            &Target {
                project: None,
                ..target()
            },
            &req
        )
        .is_err());
        let a1 = br#"{"predictions":[{"embeddings":{"values":[0.1,-0.2],"statistics":{"token_count":3,"truncated":false}}}],"metadata":{"billableCharacterCount":1}}"#;
        let a2 = br#"{"predictions":[{"embeddings":{"values":[0.3,0.4],"statistics":{"token_count":4.0,"truncated":false}}}]}"#;
        let answers = [a1.as_slice(), a2.as_slice()].map(|b| Answer {
            body: b,
            input_tokens_header: None,
        });
        let e = parse_embeddings(&answers).unwrap();
        assert_eq!(e.vectors, vec![vec![0.1, -0.2], vec![0.3, 0.4]]);
        assert_eq!(e.prompt_tokens, 7);
        assert!(parse_embeddings(&[Answer {
            body: b"{}",
            input_tokens_header: None
        }])
        .is_err());
    }

    // The fast path for text events (`fast_text` + `ChunkWriter::content_json`).

    /// Texts covering escapes, every control character, quotes, unicode and the empty text.
    pub(crate) fn fast_path_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            "Hello",
            " token1",
            "a \"quoted\" \\ back\nslash",
            "tab\t cr\r ff\u{c} bs\u{8} nul\u{0} us\u{1f} del\u{7f}",
            "é ü 日本 😀 \u{2028}\u{2029} \u{fffd}",
            "</script>&<>'/=",
            "ends with backslash \\",
            "\\\"",
            "\"",
        ]
        .map(str::to_owned)
        .to_vec();
        texts.extend((0u8..0x20).map(|b| format!("c{}c", b as char)));
        texts
    }

    /// Literals that are valid JSON but not as `serde_json` writes them, with their text.
    pub(crate) const OTHER_ESCAPES: [(&str, &str); 7] = [
        (r#""\u00e9""#, "é"),
        (r#""\/""#, "/"),
        (r#""\ud83d\ude00""#, "😀"),
        (r#""\u001F""#, "\u{1f}"),
        (r#""\u000a""#, "\n"),
        (r#""\u0041""#, "A"),
        (r#""\u003cb\u003e""#, "<b>"),
    ];

    /// Literals that are not valid JSON strings (the full parse rejects them).
    pub(crate) const BAD_LITERALS: [&[u8]; 7] = [
        b"\"raw\ncontrol\"",
        b"\"raw\ttab\"",
        br#""bad \x escape""#,
        br#""short \u12""#,
        br#""unterminated"#,
        b"\"bad utf-8 \xff\"",
        br#""ends with \""#,
    ];

    /// A text event as Vertex sends it and in other layouts the fast path takes.
    fn text_layouts(lit: &str) -> Vec<String> {
        vec![
            format!(
                r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":{lit}}}]}}}}],"usageMetadata":{{"trafficType":"ON_DEMAND"}},"modelVersion":"gemini-2.5-flash","createTime":"2025-03-10T14:54:45.066123Z","responseId":"tTCwacuE"}}"#
            ),
            // keys sorted (serde_json's `json!`), as benches/providers.rs builds them
            format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":{lit}}}],"role":"model"}}}}],"createTime":"2025-01-01T00:00:00.000000Z","modelVersion":"gemini-2.0-flash-001","responseId":"bench-response-id","usageMetadata":{{"trafficType":"ON_DEMAND"}}}}"#
            ),
            format!(r#"{{"candidates":[{{"content":{{"parts":[{{"text":{lit}}}]}}}}]}}"#),
            // the Gemini API's spacing
            format!(
                "{{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": {lit}}}],\"role\": \"model\"}}}}],\"usageMetadata\": {{\"trafficType\": \"ON_DEMAND\"}},\"modelVersion\": \"gemini-2.5-flash\"}}"
            ),
            format!(
                "{{  \"candidates\" : [ {{ \"content\" : {{ \"role\" : \"model\" ,\t \"parts\" : [ {{ \"text\" : {lit} }} ] }} }} ] ,\t\"responseId\" : \"r\" }}"
            ),
        ]
    }

    /// Client bytes (checked at every split) for a stream: a first event (which sets the id),
    /// `events`, a last event with the finish reason and usage.
    fn client_bytes(events: &[&str], legacy: bool, every_split: bool) -> Vec<u8> {
        let mut all = vec![
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}],"responseId":"r1"}"#,
        ];
        all.extend(events);
        all.push(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6},"responseId":"r1"}"#);
        let ctx = ResponseCtx {
            front: FrontDoor::legacy(legacy),
            ..ctx(true)
        };
        let input = sse(&all);
        let (out, end) = if every_split {
            let (out, end, _) = testing::every_split(|| stream(&ctx), &input);
            (out, end)
        } else {
            let mut t = stream(&ctx);
            let mut out = Vec::new();
            t.feed(&input, &mut out);
            let end = t.finish(&mut out);
            (out, end)
        };
        assert_eq!(end, StreamEnd::Complete);
        out
    }

    /// The same event with one more (unknown) member: serde ignores it, the fast path
    /// refuses it, so this twin takes the full parse.
    fn full_parse_twin(ev: &str) -> String {
        format!(r#"{{"unknownField":1,{}"#, &ev[1..])
    }

    #[test]
    fn fast_text_agrees_with_the_full_parse() {
        for text in fast_path_texts() {
            let lit = serde_json::to_string(&text).unwrap();
            for ev in text_layouts(&lit) {
                assert_eq!(
                    fast_text(ev.as_bytes()),
                    Some(&*lit),
                    "fast path missed {ev}"
                );
                let twin = full_parse_twin(&ev);
                assert_eq!(fast_text(twin.as_bytes()), None);
                for legacy in [false, true] {
                    let fast = client_bytes(&[&ev], legacy, false);
                    assert_eq!(fast, client_bytes(&[&twin], legacy, false), "{ev}");
                    if !legacy {
                        assert_eq!(testing::reassemble(&fast).0, format!("Hi{text}!"));
                    }
                }
            }
            // The writer: a literal gives the bytes its text gives.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            ChunkWriter::new(&ctx(false)).content(&mut a, &text);
            ChunkWriter::new(&ctx(false)).content_json(&mut b, &lit);
            assert_eq!(a, b, "{lit}");
        }
        // Line ends are not taken (see `scan`).
        let ev = "{\"candidates\":[{\"content\":\r\n{\"parts\":[{\"text\":\"x\"}]}}]}";
        assert_eq!(fast_text(ev.as_bytes()), None);
        // Other escapes take the full parse, whose output is that of the canonical literal.
        for (lit, text) in OTHER_ESCAPES {
            let canonical = serde_json::to_string(text).unwrap();
            for (ev, canon) in text_layouts(lit).iter().zip(text_layouts(&canonical)) {
                assert_eq!(fast_text(ev.as_bytes()), None, "{ev}");
                assert_eq!(
                    client_bytes(&[ev], false, false),
                    client_bytes(&[&canon], false, false)
                );
            }
        }
        for lit in BAD_LITERALS {
            let lit = String::from_utf8_lossy(lit);
            for ev in text_layouts(&lit) {
                let mut bytes = ev.clone().into_bytes();
                if lit.contains('\u{fffd}') {
                    let at = ev.find('\u{fffd}').unwrap();
                    bytes.splice(at..at + '\u{fffd}'.len_utf8(), [0xff]);
                }
                assert_eq!(fast_text(&bytes), None, "{ev}");
                assert!(serde_json::from_slice::<GenResponse<'_>>(&bytes).is_err());
            }
        }
    }

    #[test]
    fn fast_text_leaves_other_events_to_the_full_parse() {
        for ev in [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x","thought":true}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x","thoughtSignature":"AY89"}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]},"finishReason":"STOP"}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}],"usageMetadata":{"promptTokenCount":4,"trafficType":"ON_DEMAND"}}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"},{"text":"y"}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}},{"content":{"parts":[{"text":"y"}]},"index":1}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]},"index":1}]}"#,
            r#"{"candidates":[{"index":0,"content":{"role":"model","parts":[{"text":"x"}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}],"responseId":"a","responseId":"b"}"#,
            r#"{"candidates":[{"content":{"role":"model","role":"model","parts":[{"text":"x"}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}],"promptFeedback":{}}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":1}]}}]}"#,
            r#"{"candidates":[{"content":{"role":null,"parts":[{"text":"x"}]}}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}],"responseId":"a\"b"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}]} {}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"x"}]}}],}"#,
            r#"{"candidates":[{"content":{"role":"model"}}]}"#,
            r#"{"candidates":[]}"#,
            r#"{"error":{"code":429,"message":"x","status":"RESOURCE_EXHAUSTED"}}"#,
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]\u{c}}",
        ] {
            assert_eq!(fast_text(ev.as_bytes()), None, "{ev}");
        }
    }

    #[test]
    fn clean_finds_the_first_byte_needing_attention() {
        let naive = |s: &[u8]| {
            s.iter()
                .position(|&b| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\')
                .unwrap_or(s.len())
        };
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', b' ', b'~', b'!', b'#', b'[', b']'] {
                        let mut s = vec![fill; len];
                        s[at] = b;
                        assert_eq!(json_scan::clean(&s), naive(&s), "{s:?}");
                        if at + 1 < len {
                            s[at + 1] = 0x1f; // a second one after it
                            assert_eq!(json_scan::clean(&s), naive(&s), "{s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sse_line_and_the_fast_path_take_only_single_data_line_events() {
        for raw in [
            &b"data: {\"a\":1}\n\n"[..],
            b"data: {\"a\":1}\r\n\r\n",
            b"data:{\"a\":1}\r\r",
            b"data:  two spaces\n\n",
            b"data: x\r\r\n",
        ] {
            let ev = parse_event(raw);
            assert!(ev.has_data && ev.event.is_none());
            assert_eq!(json_scan::sse_line(raw), Some(&*ev.data), "{raw:?}");
        }
        // A line end anywhere inside the line: the fast path refuses what `sse_line` gives.
        let lit = serde_json::to_string("a \"b\"\n").unwrap();
        for ev in text_layouts(&lit) {
            let raw = format!("data: {ev}\r\n\r\n");
            assert_eq!(
                json_scan::sse_line(raw.as_bytes()).and_then(fast_text),
                Some(&*lit)
            );
            for at in 0..raw.len() - 4 {
                for end in ["\n", "\r", "\r\n"] {
                    let mut cut = raw.clone();
                    cut.insert_str(at, end);
                    assert_eq!(
                        json_scan::sse_line(cut.as_bytes()).and_then(fast_text),
                        None,
                        "{cut:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_and_full_events_mixed_at_every_split() {
        let mut events = Vec::new();
        let texts = &fast_path_texts()[..13];
        for (i, text) in texts.iter().enumerate() {
            let lit = serde_json::to_string(text).unwrap();
            let layouts = text_layouts(&lit);
            let ev = layouts[i % layouts.len()].clone();
            events.push(if i % 3 == 0 { full_parse_twin(&ev) } else { ev });
        }
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let out = client_bytes(&events, false, true);
        let all: String = texts.concat();
        assert_eq!(testing::reassemble(&out).0, format!("Hi{all}!"));
        let twins: Vec<String> = events.iter().map(|e| full_parse_twin(e)).collect();
        let twins: Vec<&str> = twins.iter().map(String::as_str).collect();
        assert_eq!(out, client_bytes(&twins, false, false));
    }

    /// Issue 15.5: a `file` part goes to Gemini as `inlineData` with its media type.
    #[test]
    fn file_parts_become_inline_data() {
        let v = native(
            &prepare(json!({"model":"gem","messages":[{"role":"user","content":[
                {"type":"text","text":"sum up"},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"q3.pdf"}}]}]}))
            .unwrap(),
        );
        assert_eq!(
            v["contents"][0]["parts"],
            json!([{"text":"sum up"},{"inlineData":{"mimeType":"application/pdf","data":"JVBERi0="}}])
        );
    }
}
