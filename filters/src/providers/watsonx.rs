//! IBM watsonx.ai chat and embeddings (`Dialect::Watsonx`).
//!
//! Paths (below `https://{region}.ml.cloud.ibm.com`; the gateway adds the IAM bearer token):
//! - `POST /ml/v1/text/chat?version=V` (JSON answer) or `/ml/v1/text/chat_stream?version=V`
//!   (SSE answer), `V` = the provider's `api_version`, default `2024-05-31`;
//! - `POST /ml/v1/text/embeddings?version=V`.
//!
//! Request body (`/text/chat`; generation parameters are top-level, OpenAI-like):
//! - `model_id` = upstream model, `project_id` = the provider config's project (required: a
//!   400 says so when it is missing);
//! - `messages`: system and developer messages become `system` messages in place; user content
//!   is a string, or parts `text` / `image_url` (only `data:` URLs — the API takes base64
//!   images or uploaded data assets, so `https://` images are rejected naming
//!   `messages[i].content[j].image_url`); system, assistant and tool contents are strings
//!   (images there are rejected the same way); `file` (document) parts → 400 naming
//!   `messages[i].content[j]` (the chat API documents no document input); assistant `tool_calls` and `tool` results with
//!   `tool_call_id` as in OpenAI; `name` is kept; a final assistant message is sent as is;
//! - `tools` (`strict` is not part of watsonx's function schema: dropped as
//!   `tools[].function.strict`), `tool_choice_option` (`none`/`auto`/`required`) or
//!   `tool_choice` (`{type:function,function:{name}}`) — never both;
//! - `max_tokens`, `temperature` (clamped to watsonx's 0–2), `top_p`, `stop`, `n`, `seed`,
//!   `frequency_penalty`, `presence_penalty`;
//! - `response_format`: `text`, `json_object`, and `json_schema` as
//!   `{type:json_schema, json_schema:{name, schema, strict}}` (the shape IBM's own Java SDK
//!   sends to `/ml/v1/text/chat`: IBM/watsonx-ai-java-sdk `TextChatRequest.java`);
//! - `n > 1` is rejected for streams (one choice per stream);
//! - dropped (listed in `dropped`): `user`, `parallel_tool_calls`, every unknown client field,
//!   and reasoning (`reasoning_effort`, or a Messages client's `thinking`): the `/text/chat`
//!   API documents no reasoning control (IBM watsonx.ai API reference, "Infer text chat").
//!
//! Tool-call `arguments` that are not a JSON object are rejected naming
//! `messages[i].tool_calls[j].function.arguments`.
//!
//! Answers: `choices[].message.content` / `tool_calls` / `reasoning_content` (→
//! `Choice.reasoning`), `finish_reason` `stop`/`length`/`tool_calls` unchanged, `time_limit`
//! → `length`, `cancelled` → `stop`, `error` → unreadable answer; `stop` with tool calls is
//! reported as `tool_calls` (some watsonx models answer `stop` after a forced tool call);
//! `usage` (`prompt_tokens`, `completion_tokens`; watsonx reports no cache reads); `id`.
//!
//! Streams (`id:` / `event: message` / `data:` events of OpenAI-like chunks; observed shape:
//! IBM/watsonx-ai-java-sdk `ChatServiceStreamingTest.java`): `delta.content`,
//! `delta.reasoning_content`, `delta.tool_calls[]` (`index`, optional `id`, `function.name`
//! — `""` on later fragments —, `function.arguments`; a first fragment may carry the name and
//! arguments together, and some models never send an id, then `call_{n}` is used). The chunk
//! with `finish_reason` may still carry content; usage arrives in a trailing chunk with
//! `choices: []`. The stream ends at EOF, `data: [DONE]` or `event: close`: Complete when a
//! finish reason was seen, truncated otherwise. `event: error` (data: a watsonx error body or
//! plain text) and chunks carrying `errors` become one OpenAI error event.
//!
//! Embeddings: body `{"model_id","project_id","inputs":[…]}`; `dimensions` is rejected (the
//! API has no output-dimension parameter), `user` and unknown fields are dropped; the answer's
//! `results[].embedding` and `input_token_count` are read.
//!
//! Errors `{"errors":[{"code","message","more_info"}],"trace","status_code"}`: the message is
//! kept and `code` = `errors[0].code`, except 401 (`authentication_token_expired`,
//! `authorization_rejected`, …) → 502 (the gateway's IAM token was refused),
//! `model_not_supported` → 404 `model_not_found`, `token_quota_reached` / 429 → 429
//! `rate_limit_exceeded`; other statuses per the shared mapping.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::embeddings::{Embeddings, EmbeddingsRequest};
use crate::chat::OwnedResponseCtx;
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Message, Part, ResponseCtx,
    ResponseFormat, Role, ToolCall, ToolChoice,
};
use crate::openai::{error_type_for_status, InvalidRequest, Usage};
use crate::providers::gemini::host_tool_id;
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    Answer, AnswerFormat, BadAnswer, EmbeddingsCall, ErrorHints, ErrorReply, StreamEnd,
    StreamTranslator, Target, Translator, UpstreamRequest,
};

/// The API version date used when the provider config names none.
pub const DEFAULT_VERSION: &str = "2024-05-31";

// ---------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
struct ChatBody<'a> {
    model_id: &'a str,
    project_id: &'a str,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice_option: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<NamedChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<FormatOut<'a>>,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum PartOut<'a> {
    #[serde(rename = "text")]
    Text { text: &'a str },
    #[serde(rename = "image_url")]
    Image { image_url: ImageOut<'a> },
}

#[derive(Serialize)]
struct ImageOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct CallOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FnOut<'a>,
}

#[derive(Serialize)]
struct FnOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ToolFn<'a>,
}

#[derive(Serialize)]
struct ToolFn<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Serialize)]
struct NamedChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: NameOnly<'a>,
}

#[derive(Serialize)]
struct NameOnly<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct FormatOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<SchemaOut<'a>>,
}

#[derive(Serialize)]
struct SchemaOut<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// `?version=…`, percent-encoding anything outside the unreserved set.
fn version_query(t: &Target<'_>) -> String {
    let v = t
        .api_version
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_VERSION);
    let mut q = String::with_capacity(9 + v.len());
    q.push_str("?version=");
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

fn project<'a>(t: &Target<'a>) -> Result<&'a str, InvalidRequest> {
    t.project.filter(|p| !p.is_empty()).ok_or_else(|| {
        InvalidRequest::new(
            "This watsonx.ai model cannot be called: the gateway's provider config needs project_id (the watsonx.ai project to bill).",
            None,
        )
    })
}

/// A `file` (document) part: the chat API documents no document input, so it is refused by
/// name rather than dropped.
fn file_rejected(i: usize, j: usize) -> InvalidRequest {
    let param = format!("messages[{i}].content[{j}]");
    InvalidRequest::new(
        format!("Invalid '{param}': watsonx.ai chat models do not accept file (document) parts; send the document's text instead, or use a model on a provider that reads PDFs."),
        Some(&param),
    )
}

fn image_rejected(i: usize, j: usize, why: &str) -> InvalidRequest {
    let param = format!("messages[{i}].content[{j}].image_url");
    InvalidRequest::new(format!("Invalid '{param}': {why}"), Some(&param))
}

/// The text of a message whose watsonx content is a plain string (images rejected).
fn string_content(m: &Message, i: usize) -> Result<Cow<'_, str>, InvalidRequest> {
    let mut texts = Vec::with_capacity(m.content.len());
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t.as_str()),
            Part::Image { .. } => {
                return Err(image_rejected(
                    i,
                    j,
                    "watsonx.ai accepts images only in user messages.",
                ))
            }
            Part::File { .. } => return Err(file_rejected(i, j)),
        }
    }
    Ok(match texts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join("\n")),
    })
}

/// Checks that a tool call's arguments are a JSON object without building a tree.
fn check_arguments(args: &str, i: usize, j: usize) -> Result<(), InvalidRequest> {
    let is_object = args.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(args).is_ok();
    if is_object {
        return Ok(());
    }
    let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
    Err(InvalidRequest::new(
        format!("Invalid '{param}': expected a JSON object encoded as a string."),
        Some(&param),
    ))
}

fn message<'a>(i: usize, m: &'a Message) -> Result<Msg<'a>, InvalidRequest> {
    let mut out = Msg {
        role: "user",
        content: None,
        name: m.name.as_deref(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    match m.role {
        Role::System | Role::Developer => {
            out.role = "system";
            out.content = Some(Content::Text(string_content(m, i)?));
        }
        Role::User => {
            out.content = Some(match m.content.as_slice() {
                [Part::Text(t)] => Content::Text(Cow::Borrowed(t)),
                parts => Content::Parts(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| match p {
                            Part::Text(text) => Ok(PartOut::Text { text }),
                            Part::Image { url, detail } => {
                                if !url.starts_with("data:") {
                                    return Err(image_rejected(
                                        i,
                                        j,
                                        "watsonx.ai takes images as base64 data URLs (data:<mime>;base64,…), not links.",
                                    ));
                                }
                                Ok(PartOut::Image {
                                    image_url: ImageOut {
                                        url,
                                        detail: detail.as_deref(),
                                    },
                                })
                            }
                            Part::File { .. } => Err(file_rejected(i, j)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
            });
        }
        Role::Assistant => {
            out.role = "assistant";
            let text = string_content(m, i)?;
            if !text.is_empty() {
                out.content = Some(Content::Text(text));
            }
            out.tool_calls = m
                .tool_calls
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    check_arguments(&c.arguments, i, j)?;
                    Ok(CallOut {
                        id: host_tool_id(&c.id),
                        kind: "function",
                        function: FnOut {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                })
                .collect::<Result<_, InvalidRequest>>()?;
        }
        Role::Tool => {
            out.role = "tool";
            out.name = None;
            out.content = Some(Content::Text(string_content(m, i)?));
            out.tool_call_id = m.tool_call_id.as_deref().map(host_tool_id);
        }
    }
    Ok(out)
}

/// Builds the `/ml/v1/text/chat[_stream]` request.
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    let project_id = project(t)?;
    if req.stream && req.n.is_some_and(|n| n > 1) {
        return Err(InvalidRequest::new(
            "Invalid 'n': watsonx.ai streams one choice; use n=1 or a non-streaming request.",
            Some("n"),
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dropped: Vec<String> = Vec::new();
    if req.tools.iter().any(|t| t.strict.is_some()) {
        dropped.push("tools[].function.strict".to_owned());
    }
    let tools = req
        .tools
        .iter()
        .map(|tool| ToolOut {
            kind: "function",
            function: ToolFn {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
            },
        })
        .collect();
    let (tool_choice_option, tool_choice) = match &req.tool_choice {
        None => (None, None),
        Some(ToolChoice::None) => (Some("none"), None),
        Some(ToolChoice::Auto) => (Some("auto"), None),
        Some(ToolChoice::Required) => (Some("required"), None),
        Some(ToolChoice::Named(name)) => (
            None,
            Some(NamedChoice {
                kind: "function",
                function: NameOnly { name },
            }),
        ),
    };
    let response_format = req.response_format.as_ref().map(|f| match f {
        ResponseFormat::Text => FormatOut {
            kind: "text",
            json_schema: None,
        },
        ResponseFormat::JsonObject => FormatOut {
            kind: "json_object",
            json_schema: None,
        },
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => FormatOut {
            kind: "json_schema",
            json_schema: Some(SchemaOut {
                name,
                schema,
                strict: *strict,
            }),
        },
    });
    let body = ChatBody {
        model_id: t.upstream_model,
        project_id,
        messages,
        tools,
        tool_choice_option,
        tool_choice,
        max_tokens: req.max_tokens,
        temperature: req.temperature.map(|x| x.clamp(0.0, 2.0)),
        top_p: req.top_p,
        stop: &req.stop,
        n: req.n,
        seed: req.seed,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        response_format,
    };
    if req.user.is_some() {
        dropped.push("user".to_owned());
    }
    if req.parallel_tool_calls.is_some() {
        dropped.push("parallel_tool_calls".to_owned());
    }
    dropped.extend(req.other_names().map(str::to_owned));
    if req.reasoning.is_some() {
        dropped.push(crate::chat::request::Reasoning::PARAM.to_owned());
    }
    let (path, answer) = if req.stream {
        ("/ml/v1/text/chat_stream", AnswerFormat::Sse)
    } else {
        ("/ml/v1/text/chat", AnswerFormat::Json)
    };
    Ok(UpstreamRequest {
        path: format!("{path}{}", version_query(t)),
        body: serde_json::to_vec(&body).expect("request bodies serialize"),
        headers: Vec::new(),
        answer,
        dropped,
    })
}

// ---------------------------------------------------------------------------------------
// Answers

#[derive(Deserialize)]
struct ChatAnswer {
    id: Option<String>,
    #[serde(default)]
    choices: Vec<AnswerChoice>,
    usage: Option<WxUsage>,
}

#[derive(Deserialize)]
struct AnswerChoice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<AnswerCall>>,
}

#[derive(Deserialize)]
struct AnswerCall {
    id: Option<String>,
    function: AnswerFn,
}

#[derive(Deserialize)]
struct AnswerFn {
    name: String,
    arguments: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WxUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WxUsage> for Usage {
    fn from(u: WxUsage) -> Usage {
        Usage::new(u.prompt_tokens, u.completion_tokens)
    }
}

/// watsonx `finish_reason` → OpenAI; `Err` for `error`.
fn finish_reason(reason: &str, has_tool_calls: bool) -> Result<FinishReason, ()> {
    Ok(match reason {
        "length" | "time_limit" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        "error" => return Err(()),
        // stop, cancelled, unknown values
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    })
}

/// Reads a `/ml/v1/text/chat` answer.
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    let a: ChatAnswer = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable watsonx.ai chat answer: {e}")))?;
    if a.choices.is_empty() {
        return Err(BadAnswer("watsonx.ai answered without choices".into()));
    }
    let choices = a
        .choices
        .into_iter()
        .map(|c| {
            let m = c.message.unwrap_or(AnswerMessage {
                content: None,
                reasoning_content: None,
                tool_calls: None,
            });
            let tool_calls: Vec<ToolCall> = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(j, tc)| ToolCall {
                    id: tc
                        .id
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("call_{j}")),
                    name: tc.function.name,
                    arguments: tc
                        .function
                        .arguments
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "{}".to_owned()),
                })
                .collect();
            let finish = match c.finish_reason.as_deref() {
                None | Some("") => finish_reason("stop", !tool_calls.is_empty()),
                Some(r) => finish_reason(r, !tool_calls.is_empty()),
            }
            .map_err(|()| BadAnswer("watsonx.ai reported an error generating the answer".into()))?;
            let content = m.content.filter(|c| !c.is_empty() || tool_calls.is_empty());
            Ok(Choice {
                content,
                reasoning: m.reasoning_content.filter(|r| !r.is_empty()),
                thinking_blocks: Vec::new(),
                tool_calls,
                finish_reason: Some(finish),
            })
        })
        .collect::<Result<Vec<_>, BadAnswer>>()?;
    Ok(Completion {
        id: a.id,
        choices,
        usage: a.usage.map(Usage::from),
    })
}

// ---------------------------------------------------------------------------------------
// Stream

// Stream events are parsed into borrowed structs: `Cow<str>` fields (not `Option<Cow>`, which
// serde always copies) and no per-event `Vec`s, so a plain text chunk allocates nothing.

#[derive(Deserialize)]
struct StreamChunk<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model_id: Cow<'a, str>,
    /// Choice 0 only: the gateway streams one choice.
    #[serde(default, borrow, deserialize_with = "first_choice")]
    choices: Option<StreamChoice<'a>>,
    usage: Option<WxUsage>,
    #[serde(default, borrow)]
    errors: Vec<WxError<'a>>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Cow<'a, str>,
    #[serde(default, borrow)]
    reasoning_content: Cow<'a, str>,
    #[serde(default, borrow)]
    tool_calls: Vec<DeltaCall<'a>>,
}

#[derive(Deserialize)]
struct DeltaCall<'a> {
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: Option<DeltaFn<'a>>,
}

#[derive(Deserialize)]
struct DeltaFn<'a> {
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Cow<'a, str>,
}

/// Reads a `choices` array keeping only the choice with index 0.
fn first_choice<'de: 'a, 'a, D>(d: D) -> Result<Option<StreamChoice<'a>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct First<'a>(std::marker::PhantomData<StreamChoice<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for First<'a> {
        type Value = Option<StreamChoice<'a>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of choices")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut first = None;
            while let Some(c) = seq.next_element::<StreamChoice<'a>>()? {
                if first.is_none() && c.index.unwrap_or(0) == 0 {
                    first = Some(c);
                }
            }
            Ok(first)
        }
    }
    d.deserialize_any(First(std::marker::PhantomData))
}

/// One provider tool call (by the provider's `index`) in the client's numbering.
struct CallState {
    key: u32,
    id: Option<String>,
    /// Client index once the first fragment (id + name) was written.
    ordinal: Option<usize>,
    /// Arguments received before the call's name.
    pending: String,
}

struct WxStream {
    framer: SseFramer,
    writer: ChunkWriter,
    ctx: OwnedResponseCtx,
    id_set: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    calls: Vec<CallState>,
    started_calls: usize,
    last_key: u32,
    end: Option<StreamEnd>,
}

/// A translator for a `/ml/v1/text/chat_stream` answer.
pub fn stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(WxStream {
        framer: SseFramer::new(),
        writer: ChunkWriter::new(ctx),
        ctx: OwnedResponseCtx::new(ctx),
        id_set: false,
        finish: None,
        usage: None,
        calls: Vec::new(),
        started_calls: 0,
        last_key: 0,
        end: None,
    })
}

impl WxStream {
    fn on_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        let ev = parse_event(raw);
        match ev.event {
            Some(b"error") => return self.provider_error(out, &ev.data),
            Some(b"close") => return self.complete(out),
            _ => {}
        }
        if !ev.has_data || ev.data.iter().all(u8::is_ascii_whitespace) {
            return; // comments, keep-alives, id-only events
        }
        if &*ev.data == b"[DONE]" {
            return self.complete(out);
        }
        let chunk: StreamChunk<'_> = match serde_json::from_slice(&ev.data) {
            Ok(c) => c,
            Err(_) => {
                self.writer.truncated(out);
                self.end = Some(StreamEnd::Truncated);
                return;
            }
        };
        if !chunk.errors.is_empty() {
            return self.provider_error(out, &ev.data);
        }
        if !self.id_set {
            self.id_set = true;
            let ctx = self.ctx.get();
            self.writer
                .set_id(&ctx, Some(chunk.id.as_ref()).filter(|id| !id.is_empty()));
            self.writer.provider_model(&chunk.model_id);
        }
        self.writer.start(out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u.into());
        }
        let Some(choice) = chunk.choices else {
            return;
        };
        if let Some(d) = choice.delta {
            self.writer.reasoning(out, &d.reasoning_content);
            self.writer.content(out, &d.content);
            for tc in d.tool_calls {
                self.tool_delta(out, tc);
            }
        }
        match choice.finish_reason.as_deref() {
            None | Some("") => {}
            Some(r) => match finish_reason(r, self.started_calls > 0) {
                Ok(f) => self.finish = Some(f),
                Err(()) => self.fail(
                    out,
                    "watsonx.ai reported an error while generating the answer.",
                    "server_error",
                    Some("error"),
                ),
            },
        }
    }

    fn tool_delta(&mut self, out: &mut Vec<u8>, tc: DeltaCall<'_>) {
        let key = tc.index.unwrap_or(self.last_key);
        self.last_key = key;
        let pos = match self.calls.iter().position(|c| c.key == key) {
            Some(p) => p,
            None => {
                self.calls.push(CallState {
                    key,
                    id: None,
                    ordinal: None,
                    pending: String::new(),
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[pos];
        if !tc.id.is_empty() && call.id.is_none() {
            call.id = Some(tc.id.clone().into_owned());
        }
        let (name, args) = match &tc.function {
            Some(f) => (
                Some(f.name.as_ref()).filter(|s| !s.is_empty()),
                f.arguments.as_ref(),
            ),
            None => (None, ""),
        };
        match call.ordinal {
            Some(ordinal) => self.writer.tool_call_arguments(out, ordinal, args),
            None => match name {
                Some(name) => {
                    let ordinal = self.started_calls;
                    self.started_calls += 1;
                    call.ordinal = Some(ordinal);
                    let synthesized;
                    let id = match &call.id {
                        Some(id) => id.as_str(),
                        None => {
                            synthesized = format!("call_{ordinal}");
                            &synthesized
                        }
                    };
                    self.writer.tool_call_start(out, ordinal, id, name);
                    let pending = std::mem::take(&mut call.pending);
                    self.writer.tool_call_arguments(out, ordinal, &pending);
                    self.writer.tool_call_arguments(out, ordinal, args);
                }
                None => call.pending.push_str(args),
            },
        }
    }

    /// `event: error` data, or a chunk with `errors`: a watsonx error body or plain text.
    fn provider_error(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let parsed = serde_json::from_slice::<ErrorBody<'_>>(data).ok();
        let first = parsed.as_ref().and_then(|b| b.errors.first());
        let message = match first {
            Some(e) => e
                .message
                .as_deref()
                .unwrap_or("watsonx.ai reported an error.")
                .to_owned(),
            None => {
                let text = String::from_utf8_lossy(data);
                let text = text.trim();
                if text.is_empty() || text == "{}" {
                    "watsonx.ai reported an error mid-stream.".to_owned()
                } else {
                    text.to_owned()
                }
            }
        };
        let code = first.and_then(|e| e.code.as_deref()).map(str::to_owned);
        let kind = match parsed.and_then(|b| b.status_code) {
            Some(s) if (400..600).contains(&s) => error_type_for_status(s),
            _ => "server_error",
        };
        self.fail(out, &message, kind, code.as_deref());
    }

    fn fail(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: Option<&str>) {
        self.writer.error(out, message, kind, code);
        self.end = Some(StreamEnd::ProviderError(message.to_owned()));
    }

    /// The provider's stream ended (EOF, `[DONE]`, `event: close`).
    fn complete(&mut self, out: &mut Vec<u8>) {
        match self.finish {
            Some(reason) => {
                let reason = match reason {
                    FinishReason::Stop if self.started_calls > 0 => FinishReason::ToolCalls,
                    r => r,
                };
                self.writer.finish(out, reason);
                if let Some(u) = self.usage {
                    self.writer.usage(out, u);
                }
                self.writer.done(out);
                self.end = Some(StreamEnd::Complete);
            }
            None => {
                self.writer.truncated(out);
                self.end = Some(StreamEnd::Truncated);
            }
        }
    }
}

impl StreamTranslator for WxStream {
    fn ended(&self) -> bool {
        self.end.is_some()
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.writer.final_response()
    }

    fn answer(&mut self) -> Option<&mut crate::translate::StreamAnswer> {
        Some(self.writer.answer())
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(chunk, |raw| self.on_event(raw, out));
        self.framer = framer;
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        if self.end.is_none() {
            // An unterminated last event still counts when it is complete JSON.
            let rest = self.framer.take_rest();
            if !rest.iter().all(u8::is_ascii_whitespace) {
                self.on_event(&rest, out);
            }
        }
        if self.end.is_none() {
            self.complete(out);
        }
        self.end.clone().unwrap_or(StreamEnd::Truncated)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------
// Embeddings

#[derive(Serialize)]
struct EmbedBody<'a> {
    model_id: &'a str,
    project_id: &'a str,
    inputs: &'a [String],
}

/// Builds the `/ml/v1/text/embeddings` call.
pub fn prepare_embeddings(
    t: &Target<'_>,
    req: &EmbeddingsRequest,
) -> Result<EmbeddingsCall, InvalidRequest> {
    let project_id = project(t)?;
    if req.dimensions.is_some() {
        return Err(InvalidRequest::new(
            "Invalid 'dimensions': watsonx.ai embedding models return their native size and take no dimensions parameter.",
            Some("dimensions"),
        ));
    }
    let body = EmbedBody {
        model_id: t.upstream_model,
        project_id,
        inputs: &req.inputs,
    };
    let mut dropped = Vec::new();
    if req.user.is_some() {
        dropped.push("user".to_owned());
    }
    dropped.extend(req.other.iter().map(|(k, _)| k.clone()));
    Ok(EmbeddingsCall {
        path: format!("/ml/v1/text/embeddings{}", version_query(t)),
        bodies: vec![serde_json::to_vec(&body).expect("request bodies serialize")],
        headers: Vec::new(),
        dropped,
    })
}

#[derive(Deserialize)]
struct EmbedAnswer {
    results: Vec<EmbedResult>,
    #[serde(default)]
    input_token_count: u64,
}

#[derive(Deserialize)]
struct EmbedResult {
    embedding: Vec<f32>,
}

/// Reads the `/ml/v1/text/embeddings` answer(s).
pub fn parse_embeddings(answers: &[Answer<'_>]) -> Result<Embeddings, BadAnswer> {
    let mut e = Embeddings::default();
    for a in answers {
        let r: EmbedAnswer = serde_json::from_slice(a.body)
            .map_err(|err| BadAnswer(format!("unreadable watsonx.ai embeddings answer: {err}")))?;
        e.vectors.extend(r.results.into_iter().map(|r| r.embedding));
        e.prompt_tokens += r.input_token_count;
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------
// Errors

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(default, borrow)]
    errors: Vec<WxError<'a>>,
    status_code: Option<u16>,
}

#[derive(Deserialize)]
struct WxError<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

const CREDENTIALS: &str = "The provider rejected the gateway's credentials.";

/// Maps a watsonx.ai error answer to the client's OpenAI error.
pub fn error(status: u16, body: &[u8]) -> ErrorReply {
    let parsed = serde_json::from_slice::<ErrorBody<'_>>(body).ok();
    let Some(first) = parsed.as_ref().and_then(|b| b.errors.first()) else {
        let message = format!("Provider returned HTTP {status}.");
        return match mapped_status(status) {
            502 => ErrorReply::new(502, &format!("{CREDENTIALS} {message}"), None),
            s => ErrorReply::new(s, &message, None),
        };
    };
    let code = first.code.as_deref().unwrap_or("");
    let message = first
        .message
        .as_deref()
        .unwrap_or("watsonx.ai returned an error.");
    let auth_code = matches!(
        code,
        "authentication_token_expired" | "authentication_token_not_valid"
    );
    if status == 401 || auth_code {
        return ErrorReply::new(
            502,
            &format!("{CREDENTIALS} {message}"),
            Some(code).filter(|c| !c.is_empty()),
        );
    }
    if code == "model_not_supported" {
        return ErrorReply::new(404, message, Some("model_not_found"));
    }
    if code == "token_quota_reached" || status == 429 {
        return ErrorReply::new(429, message, Some("rate_limit_exceeded"));
    }
    let out = mapped_status(status);
    let code = if out == 400 && looks_like_context_length(message) {
        "context_length_exceeded"
    } else {
        code
    };
    ErrorReply::new(out, message, Some(code).filter(|c| !c.is_empty()))
}

fn looks_like_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("context length")
        || m.contains("context window")
        || m.contains("maximum sequence length")
}

fn mapped_status(status: u16) -> u16 {
    match status {
        401 => 502,
        400 | 403 | 404 | 409 | 413 | 422 | 429 => status,
        408 | 504 => 504,
        503 => 503,
        s if s >= 500 => 500,
        s if (400..500).contains(&s) => 400,
        _ => 500,
    }
}

// ---------------------------------------------------------------------------------------
// Translator

/// The translator for [`crate::translate::Dialect::Watsonx`]: chat and embeddings.
pub struct Watsonx;

impl Translator for Watsonx {
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

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::FrontDoor;
    use crate::openai::{parse_request, Endpoint};
    use crate::translate::testing::{events, every_split, reassemble};
    use crate::translate::Dialect;
    use serde_json::json;

    fn target<'a>(project: Option<&'a str>, version: Option<&'a str>) -> Target<'a> {
        Target {
            dialect: Dialect::Watsonx,
            upstream_model: "ibm/granite-3-8b-instruct",
            project,
            location: None,
            api_version: version,
        }
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::from_parsed(
            &parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn prepared(body: &str) -> (UpstreamRequest, Value) {
        let up = prepare_chat(&target(Some("p-1"), None), &chat(body)).unwrap();
        let v = serde_json::from_slice(&up.body).unwrap();
        (up, v)
    }

    #[test]
    fn rich_request_maps_field_by_field() {
        let (up, v) = prepared(
            r#"{"model":"granite","messages":[
            {"role":"system","content":"be brief"},
            {"role":"developer","content":[{"type":"text","text":"use metric"}]},
            {"role":"user","name":"ann","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"c2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"London\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"rain"}]},
            {"role":"assistant","content":"Paris is sunny."},
            {"role":"user","content":"thanks"}],
            "max_tokens":50,"temperature":2.5,"top_p":0.9,"stop":["END","STOP"],"seed":7,"n":2,
            "frequency_penalty":0.1,"presence_penalty":0.2,"user":"u1","parallel_tool_calls":true,
            "logprobs":true,
            "tools":[{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}}],
            "tool_choice":"required",
            "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}}}"#,
        );
        assert_eq!(up.path, "/ml/v1/text/chat?version=2024-05-31");
        assert_eq!(up.answer, AnswerFormat::Json);
        assert_eq!(v["model_id"], "ibm/granite-3-8b-instruct");
        assert_eq!(v["project_id"], "p-1");
        let m = &v["messages"];
        assert_eq!(m[0], json!({"role":"system","content":"be brief"}));
        assert_eq!(m[1], json!({"role":"system","content":"use metric"}));
        assert_eq!(
            m[2],
            json!({"role":"user","name":"ann","content":[{"type":"text","text":"look"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]})
        );
        assert_eq!(
            m[3],
            json!({"role":"assistant","tool_calls":[
                {"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"c2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"London\"}"}}]})
        );
        assert_eq!(
            m[4],
            json!({"role":"tool","content":"sunny","tool_call_id":"c1"})
        );
        assert_eq!(
            m[5],
            json!({"role":"tool","content":"rain","tool_call_id":"c2"})
        );
        assert_eq!(
            m[6],
            json!({"role":"assistant","content":"Paris is sunny."})
        );
        assert_eq!(m[7], json!({"role":"user","content":"thanks"}));
        assert_eq!(v["max_tokens"], 50);
        assert_eq!(v["temperature"], 2.0, "clamped to watsonx's 0-2");
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["stop"], json!(["END", "STOP"]));
        assert_eq!(v["seed"], 7);
        assert_eq!(v["n"], 2);
        assert_eq!(v["frequency_penalty"], 0.1);
        assert_eq!(v["presence_penalty"], 0.2);
        assert_eq!(
            v["tools"],
            json!([{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])
        );
        assert_eq!(v["tool_choice_option"], "required");
        assert!(v.get("tool_choice").is_none());
        assert_eq!(
            v["response_format"],
            json!({"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}})
        );
        for absent in ["user", "parallel_tool_calls", "logprobs", "stream"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        assert_eq!(
            up.dropped,
            vec![
                "tools[].function.strict",
                "user",
                "parallel_tool_calls",
                "logprobs"
            ]
        );
    }

    #[test]
    fn stream_path_named_tool_choice_and_version() {
        let req = chat(
            r#"{"model":"g","messages":[{"role":"user","content":"hi"}],"stream":true,
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},
            "response_format":{"type":"json_object"}}"#,
        );
        let up = prepare_chat(&target(Some("p"), Some("2025-02-11")), &req).unwrap();
        assert_eq!(up.path, "/ml/v1/text/chat_stream?version=2025-02-11");
        assert_eq!(up.answer, AnswerFormat::Sse);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            v["tool_choice"],
            json!({"type":"function","function":{"name":"f"}})
        );
        assert!(v.get("tool_choice_option").is_none(), "never both");
        assert_eq!(
            v["tools"][0]["function"]["parameters"],
            json!({"type":"object","properties":{}})
        );
        assert_eq!(v["response_format"], json!({"type":"json_object"}));
        assert_eq!(v["messages"], json!([{"role":"user","content":"hi"}]));
        assert!(up.dropped.is_empty());
    }

    #[test]
    fn rejections_name_their_parameter() {
        let t = target(Some("p"), None);
        for (body, param) in [
            (
                r#"{"model":"g","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
                "messages[0].content[0].image_url",
            ),
            (
                r#"{"model":"g","messages":[{"role":"system","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"user","content":"x"}]}"#,
                "messages[0].content[1].image_url",
            ),
            (
                r#"{"model":"g","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"{"model":"g","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}]}"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"{"model":"g","messages":[{"role":"user","content":"x"}],"n":2,"stream":true}"#,
                "n",
            ),
        ] {
            let err = prepare_chat(&t, &chat(body)).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
        }
        let err = prepare_chat(
            &target(None, None),
            &chat(r#"{"model":"g","messages":[{"role":"user","content":"x"}]}"#),
        )
        .unwrap_err();
        assert!(err.message.contains("project_id"), "{}", err.message);
    }

    #[test]
    fn answers_text_tool_calls_reasoning_and_usage() {
        // Response shape: PROTOCOLS 6.2 / IBM watsonx node SDK `TextChatResponse`.
        let c = parse_chat(
            br#"{"id":"chatcmpl-abc","model_id":"ibm/granite","model":"ibm/granite","model_version":"1.1.0","created":1700000000,
            "created_at":"2025-01-01T00:00:00.000Z",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","reasoning_content":"think"},"finish_reason":"stop"}],
            "usage":{"completion_tokens":7,"prompt_tokens":30,"total_tokens":37},"system":{"warnings":[{"message":"w","id":"disclaimer_warning"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.id.as_deref(), Some("chatcmpl-abc"));
        assert_eq!(c.choices[0].content.as_deref(), Some("Hello there"));
        assert_eq!(c.choices[0].reasoning.as_deref(), Some("think"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(c.usage, Some(Usage::new(30, 7)));

        let c = parse_chat(
            br#"{"id":"chatcmpl-t","choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[
              {"id":"chatcmpl-tool-1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
              {"type":"function","function":{"name":"weather","arguments":"{\"city\":\"London\"}"}}]},"finish_reason":"tool_calls"}],
              "usage":{"completion_tokens":10,"prompt_tokens":5,"total_tokens":15}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content, None);
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(ch.tool_calls[0].id, "chatcmpl-tool-1");
        assert_eq!(ch.tool_calls[1].id, "call_1");
        assert_eq!(ch.tool_calls[1].arguments, "{\"city\":\"London\"}");

        for (reason, expected) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("time_limit", FinishReason::Length),
            ("cancelled", FinishReason::Stop),
        ] {
            let body = format!(
                r#"{{"id":"x","choices":[{{"index":0,"message":{{"role":"assistant","content":"a"}},"finish_reason":"{reason}"}}]}}"#
            );
            assert_eq!(
                parse_chat(body.as_bytes()).unwrap().choices[0].finish_reason,
                Some(expected),
                "{reason}"
            );
        }
        assert!(parse_chat(br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"error"}]}"#).is_err());
        assert!(parse_chat(b"<html>").is_err());
        assert!(parse_chat(br#"{"id":"x","choices":[]}"#).is_err());
    }

    fn ctx(include_usage: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "granite",
            created: 9,
            fallback_id: "req-1",
            front: FrontDoor::Chat,
            include_usage,
            echo: "",
        }
    }

    fn ev(id: usize, data: &str) -> String {
        format!("id: {id}\nevent: message\ndata: {data}\n\n")
    }

    fn chunk(delta: &str, finish: Option<&str>) -> String {
        let f = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
        format!(
            r#"{{"id":"chatcmpl-5d8c","object":"chat.completion.chunk","model_id":"meta-llama/llama-3-3-70b-instruct","model":"meta-llama/llama-3-3-70b-instruct","choices":[{{"index":0,"finish_reason":{f},"delta":{delta}}}],"created":1749736055,"model_version":"4.0.0","created_at":"2025-06-12T13:47:35.541Z"}}"#
        )
    }

    const USAGE: &str = r#"{"id":"chatcmpl-5d8c","object":"chat.completion.chunk","model_id":"m","model":"m","choices":[],"created":1749736055,"model_version":"4.0.0","created_at":"2025-06-12T13:47:35.564Z","usage":{"completion_tokens":3,"prompt_tokens":38,"total_tokens":41}}"#;

    /// A text stream in the shape of IBM/watsonx-ai-java-sdk ChatServiceStreamingTest: role
    /// chunk, content pieces, the last piece together with finish_reason, then a usage chunk
    /// with `choices: []`; no [DONE].
    fn text_stream() -> String {
        [
            ev(1, &chunk(r#"{"role":"assistant","content":""}"#, None)),
            ev(2, &chunk(r#"{"content":"Ciao "}"#, None)),
            ev(3, &chunk(r#"{"content":"é"}"#, None)),
            ev(4, &chunk(r#"{"content":"!"}"#, Some("stop"))),
            ev(5, USAGE),
        ]
        .concat()
    }

    #[test]
    fn text_stream_at_every_split() {
        let input = text_stream();
        let (out, end, usage) = every_split(|| stream(&ctx(true)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(38, 3)));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Ciao é!");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        let evs = events(&out);
        assert_eq!(evs[0]["id"], "chatcmpl-5d8c", "the provider's id");
        assert_eq!(evs[0]["model"], "granite");
        assert_eq!(evs[evs.len() - 2]["usage"]["prompt_tokens"], 38);
        assert_eq!(evs[evs.len() - 1], "[DONE]");
        // Without include_usage the usage chunk is not printed, but usage is still reported.
        let (out, _, usage) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
        assert_eq!(usage, Some(Usage::new(38, 3)));
    }

    #[test]
    fn first_event_is_written_immediately() {
        let mut t = stream(&ctx(false));
        let mut out = Vec::new();
        t.feed(
            ev(1, &chunk(r#"{"role":"assistant","content":""}"#, None)).as_bytes(),
            &mut out,
        );
        assert!(!out.is_empty());
        assert_eq!(events(&out)[0]["choices"][0]["delta"]["role"], "assistant");
    }

    #[test]
    fn parallel_tool_calls_stream() {
        // Two calls, as granite sends them (id+name, then whole arguments; the second call's
        // arguments come with finish_reason), and a llama-style call without id whose first
        // fragment carries name and arguments together.
        let input = [
            ev(1, &chunk(r#"{"role":"assistant","content":""}"#, None)),
            ev(2, &chunk(r#"{"tool_calls":[{"index":0,"id":"chatcmpl-tool-af37","type":"function","function":{"name":"sum","arguments":""}}]}"#, None)),
            ev(3, &chunk(r#"{"tool_calls":[{"index":0,"function":{"name":"","arguments":"{\"a\": 2, "}}]}"#, None)),
            ev(4, &chunk(r#"{"tool_calls":[{"index":0,"function":{"name":"","arguments":"\"b\": 2}"}}]}"#, None)),
            ev(5, &chunk(r#"{"tool_calls":[{"index":1,"type":"function","function":{"name":"subtraction","arguments":"{\""}}]}"#, None)),
            ev(6, &chunk(r#"{"tool_calls":[{"index":1,"type":"function","function":{"name":"","arguments":"x\": 1}"}}]}"#, Some("tool_calls"))),
            ev(7, USAGE),
        ]
        .concat();
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "");
        assert_eq!(
            calls,
            vec![
                (
                    "chatcmpl-tool-af37".into(),
                    "sum".into(),
                    "{\"a\": 2, \"b\": 2}".into()
                ),
                ("call_1".into(), "subtraction".into(), "{\"x\": 1}".into()),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        // Each first fragment has index, id and name, then arguments separately.
        let evs = events(&out);
        let first = &evs[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["function"]["arguments"], "");
    }

    #[test]
    fn stop_after_tool_calls_reads_tool_calls_and_reasoning_is_forwarded() {
        let input = [
            ev(1, &chunk(r#"{"role":"assistant","reasoning_content":"Let me think"}"#, None)),
            ev(2, &chunk(r#"{"tool_calls":[{"index":0,"id":"c9","type":"function","function":{"name":"f","arguments":"{}"}}]}"#, Some("stop"))),
        ]
        .concat();
        let (out, end, usage) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, None);
        let (_, calls, finish) = reassemble(&out);
        assert_eq!(calls, vec![("c9".into(), "f".into(), "{}".into())]);
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            events(&out)[1]["choices"][0]["delta"]["reasoning_content"],
            "Let me think"
        );
    }

    #[test]
    fn done_and_close_end_the_stream() {
        for tail in ["data: [DONE]\n\n", "id: 9\nevent: close\ndata: {}\n\n"] {
            let input = format!(
                "{}{tail}{}",
                text_stream(),
                ev(10, &chunk(r#"{"content":"late"}"#, None))
            );
            let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
            assert_eq!(end, StreamEnd::Complete, "{tail}");
            assert_eq!(
                reassemble(&out).0,
                "Ciao é!",
                "input after the end is ignored"
            );
        }
    }

    #[test]
    fn mid_stream_error_event() {
        let input = [
            ev(1, &chunk(r#"{"role":"assistant","content":""}"#, None)),
            ev(2, &chunk(r#"{"content":"Hel"}"#, None)),
            r#"id: 3
event: error
data: {"errors":[{"code":"internal_server_error","message":"Model inference failed"}],"trace":"t1","status_code":500}

"#
            .to_owned(),
            ev(4, &chunk(r#"{"content":"lo"}"#, Some("stop"))),
        ]
        .concat();
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(
            end,
            StreamEnd::ProviderError("Model inference failed".into())
        );
        let evs = events(&out);
        let last = evs.last().unwrap();
        assert_eq!(last["error"]["message"], "Model inference failed");
        assert_eq!(last["error"]["code"], "internal_server_error");
        assert_eq!(last["error"]["type"], "server_error");
        assert_eq!(reassemble(&out).0, "Hel");
        // Plain-text error data (as in the Java SDK's test stub).
        let input = format!(
            "{}id: 2\nevent: error\ndata: error\n\n",
            ev(1, &chunk(r#"{"content":"a"}"#, None))
        );
        let (_, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::ProviderError("error".into()));
    }

    #[test]
    fn truncated_streams() {
        let full = text_stream();
        // Cut before the finish chunk.
        let cut = &full[..full.find("id: 4").unwrap()];
        let (out, end, _) = every_split(|| stream(&ctx(false)), cut.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        let evs = events(&out);
        assert_eq!(evs.last().unwrap()["error"]["code"], "stream_truncated");
        // Cut in the middle of an event's JSON.
        let cut = &full[..full.find("\"Ciao").unwrap() + 3];
        let (_, end, _) = every_split(|| stream(&ctx(false)), cut.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        // Empty stream.
        let (_, end, _) = every_split(|| stream(&ctx(false)), b"");
        assert_eq!(end, StreamEnd::Truncated);
        // A finished stream whose last event lacks its blank line is still complete.
        let (_, end, usage) = every_split(|| stream(&ctx(false)), full.trim_end().as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(38, 3)));
    }

    #[test]
    fn legacy_completion_stream_carries_text() {
        let c = ResponseCtx {
            front: FrontDoor::Completions,
            ..ctx(false)
        };
        let (out, end, _) = every_split(|| stream(&c), text_stream().as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let evs = events(&out);
        assert_eq!(evs[0]["object"], "text_completion");
        assert_eq!(evs[0]["id"], "cmpl-chatcmpl-5d8c");
    }

    #[test]
    fn embeddings_request_and_answer() {
        let body: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"model":"slate","input":["a b","c"],"user":"u","encoding_format":"base64","input_type":"query"}"#,
        )
        .unwrap();
        let req = EmbeddingsRequest::from_body(&body).unwrap();
        let call = prepare_embeddings(&target(Some("p"), None), &req).unwrap();
        assert_eq!(call.path, "/ml/v1/text/embeddings?version=2024-05-31");
        let v: Value = serde_json::from_slice(&call.bodies[0]).unwrap();
        assert_eq!(
            v,
            json!({"model_id":"ibm/granite-3-8b-instruct","project_id":"p","inputs":["a b","c"]})
        );
        assert_eq!(call.dropped, vec!["user", "input_type"]);

        let body: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"model":"slate","input":"x","dimensions":8}"#).unwrap();
        let req = EmbeddingsRequest::from_body(&body).unwrap();
        let err = prepare_embeddings(&target(Some("p"), None), &req).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));

        // Answer shape: PROTOCOLS 6.4.
        let e = parse_embeddings(&[Answer {
            body: br#"{"model_id":"ibm/slate-30m-english-rtrvr","results":[{"embedding":[0.5,-1.25]},{"embedding":[1,2]}],"created_at":"2025-01-01T00:00:00.000Z","input_token_count":3}"#,
            input_tokens_header: None,
        }])
        .unwrap();
        assert_eq!(e.vectors, vec![vec![0.5, -1.25], vec![1.0, 2.0]]);
        assert_eq!(e.prompt_tokens, 3);
        assert!(parse_embeddings(&[Answer {
            body: b"{}",
            input_tokens_header: None
        }])
        .is_err());
    }

    fn reply(status: u16, code: &str, message: &str) -> (u16, Value) {
        let body = json!({"errors":[{"code":code,"message":message,"more_info":"https://cloud.ibm.com/apidocs/watsonx-ai#text-chat"}],"trace":"abc","status_code":status});
        let r = error(status, body.to_string().as_bytes());
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn error_mapping_table() {
        for (status, code, out_status, out_code, out_type) in [
            (
                400,
                "invalid_input_argument",
                400,
                "invalid_input_argument",
                "invalid_request_error",
            ),
            (
                400,
                "json_validation_error",
                400,
                "json_validation_error",
                "invalid_request_error",
            ),
            (
                401,
                "authentication_token_expired",
                502,
                "authentication_token_expired",
                "server_error",
            ),
            (
                401,
                "authorization_rejected",
                502,
                "authorization_rejected",
                "server_error",
            ),
            (
                403,
                "user_authorization_failed",
                403,
                "user_authorization_failed",
                "permission_error",
            ),
            (
                403,
                "authorization_rejected",
                403,
                "authorization_rejected",
                "permission_error",
            ),
            (
                400,
                "model_not_supported",
                404,
                "model_not_found",
                "not_found_error",
            ),
            (
                404,
                "model_not_supported",
                404,
                "model_not_found",
                "not_found_error",
            ),
            (
                429,
                "token_quota_reached",
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
            ),
            (
                400,
                "token_quota_reached",
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
            ),
            (
                413,
                "request_too_large",
                413,
                "request_too_large",
                "invalid_request_error",
            ),
            (
                500,
                "internal_server_error",
                500,
                "internal_server_error",
                "server_error",
            ),
            (
                503,
                "service_unavailable",
                503,
                "service_unavailable",
                "server_error",
            ),
            (
                504,
                "gateway_timeout",
                504,
                "gateway_timeout",
                "timeout_error",
            ),
        ] {
            let (s, v) = reply(status, code, "details here");
            assert_eq!(s, out_status, "{status} {code}");
            assert_eq!(v["error"]["code"], out_code, "{status} {code}");
            assert_eq!(v["error"]["type"], out_type, "{status} {code}");
            if out_status == 502 {
                assert_eq!(
                    v["error"]["message"],
                    "The provider rejected the gateway's credentials. details here"
                );
            } else {
                assert_eq!(v["error"]["message"], "details here");
            }
        }
        let (s, v) = reply(
            400,
            "invalid_input_argument",
            "the prompt exceeds the model's maximum sequence length",
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("context_length_exceeded"))
        );
        let r = error(502, b"<html>bad gateway</html>");
        assert_eq!(r.status, 500);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "Provider returned HTTP 502.");
        assert_eq!(error(401, b"").status, 502);
    }

    /// Issue 15.5: watsonx documents no document input for chat: a `file` part is refused
    /// by name.
    #[test]
    fn file_parts_are_refused_by_name() {
        let body = r#"{"model":"g","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0="}}]}]}"#;
        let e = prepare_chat(&target(Some("p"), None), &chat(body))
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1]"));
    }
}
