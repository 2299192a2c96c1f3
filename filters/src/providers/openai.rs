//! OpenAI chat completions as a translator (`Dialect::OpenAi`, `Dialect::Azure`): the neutral
//! request rendered as a `/v1/chat/completions` body, the `chat.completion` answer read into a
//! neutral [`Completion`], and the `chat.completion.chunk` stream turned into [`ChunkWriter`]
//! calls. Used when the client's front door is not OpenAI's own (e.g. Anthropic Messages);
//! OpenAI clients keep the near-verbatim fast path of [`crate::openai_upstream`].
//!
//! Paths: OpenAI `/v1/chat/completions`; Azure
//! `/openai/deployments/{deployment}/chat/completions?api-version={v}` (PROTOCOLS §5), the
//! deployment (`Target::upstream_model`) and the version percent-encoded as one segment each,
//! RFC 3986 unreserved characters kept (as the gateway's fast path builds it). The body still
//! names `model` (Azure accepts and ignores it).
//!
//! Request (PROTOCOLS §1.1): `model` = upstream model; messages in place with their roles
//! (`system`, `developer`, `user`, `assistant`, `tool`); content is a string when it is one
//! text part, else `text` / `image_url` / `file` parts (`https://` and `data:` URLs, `detail`
//! kept; files as `file_data` data URLs with a `filename`, `document.pdf` when none was given);
//! assistant `tool_calls` and tool `tool_call_id` as OpenAI carries them; message `name`s kept
//! (not on tool messages, where OpenAI has none). `max_tokens` → `max_completion_tokens`;
//! `temperature`, `top_p`, `stop`, `seed`, `user`, `n`, penalties, `response_format`, `tools`
//! (with `strict`), `tool_choice`, `parallel_tool_calls` as they are. Streams always ask for
//! `stream_options.include_usage` (the gateway meters every stream). Fields in
//! `ChatRequest::other` pass through unchanged when OpenAI's chat API knows them
//! ([`PASSED`]); the rest (e.g. `thinking`, `top_k` from the Messages front door) are left out
//! and listed in `dropped`. Reasoning ([`ChatRequest::reasoning`]) → `reasoning_effort`: the
//! effort as is, or from a Messages client's `thinking.budget_tokens`: ≤ 2048 `low`, ≤ 8192
//! `medium`, else `high` ([`crate::chat::request::Effort::from_budget`], the inverse of the
//! budgets the Claude translator derives from an effort: 1024 / 4096 / 16384). OpenAI
//! documents `reasoning_effort` on chat completions for reasoning models
//! (platform.openai.com/docs/api-reference/chat/create); Azure OpenAI takes the same field.
//!
//! Answers (PROTOCOLS §1.2): each choice's `content`, `reasoning_content`, `tool_calls` (and a
//! legacy `function_call`); a structured-outputs `refusal` becomes the content when there is
//! none (the neutral model has no refusal slot). `finish_reason` `stop` / `length` /
//! `tool_calls` / `content_filter`; `function_call` → tool calls; `stop` with tool calls → tool
//! calls (OpenAI answers `stop` after a call forced by a named `tool_choice`). Usage with
//! `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`.
//! Azure's `prompt_filter_results` / `content_filter_results` annotations are ignored.
//!
//! Streams (PROTOCOLS §1.3, §5): `data: {chunk}` events ending with `data: [DONE]`. Only choice
//! index 0 is relayed: the neutral stream (and the Messages front door) carries one answer.
//! The response id comes from the first chunk with a choice; Azure's opening chunk (empty
//! `choices`, empty id: prompt filter results) and any other chunk without choice 0 is
//! ignored, except for its `usage` (the usage chunk has `choices: []`). `delta.content` →
//! text, `delta.reasoning_content` → reasoning, `delta.refusal` → text, `delta.tool_calls[]`
//! by `index` → a tool-call start (id + name, the call's ordinal in order of appearance) then
//! argument fragments. The finish reason is written at `[DONE]`, followed by usage and the
//! end. A `{"error":{…}}` event ends the stream with an error event (provider error); EOF
//! without `[DONE]`, or an unreadable event, ends it as truncated.

use crate::front::FrontDoor;
use std::borrow::Cow;

use serde::de::{IgnoredAny, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::chat::OwnedResponseCtx;
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Message, Part, ResponseCtx,
    ResponseFormat, Role, ToolCall, ToolChoice,
};
use crate::openai::{InvalidRequest, Usage};
use crate::providers::gemini::host_tool_id;
use crate::providers::json_scan;
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    Answer, AnswerFormat, BadAnswer, Dialect, ErrorHints, ErrorReply, StreamEnd, StreamTranslator,
    Target, Translator, UpstreamRequest,
};

/// Fields of [`ChatRequest::other`] that OpenAI's chat API knows: passed through unchanged.
/// Every other field there is dropped (and named in [`UpstreamRequest::dropped`]).
pub const PASSED: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "store",
    "metadata",
    "service_tier",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "verbosity",
    "web_search_options",
    "prompt_cache_key",
    "safety_identifier",
    "max_completion_tokens",
];

// ---------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<FormatOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    extra: Extra<'a>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The passed-through fields of `ChatRequest::other`, written after the typed ones.
struct Extra<'a>(Vec<(&'a str, &'a Value)>);

impl Serialize for Extra<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
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
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum PartOut<'a> {
    #[serde(rename = "text")]
    Text { text: &'a str },
    #[serde(rename = "image_url")]
    Image { image_url: ImageOut<'a> },
    /// OpenAI's inline file (PDF) part.
    #[serde(rename = "file")]
    File { file: FileOut<'a> },
}

#[derive(Serialize)]
struct FileOut<'a> {
    /// `data:<mime>;base64,<data>`.
    file_data: String,
    /// OpenAI wants a name beside inline `file_data`; a default when the client gave none.
    filename: &'a str,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ChoiceOut<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NameOnly<'a>,
    },
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

/// Appends `s` percent-encoded as one path segment or query value (RFC 3986 unreserved
/// characters kept: the encoding of the gateway's Azure fast path).
fn push_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

fn path(t: &Target<'_>) -> String {
    match t.dialect {
        Dialect::Azure => {
            let version = t.api_version.unwrap_or_default();
            let mut p = String::with_capacity(64 + t.upstream_model.len() + version.len());
            p.push_str("/openai/deployments/");
            push_encoded(&mut p, t.upstream_model);
            p.push_str("/chat/completions?api-version=");
            push_encoded(&mut p, version);
            p
        }
        _ => "/v1/chat/completions".to_owned(),
    }
}

fn content(m: &Message) -> Option<Content<'_>> {
    Some(match m.content.as_slice() {
        // An assistant turn that only calls tools: `content` left out (OpenAI's `null`).
        [] if m.role == Role::Assistant && !m.tool_calls.is_empty() => return None,
        [] => Content::Text(""),
        [Part::Text(t)] => Content::Text(t),
        parts => Content::Parts(
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(text) => PartOut::Text { text },
                    Part::Image { url, detail } => PartOut::Image {
                        image_url: ImageOut {
                            url,
                            detail: detail.as_deref(),
                        },
                    },
                    Part::File { data, mime, name } => PartOut::File {
                        file: FileOut {
                            file_data: format!("data:{mime};base64,{data}"),
                            filename: name.as_deref().unwrap_or("document.pdf"),
                        },
                    },
                })
                .collect(),
        ),
    })
}

fn message(m: &Message) -> Msg<'_> {
    let role = match m.role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    Msg {
        role,
        content: content(m),
        name: m.name.as_deref().filter(|_| m.role != Role::Tool),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| CallOut {
                id: host_tool_id(&c.id),
                kind: "function",
                function: FnOut {
                    name: &c.name,
                    arguments: &c.arguments,
                },
            })
            .collect(),
        tool_call_id: m
            .tool_call_id
            .as_deref()
            .filter(|_| m.role == Role::Tool)
            .map(host_tool_id),
    }
}

/// Renders the neutral request as an OpenAI `/v1/chat/completions` body (the chat form also
/// for legacy completions, which the gateway normally serves by its fast path instead).
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    let mut dropped = Vec::new();
    let mut extra = Vec::new();
    for (name, value) in &req.other {
        let passed = match name.as_str() {
            // The typed limit wins over a second copy.
            "max_completion_tokens" => req.max_tokens.is_none(),
            "reasoning_effort" => req.reasoning.is_none(),
            // Legacy completions' `logprobs` is a count; chat's is a switch.
            "logprobs" => req.front != FrontDoor::Completions || value.is_boolean(),
            n => PASSED.contains(&n),
        };
        if passed {
            extra.push((name.as_str(), value));
        } else {
            dropped.push(name.clone());
        }
    }
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
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::None => ChoiceOut::Mode("none"),
        ToolChoice::Auto => ChoiceOut::Mode("auto"),
        ToolChoice::Required => ChoiceOut::Mode("required"),
        ToolChoice::Named(name) => ChoiceOut::Named {
            kind: "function",
            function: NameOnly { name },
        },
    });
    let body = ChatBody {
        model: t.upstream_model,
        messages: req.messages.iter().map(message).collect(),
        max_completion_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        seed: req.seed,
        user: req.user.as_deref(),
        n: req.n,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_format,
        tools: req
            .tools
            .iter()
            .map(|tool| ToolOut {
                kind: "function",
                function: ToolFn {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    parameters: &tool.parameters,
                    strict: tool.strict,
                },
            })
            .collect(),
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        reasoning_effort: req.reasoning.map(|r| r.effort().as_str()),
        stream: req.stream,
        stream_options: req.stream.then_some(StreamOptions {
            include_usage: true,
        }),
        extra: Extra(extra),
    };
    Ok(UpstreamRequest {
        path: path(t),
        body: serde_json::to_vec(&body).expect("request bodies serialize"),
        headers: Vec::new(),
        answer: if req.stream {
            AnswerFormat::Sse
        } else {
            AnswerFormat::Json
        },
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
    usage: Option<OaUsage>,
}

#[derive(Deserialize)]
struct AnswerChoice {
    #[serde(default)]
    index: Option<u64>,
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct AnswerMessage {
    content: Option<String>,
    refusal: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<AnswerCall>>,
    function_call: Option<AnswerFn>,
}

#[derive(Deserialize)]
struct AnswerCall {
    id: Option<String>,
    /// Absent on non-function (custom) tool calls, which the gateway never requests.
    function: Option<AnswerFn>,
}

#[derive(Deserialize)]
struct AnswerFn {
    name: Option<String>,
    arguments: Option<String>,
}

/// OpenAI's `usage` (every field tolerated as null or absent).
#[derive(Deserialize, Clone, Copy, Default)]
struct OaUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl From<OaUsage> for Usage {
    fn from(u: OaUsage) -> Usage {
        let mut out = Usage::new(
            u.prompt_tokens.unwrap_or(0),
            u.completion_tokens.unwrap_or(0),
        );
        if let Some(total) = u.total_tokens {
            out.total_tokens = total;
        }
        out.cached_tokens = u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        out.reasoning_tokens = u
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0);
        out
    }
}

/// OpenAI `finish_reason` → neutral; `stop` (and unknown values) with tool calls read as tool
/// calls.
fn finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn answer_call(j: usize, id: Option<String>, f: AnswerFn) -> ToolCall {
    ToolCall {
        id: id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("call_{j}")),
        name: f.name.unwrap_or_default(),
        arguments: f
            .arguments
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "{}".to_owned()),
    }
}

/// Reads a `chat.completion` answer (OpenAI or Azure).
pub fn parse_chat(body: &[u8]) -> Result<Completion, BadAnswer> {
    let mut a: ChatAnswer = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable OpenAI chat answer: {e}")))?;
    if a.choices.is_empty() {
        return Err(BadAnswer("OpenAI answered without choices".into()));
    }
    a.choices.sort_by_key(|c| c.index.unwrap_or(0));
    let choices = a
        .choices
        .into_iter()
        .map(|c| {
            let m = c.message.unwrap_or_default();
            let mut tool_calls: Vec<ToolCall> = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .filter_map(|tc| Some((tc.id, tc.function?)))
                .enumerate()
                .map(|(j, (id, f))| answer_call(j, id, f))
                .collect();
            if let Some(f) = m.function_call {
                tool_calls.push(answer_call(tool_calls.len(), None, f));
            }
            let finish = finish_reason(
                c.finish_reason.as_deref().unwrap_or("stop"),
                !tool_calls.is_empty(),
            );
            let content = m
                .content
                .or(m.refusal)
                .filter(|c| !c.is_empty() || tool_calls.is_empty());
            Choice {
                content,
                reasoning: m.reasoning_content.filter(|r| !r.is_empty()),
                thinking_blocks: Vec::new(),
                tool_calls,
                finish_reason: Some(finish),
            }
        })
        .collect();
    Ok(Completion {
        id: a.id.filter(|id| !id.is_empty()),
        choices,
        usage: a.usage.map(Usage::from),
    })
}

// ---------------------------------------------------------------------------------------
// Stream

// Chunks are parsed into borrowed structs: `Cow<str>` fields read through `nullable` (OpenAI
// sends explicit nulls, e.g. `"content":null` beside tool calls, and serde copies every
// `Option<Cow>`), so a plain text chunk allocates nothing.

#[derive(Deserialize)]
struct StreamChunk<'a> {
    #[serde(default, borrow, deserialize_with = "nullable")]
    id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    model: Cow<'a, str>,
    /// Choice 0 only (see the module doc).
    #[serde(default, borrow, deserialize_with = "first_choice")]
    choices: Option<StreamChoice<'a>>,
    #[serde(default)]
    usage: Option<OaUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    finish_reason: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow, deserialize_with = "nullable")]
    content: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    reasoning_content: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    refusal: Cow<'a, str>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<DeltaCall<'a>>>,
}

#[derive(Deserialize)]
struct DeltaCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    function: Option<DeltaFn<'a>>,
}

#[derive(Deserialize)]
struct DeltaFn<'a> {
    #[serde(default, borrow, deserialize_with = "nullable")]
    name: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    arguments: Cow<'a, str>,
}

/// A string (borrowed when unescaped) or null (read as empty).
fn nullable<'de: 'a, 'a, D>(d: D) -> Result<Cow<'a, str>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Str;
    impl<'de> Visitor<'de> for Str {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
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
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }
    d.deserialize_any(Str)
}

/// Reads a `choices` array keeping only the choice with index 0.
fn first_choice<'de: 'a, 'a, D>(d: D) -> Result<Option<StreamChoice<'a>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct First<'a>(std::marker::PhantomData<StreamChoice<'a>>);
    impl<'de: 'a, 'a> Visitor<'de> for First<'a> {
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

/// One provider tool call (by its `index`) in the client's numbering.
struct CallState {
    key: u64,
    id: Option<String>,
    /// The client's index once the first fragment (id + name) was written.
    ordinal: Option<usize>,
    /// Arguments received before the call's name.
    pending: String,
}

struct OaStream {
    framer: SseFramer,
    writer: ChunkWriter,
    ctx: OwnedResponseCtx,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    calls: Vec<CallState>,
    started_calls: usize,
    last_key: u64,
    end: Option<StreamEnd>,
}

/// The text of a chunk that carries only text for choice 0 (no finish reason, usage, tool
/// call or anything else), as its JSON string literal, read from the event's bytes without
/// parsing: `{"id":…,"object":…,"created":…,"model":…,["service_tier":…,]
/// ["system_fingerprint":…,]["obfuscation":…,]"choices":[{"index":0,"delta":{"content":"…"},
/// "logprobs":null,"finish_reason":null}]}` in any member order. None for anything else, which
/// takes the typed parse (so behaviour is the same either way).
fn fast_text(data: &[u8]) -> Option<&str> {
    use json_scan::{members, plain, token, ws};
    const TOP: &[&[u8]] = &[
        b"\"id\"",
        b"\"object\"",
        b"\"created\"",
        b"\"model\"",
        b"\"service_tier\"",
        b"\"system_fingerprint\"",
        b"\"obfuscation\"",
        b"\"choices\"",
    ];
    const CHOICE: &[&[u8]] = &[
        b"\"index\"",
        b"\"delta\"",
        b"\"logprobs\"",
        b"\"finish_reason\"",
    ];
    let mut text = None;
    let rest = members(token(data, b"{")?, TOP, |k, v| match k {
        2 => {
            let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
            (digits > 0).then(|| &v[digits..])
        }
        5 => token(v, b"null").or_else(|| plain(v).map(|(_, r)| r)),
        7 => {
            let mut index_zero = false;
            let after = members(token(v, b"[{")?, CHOICE, |k, v| match k {
                0 => {
                    let r = token(v, b"0")?;
                    index_zero = !r.first().is_some_and(u8::is_ascii_digit);
                    Some(r)
                }
                1 => members(token(v, b"{")?, &[b"\"content\""], |_, v| {
                    let (lit, r) = json_scan::literal(v)?;
                    text = Some(lit);
                    Some(r)
                }),
                _ => token(v, b"null"),
            })?;
            if !index_zero {
                return None;
            }
            token(ws(after), b"]")
        }
        _ => plain(v).map(|(_, r)| r),
    })?;
    if !ws(rest).is_empty() {
        return None;
    }
    text
}

/// A translator for an OpenAI or Azure OpenAI chat completions stream.
pub fn stream(ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(OaStream {
        framer: SseFramer::new(),
        writer: ChunkWriter::new(ctx),
        ctx: OwnedResponseCtx::new(ctx),
        finish: None,
        usage: None,
        calls: Vec::new(),
        started_calls: 0,
        last_key: 0,
        end: None,
    })
}

impl OaStream {
    fn on_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        if self.writer.started() {
            // The common text-only chunk, recognised from its bytes: its literal is copied.
            if let Some(lit) = json_scan::sse_line(raw).and_then(fast_text) {
                self.writer.content_json(out, lit);
                return;
            }
        }
        let ev = parse_event(raw);
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return; // comments, keep-alives
        }
        if data == b"[DONE]" {
            return self.complete(out);
        }
        let chunk: StreamChunk<'_> = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(_) => {
                self.writer.truncated(out);
                self.end = Some(StreamEnd::Truncated);
                return;
            }
        };
        if chunk.error.is_some() {
            return self.provider_error(out, data);
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.into());
        }
        // Azure's prompt-filter chunk, the usage chunk, chunks for other choices.
        let Some(choice) = chunk.choices else {
            return;
        };
        if !self.writer.started() && !chunk.id.is_empty() {
            let ctx = self.ctx.get();
            self.writer.set_id(&ctx, Some(chunk.id.as_ref()));
        }
        self.writer.provider_model(&chunk.model);
        self.writer.start(out);
        if let Some(d) = choice.delta {
            self.writer.reasoning(out, &d.reasoning_content);
            self.writer.content(out, &d.content);
            self.writer.content(out, &d.refusal);
            for tc in d.tool_calls.into_iter().flatten() {
                self.tool_delta(out, tc);
            }
        }
        if !choice.finish_reason.is_empty() {
            self.finish = Some(finish_reason(&choice.finish_reason, self.started_calls > 0));
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
            call.id = Some(tc.id.into_owned());
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

    /// A `{"error":{message,type,code}}` event (PROTOCOLS §1.3).
    fn provider_error(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
        let e = &v["error"];
        let message = e["message"]
            .as_str()
            .or_else(|| e.as_str())
            .filter(|m| !m.is_empty())
            .unwrap_or("The provider reported an error mid-stream.");
        let kind = e["type"]
            .as_str()
            .filter(|k| !k.is_empty())
            .unwrap_or("server_error");
        let code = match &e["code"] {
            Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        };
        self.writer.error(out, message, kind, code.as_deref());
        self.end = Some(StreamEnd::ProviderError(message.to_owned()));
    }

    /// `[DONE]`: the finish reason (stop when none came), usage, the end.
    fn complete(&mut self, out: &mut Vec<u8>) {
        let reason = match self.finish {
            Some(FinishReason::Stop) | None if self.started_calls > 0 => FinishReason::ToolCalls,
            Some(r) => r,
            None => FinishReason::Stop,
        };
        self.writer.finish(out, reason);
        if let Some(u) = self.usage {
            self.writer.usage(out, u);
        }
        self.writer.done(out);
        self.end = Some(StreamEnd::Complete);
    }
}

impl StreamTranslator for OaStream {
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
            // An unterminated last event still counts (e.g. `data: [DONE]` without its blank
            // line).
            let rest = self.framer.take_rest();
            if !rest.iter().all(u8::is_ascii_whitespace) {
                self.on_event(&rest, out);
            }
        }
        if self.end.is_none() {
            // No `[DONE]`: the answer may be incomplete even when a finish reason came.
            self.writer.truncated(out);
            self.end = Some(StreamEnd::Truncated);
        }
        self.end.clone().unwrap_or(StreamEnd::Truncated)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------
// Translator

/// The translator for [`Dialect::OpenAi`] and [`Dialect::Azure`] (the functions above tell
/// the two apart by `Target::dialect`).
pub struct OpenAi;

impl Translator for OpenAi {
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

    fn translate_error(
        &self,
        t: &Target<'_>,
        status: u16,
        body: &[u8],
        _hints: &ErrorHints<'_>,
    ) -> ErrorReply {
        ErrorReply {
            status,
            body: crate::openai::upstream_error_body(status, body, t.dialect.as_str()),
        }
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse_request, Endpoint};
    use crate::translate::testing::{events, every_split, reassemble};
    use crate::translate::{self, Answer};
    use serde_json::json;

    fn target(dialect: Dialect, model: &str, version: Option<&'static str>) -> Target<'static> {
        Target {
            dialect,
            upstream_model: Box::leak(model.to_owned().into_boxed_str()),
            project: None,
            location: None,
            api_version: version,
        }
    }

    fn openai() -> Target<'static> {
        target(Dialect::OpenAi, "gpt-4o-2024-08-06", None)
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::from_parsed(
            &parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn prepared(t: &Target<'_>, body: &str) -> (UpstreamRequest, Value) {
        let up = prepare_chat(t, &chat(body)).unwrap();
        let v = serde_json::from_slice(&up.body).unwrap();
        (up, v)
    }

    #[test]
    fn every_field_is_rendered_and_unknown_ones_dropped() {
        let (up, v) = prepared(
            &openai(),
            r#"{"model":"claude-ish","messages":[
            {"role":"system","content":"be brief"},
            {"role":"developer","content":[{"type":"text","text":"use metric"}]},
            {"role":"user","name":"ann","content":[{"type":"text","text":"look"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"sunny"},
            {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"rain"},{"type":"text","text":"cold"}]},
            {"role":"assistant","content":"Paris is sunny."},
            {"role":"user","content":"thanks"}],
            "max_tokens":50,"temperature":1.5,"top_p":0.9,"stop":["END","STOP"],"seed":7,"n":2,
            "user":"u1","presence_penalty":0.2,"frequency_penalty":-0.1,"parallel_tool_calls":false,
            "tools":[{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false},"strict":true}}],
            "tool_choice":"required",
            "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}},
            "logprobs":true,"top_logprobs":2,"logit_bias":{"50256":-100},"reasoning_effort":"low",
            "metadata":{"k":"v"},"store":false,"service_tier":"flex","thinking":{"type":"enabled","budget_tokens":1024},"top_k":40}"#,
        );
        assert_eq!(up.path, "/v1/chat/completions");
        assert_eq!(up.answer, AnswerFormat::Json);
        assert!(up.headers.is_empty());
        assert_eq!(v["model"], "gpt-4o-2024-08-06");
        let m = &v["messages"];
        assert_eq!(m[0], json!({"role":"system","content":"be brief"}));
        assert_eq!(m[1], json!({"role":"developer","content":"use metric"}));
        assert_eq!(
            m[2],
            json!({"role":"user","name":"ann","content":[{"type":"text","text":"look"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]})
        );
        assert_eq!(
            m[3],
            json!({"role":"assistant","tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"call_2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]}),
            "a tool-calling turn has no content"
        );
        assert_eq!(
            m[4],
            json!({"role":"tool","content":"sunny","tool_call_id":"call_1"})
        );
        assert_eq!(
            m[5],
            json!({"role":"tool","content":[{"type":"text","text":"rain"},{"type":"text","text":"cold"}],"tool_call_id":"call_2"})
        );
        assert_eq!(
            m[6],
            json!({"role":"assistant","content":"Paris is sunny."})
        );
        assert_eq!(m[7], json!({"role":"user","content":"thanks"}));
        assert_eq!(m.as_array().unwrap().len(), 8);
        assert_eq!(v["max_completion_tokens"], 50);
        assert!(v.get("max_tokens").is_none());
        assert_eq!(v["temperature"], 1.5, "OpenAI's own range: not clamped");
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["stop"], json!(["END", "STOP"]));
        assert_eq!(v["seed"], 7);
        assert_eq!(v["n"], 2);
        assert_eq!(v["user"], "u1");
        assert_eq!(v["presence_penalty"], 0.2);
        assert_eq!(v["frequency_penalty"], -0.1);
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(
            v["tools"],
            json!([{"type":"function","function":{"name":"weather","description":"Weather",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false},
                "strict":true}}])
        );
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(
            v["response_format"],
            json!({"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}})
        );
        for (k, expected) in [
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("logit_bias", json!({"50256":-100})),
            ("reasoning_effort", json!("low")),
            ("metadata", json!({"k":"v"})),
            ("store", json!(false)),
            ("service_tier", json!("flex")),
        ] {
            assert_eq!(v[k], expected, "{k} passes through");
        }
        for absent in ["thinking", "top_k", "stream", "stream_options"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        assert_eq!(up.dropped, vec!["thinking", "top_k"]);
    }

    #[test]
    fn streams_always_ask_for_usage_and_named_tool_choice() {
        let (up, v) = prepared(
            &openai(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},
            "response_format":{"type":"json_object"}}"#,
        );
        assert_eq!(up.answer, AnswerFormat::Sse);
        assert_eq!(v["stream"], true);
        assert_eq!(
            v["stream_options"],
            json!({"include_usage": true}),
            "even when the client did not ask"
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type":"function","function":{"name":"f"}})
        );
        assert_eq!(
            v["tools"],
            json!([{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}])
        );
        assert_eq!(v["response_format"], json!({"type":"json_object"}));
        assert_eq!(v["messages"], json!([{"role":"user","content":"hi"}]));
        assert!(up.dropped.is_empty());
        for (choice, out) in [("none", "none"), ("auto", "auto")] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tool_choice":"{choice}","response_format":{{"type":"text"}}}}"#
            );
            let (_, v) = prepared(&openai(), &body);
            assert_eq!(v["tool_choice"], out);
            assert_eq!(v["response_format"], json!({"type":"text"}));
        }
    }

    #[test]
    fn other_fields_never_duplicate_typed_ones() {
        // A front door other than OpenAI's may leave `max_completion_tokens` in `other`.
        let mut req = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#);
        req.other.push(("max_completion_tokens".into(), json!(99)));
        let up = prepare_chat(&openai(), &req).unwrap();
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["max_completion_tokens"], 99, "passed when nothing typed");
        req.max_tokens = Some(5);
        let up = prepare_chat(&openai(), &req).unwrap();
        let text = String::from_utf8(up.body).unwrap();
        assert_eq!(text.matches("max_completion_tokens").count(), 1, "{text}");
        assert!(text.contains(r#""max_completion_tokens":5"#), "{text}");
        assert_eq!(up.dropped, vec!["max_completion_tokens"]);
    }

    #[test]
    fn legacy_completions_render_the_chat_form() {
        let p = parse_request(
            Endpoint::Completions,
            br#"{"model":"m","prompt":"Say hi","logprobs":2,"echo":true,"stream":true}"#,
        )
        .unwrap();
        let req = ChatRequest::from_parsed(&p).unwrap();
        let up = prepare_chat(&openai(), &req).unwrap();
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["messages"], json!([{"role":"user","content":"Say hi"}]));
        assert_eq!(v["max_completion_tokens"], 16);
        let mut dropped = up.dropped;
        dropped.sort();
        assert_eq!(
            dropped,
            vec!["echo", "logprobs"],
            "a logprobs count is not chat's switch"
        );
    }

    #[test]
    fn azure_path_encodes_deployment_and_version() {
        let t = target(Dialect::Azure, "gpt 4o/prod:é", Some("2024-10-21"));
        let (up, v) = prepared(
            &t,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        );
        assert_eq!(
            up.path,
            "/openai/deployments/gpt%204o%2Fprod%3A%C3%A9/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(up.answer, AnswerFormat::Sse);
        assert_eq!(v["model"], "gpt 4o/prod:é");
        let t = target(
            Dialect::Azure,
            "my-dep_1.x~",
            Some("2025-01-01-preview&x=1"),
        );
        assert_eq!(
            prepare_chat(&t, &chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#))
                .unwrap()
                .path,
            "/openai/deployments/my-dep_1.x~/chat/completions?api-version=2025-01-01-preview%26x%3D1"
        );
        // Through the translator interface.
        let up = translate::prepare_chat(
            &target(Dialect::Azure, "dep", None),
            &chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#),
        )
        .unwrap();
        assert_eq!(
            up.path,
            "/openai/deployments/dep/chat/completions?api-version="
        );
    }

    #[test]
    fn answers_text_reasoning_and_usage_details() {
        // The shape of OpenAI's documented chat.completion object (PROTOCOLS §1.2).
        let c = parse_chat(
            br#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
              "prompt_tokens_details":{"cached_tokens":12,"audio_tokens":0},
              "completion_tokens_details":{"reasoning_tokens":4,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
            "service_tier":"default","system_fingerprint":"fp_b7d65f1a5b"}"#,
        )
        .unwrap();
        assert_eq!(
            c.id.as_deref(),
            Some("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT")
        );
        assert_eq!(c.choices.len(), 1);
        let ch = &c.choices[0];
        assert_eq!(
            ch.content.as_deref(),
            Some("Hello! How can I assist you today?")
        );
        assert_eq!(ch.reasoning, None);
        assert!(ch.tool_calls.is_empty());
        assert_eq!(ch.finish_reason, Some(FinishReason::Stop));
        let mut usage = Usage::new(19, 10);
        usage.cached_tokens = 12;
        usage.reasoning_tokens = 4;
        assert_eq!(c.usage, Some(usage));

        // OpenAI-compatible reasoning models return `reasoning_content`; details may be null.
        let c = parse_chat(
            br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"4","reasoning_content":"2+2"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].reasoning.as_deref(), Some("2+2"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(c.usage, Some(Usage::new(3, 5)));
    }

    #[test]
    fn answers_tool_calls_and_legacy_function_calls() {
        let c = parse_chat(
            br#"{"id":"chatcmpl-abc","object":"chat.completion","created":1,"model":"gpt-4o",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[
              {"id":"call_Xy","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris, France\"}"}},
              {"id":"call_Zw","type":"function","function":{"name":"get_weather","arguments":""}}]},
              "logprobs":null,"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content, None);
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            ch.tool_calls,
            vec![
                ToolCall {
                    id: "call_Xy".into(),
                    name: "get_weather".into(),
                    arguments: "{\"location\":\"Paris, France\"}".into()
                },
                ToolCall {
                    id: "call_Zw".into(),
                    name: "get_weather".into(),
                    arguments: "{}".into()
                },
            ]
        );
        // A call forced by a named tool_choice ends with `stop`.
        let c = parse_chat(
            br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.choices[0].content, None, "empty text beside calls");
        assert_eq!(c.usage, None);
        // Legacy function calling.
        let c = parse_chat(
            br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"a\":1}"}},"finish_reason":"function_call"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.choices[0].tool_calls,
            vec![ToolCall {
                id: "call_0".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into()
            }]
        );
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn answers_azure_shape_refusals_and_several_choices() {
        // Azure OpenAI: prompt_filter_results and per-choice content_filter_results (PROTOCOLS §5).
        let c = parse_chat(
            br#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},
              "finish_reason":"content_filter","index":1,"logprobs":null,"message":{"content":"Part","refusal":null,"role":"assistant"}},
              {"content_filter_results":{},"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Whole answer.","refusal":null,"role":"assistant"}}],
            "created":1724000000,"id":"chatcmpl-9x","model":"gpt-4o-2024-08-06","object":"chat.completion",
            "prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false}}}],
            "system_fingerprint":"fp_abc","usage":{"completion_tokens":5,"prompt_tokens":11,"total_tokens":16}}"#,
        )
        .unwrap();
        assert_eq!(c.choices.len(), 2);
        assert_eq!(
            c.choices[0].content.as_deref(),
            Some("Whole answer."),
            "by index"
        );
        assert_eq!(
            c.choices[1].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(c.usage, Some(Usage::new(11, 5)));
        // Structured outputs refusal.
        let c = parse_chat(
            br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I'm sorry, I cannot help with that."},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.choices[0].content.as_deref(),
            Some("I'm sorry, I cannot help with that.")
        );
        // Through the translator interface; unreadable answers.
        let ok = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
        let answer = |body| Answer {
            body,
            input_tokens_header: None,
        };
        assert!(translate::parse_chat(&openai(), &answer(ok)).is_ok());
        assert!(translate::parse_chat(&target(Dialect::Azure, "d", None), &answer(ok)).is_ok());
        for bad in [
            &b"<html>"[..],
            b"{}",
            br#"{"id":"x","choices":[]}"#,
            b"",
            br#"{"choices":[{"message":{"content":7}}]}"#,
        ] {
            assert!(parse_chat(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    // ---- streams

    fn ctx(include_usage: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "client-model",
            created: 9,
            fallback_id: "req-1",
            front: FrontDoor::Chat,
            include_usage,
            echo: "",
        }
    }

    /// One OpenAI chunk as the API streams it with `include_usage` (every chunk `usage:null`).
    fn chunk(choice: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-AzQ1\",\"object\":\"chat.completion.chunk\",\"created\":1730000000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_9b78b61c52\",\"choices\":[{choice}],\"usage\":null}}\n\n"
        )
    }

    fn delta(delta: &str, finish: Option<&str>) -> String {
        let f = finish.map_or("null".to_owned(), |f| format!("\"{f}\""));
        chunk(&format!(
            r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{f}}}"#
        ))
    }

    const USAGE: &str = "data: {\"id\":\"chatcmpl-AzQ1\",\"object\":\"chat.completion.chunk\",\"created\":1730000000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_9b78b61c52\",\"choices\":[],\"usage\":{\"prompt_tokens\":1117,\"completion_tokens\":46,\"total_tokens\":1163,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n";

    fn usage() -> Usage {
        let mut u = Usage::new(1117, 46);
        u.cached_tokens = 1024;
        u
    }

    /// Role chunk, content pieces (one with escapes and non-ASCII), empty finish chunk, usage
    /// chunk with empty choices, `[DONE]` (PROTOCOLS §1.3).
    fn text_stream() -> String {
        [
            delta(r#"{"role":"assistant","content":"","refusal":null}"#, None),
            delta(r#"{"content":"Hello"}"#, None),
            delta(r#"{"content":" \"wörld\"\n"}"#, None),
            delta(r#"{"content":"!"}"#, None),
            delta("{}", Some("stop")),
            USAGE.to_owned(),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat()
    }

    #[test]
    fn text_stream_at_every_split() {
        let input = text_stream();
        let (out, end, u) = every_split(|| stream(&ctx(true)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(u, Some(usage()));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Hello \"wörld\"\n!");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        let evs = events(&out);
        assert_eq!(evs[0]["id"], "chatcmpl-AzQ1", "the provider's id");
        assert_eq!(evs[0]["model"], "client-model");
        assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
        let n = evs.len();
        assert_eq!(evs[n - 2]["usage"]["prompt_tokens"], 1117);
        assert_eq!(
            evs[n - 2]["usage"]["prompt_tokens_details"]["cached_tokens"],
            1024
        );
        assert_eq!(evs[n - 1], "[DONE]");
        assert_eq!(n, 7, "role, 3 texts, finish, usage, [DONE]");
        // Without include_usage the usage chunk is not written, but usage is still metered.
        let (out, _, u) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
        assert_eq!(u, Some(usage()));
    }

    #[test]
    fn parallel_tool_calls_with_interleaved_fragments() {
        // OpenAI's tool-call deltas: the first fragment of each call has index, id, type,
        // name and empty arguments; later ones only index and an arguments piece. Here the
        // two calls' fragments interleave, as a client must tolerate.
        let input = [
            delta(r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null}"#, None),
            delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]}"#, None),
            delta(r#"{"tool_calls":[{"index":1,"id":"call_ABC","type":"function","function":{"name":"get_time","arguments":""}}]}"#, None),
            delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":"}}]}"#, None),
            delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"cation\":\"Paris\"}"}}]}"#, None),
            delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"\"CET\"}"}}]}"#, None),
            delta("{}", Some("tool_calls")),
            USAGE.to_owned(),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let (out, end, u) = every_split(|| stream(&ctx(true)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(u, Some(usage()));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "");
        assert_eq!(
            calls,
            vec![
                (
                    "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                    "get_weather".into(),
                    "{\"location\":\"Paris\"}".into()
                ),
                (
                    "call_ABC".into(),
                    "get_time".into(),
                    "{\"tz\":\"CET\"}".into()
                ),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let evs = events(&out);
        assert_eq!(evs[1]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(evs[3]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(evs[4]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(evs[5]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    }

    #[test]
    fn forced_call_ending_with_stop_reads_tool_calls_and_reasoning_is_forwarded() {
        let input = [
            delta(r#"{"role":"assistant","content":"","reasoning_content":"Let me think"}"#, None),
            delta(r#"{"content":null,"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]}"#, None),
            delta("{}", Some("stop")),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let (out, end, u) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(u, None);
        let (_, calls, finish) = reassemble(&out);
        assert_eq!(calls, vec![("call_9".into(), "f".into(), "{}".into())]);
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            events(&out)[1]["choices"][0]["delta"]["reasoning_content"],
            "Let me think"
        );
    }

    /// An Azure OpenAI stream: the prompt-filter chunk first (empty choices and id), content
    /// chunks with filter results and explicit nulls, an empty-choices annotation chunk
    /// mid-stream, the finish chunk, the usage chunk, `[DONE]`.
    const AZURE: &str = concat!(
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},\"jailbreak\":{\"filtered\":false,\"detected\":false}}}]}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"function_call\":null,\"refusal\":null,\"role\":\"assistant\",\"tool_calls\":null},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1757499916,\"id\":\"chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs\",\"model\":\"gpt-5-mini-2025-08-07\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":null,\"usage\":null}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":{\"content\":\"The\",\"function_call\":null,\"refusal\":null,\"role\":null,\"tool_calls\":null},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1757499916,\"id\":\"chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs\",\"model\":\"gpt-5-mini-2025-08-07\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n",
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\"}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\" capital is Washington, D.C.\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":1757499916,\"id\":\"chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs\",\"model\":\"gpt-5-mini-2025-08-07\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n",
        "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null}],\"created\":1757499916,\"id\":\"chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs\",\"model\":\"gpt-5-mini-2025-08-07\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n",
        "data: {\"choices\":[],\"created\":1757499916,\"id\":\"chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs\",\"model\":\"gpt-5-mini-2025-08-07\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":145,\"completion_tokens_details\":{\"accepted_prediction_tokens\":0,\"audio_tokens\":0,\"reasoning_tokens\":128,\"rejected_prediction_tokens\":0},\"prompt_tokens\":14,\"prompt_tokens_details\":{\"audio_tokens\":0,\"cached_tokens\":0},\"total_tokens\":159}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn azure_stream_at_every_split() {
        let t = target(Dialect::Azure, "dep", Some("2024-10-21"));
        let (out, end, u) =
            every_split(|| translate::chat_stream(&t, &ctx(true)), AZURE.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let mut expected = Usage::new(14, 145);
        expected.reasoning_tokens = 128;
        assert_eq!(u, Some(expected));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "The capital is Washington, D.C.");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        let evs = events(&out);
        assert_eq!(evs[0]["id"], "chatcmpl-CECImr5TLfMFiZN3FUlfVdBLr51Fs");
        assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            evs.len(),
            6,
            "role, 2 texts, finish, usage, [DONE]: {evs:?}"
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("filter"), "{text}");
    }

    #[test]
    fn only_choice_zero_is_relayed() {
        let input = [
            chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null},{"index":1,"delta":{"role":"assistant","content":""},"finish_reason":null}"#),
            chunk(r#"{"index":1,"delta":{"content":"second"},"finish_reason":null}"#),
            chunk(r#"{"index":0,"delta":{"content":"first"},"finish_reason":null}"#),
            chunk(r#"{"index":1,"delta":{},"finish_reason":"length"}"#),
            chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#),
            ": keep-alive\n\n".to_owned(),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let (text, _, finish) = reassemble(&out);
        assert_eq!(text, "first");
        assert_eq!(finish.as_deref(), Some("stop"));
    }

    #[test]
    fn mid_stream_error_event() {
        let input = [
            delta(r#"{"role":"assistant","content":""}"#, None),
            delta(r#"{"content":"Hel"}"#, None),
            "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_owned(),
            delta(r#"{"content":"lo"}"#, Some("stop")),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let msg = "The server had an error while processing your request. Sorry about that!";
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::ProviderError(msg.into()));
        let evs = events(&out);
        let last = evs.last().unwrap();
        assert_eq!(last["error"]["message"], msg);
        assert_eq!(last["error"]["type"], "server_error");
        assert_eq!(reassemble(&out).0, "Hel", "nothing after the error");
        assert!(!evs.contains(&Value::String("[DONE]".into())));
        // A code (string or number) is kept; an error before any chunk.
        let input = r#"data: {"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}

"#;
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::ProviderError("Rate limit reached".into()));
        let evs = events(&out);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["error"]["code"], "rate_limit_exceeded");
        assert_eq!(evs[0]["error"]["type"], "requests");
        let (out, _, _) = every_split(
            || stream(&ctx(false)),
            br#"data: {"error":{"code":429}}

"#,
        );
        let evs = events(&out);
        assert_eq!(evs[0]["error"]["code"], "429");
        assert_eq!(evs[0]["error"]["type"], "server_error");
    }

    #[test]
    fn truncated_streams() {
        let full = text_stream();
        // Cut before [DONE], even after the finish and usage chunks.
        let cut = &full[..full.find("data: [DONE]").unwrap()];
        let (out, end, u) = every_split(|| stream(&ctx(false)), cut.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        assert_eq!(u, Some(usage()), "usage seen is still reported");
        let evs = events(&out);
        assert_eq!(evs.last().unwrap()["error"]["code"], "stream_truncated");
        assert_eq!(reassemble(&out).0, "Hello \"wörld\"\n!");
        // Cut in the middle of an event's JSON.
        let cut = &full[..full.find("Hello").unwrap() + 3];
        let (_, end, _) = every_split(|| stream(&ctx(false)), cut.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        // An unreadable event ends the stream; later input is ignored.
        let input = format!(
            "{}data: {{not json\n\n{}",
            delta(r#"{"content":"a"}"#, None),
            &full
        );
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        assert_eq!(reassemble(&out).0, "a");
        // Empty stream.
        let (_, end, _) = every_split(|| stream(&ctx(false)), b"");
        assert_eq!(end, StreamEnd::Truncated);
        // `[DONE]` without its blank line still completes; input after [DONE] is ignored.
        let (_, end, _) = every_split(|| stream(&ctx(false)), full.trim_end().as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let input = format!("{full}{}", delta(r#"{"content":"late"}"#, None));
        let (out, end, _) = every_split(|| stream(&ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert!(!String::from_utf8(out).unwrap().contains("late"));
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
        assert_eq!(evs[0]["id"], "cmpl-chatcmpl-AzQ1");
    }

    #[test]
    fn fuzz_harness_accepts_the_test_streams_and_mutations() {
        let harness = crate::fuzzing::by_name("stream_openai_chat").unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for s in [text_stream(), AZURE.to_owned()] {
            let mut data = vec![2u8, 0u8];
            data.extend_from_slice(s.as_bytes());
            harness(&data);
            // Byte flips, cuts and splits: the harness checks split independence and the
            // shape of the client stream for each.
            const BYTES: &[u8] = b"{}[]\\\",:0n\n\r ";
            for _ in 0..300 {
                let mut m = data.clone();
                m[0] = (next() & 3) as u8;
                m[1] = (next() & 7) as u8;
                for _ in 0..(next() % 4) {
                    let at = 2 + (next() as usize) % (m.len() - 2);
                    m[at] = BYTES[(next() as usize) % BYTES.len()];
                }
                if next() % 3 == 0 {
                    m.truncate(2 + (next() as usize) % (m.len() - 2));
                }
                harness(&m);
            }
        }
    }

    /// Issue 15.5: a `file` part (from a Messages `document` block) goes to OpenAI as its
    /// inline `file` part, with a default filename when the client gave none.
    #[test]
    fn file_parts_are_sent_inline_with_a_filename() {
        let mut req = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#);
        req.messages[0].content = vec![
            Part::Text("sum up".into()),
            Part::File {
                data: "JVBERi0=".into(),
                mime: "application/pdf".into(),
                name: Some("q3.pdf".into()),
            },
            Part::File {
                data: "JVBERi0=".into(),
                mime: "application/pdf".into(),
                name: None,
            },
        ];
        let up = prepare_chat(&openai(), &req).unwrap();
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            json!([{"type":"text","text":"sum up"},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"q3.pdf"}},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"document.pdf"}}])
        );
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    const HEAD: &str = r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":"#;

    fn chunk(delta: &str, tail: &str) -> String {
        format!(r#"{HEAD}{delta},"logprobs":null,"finish_reason":{tail}}}]}}"#)
    }

    #[test]
    fn text_only_chunks_are_recognised_and_nothing_else() {
        let c = chunk(r#"{"content":" wor\"ld\n"}"#, "null");
        assert_eq!(fast_text(c.as_bytes()), Some(r#"" wor\"ld\n""#));
        // Azure's shape (no service_tier, null fingerprint, obfuscation) and spacing.
        let azure = r#"{ "choices": [ { "delta": { "content": "Hi" }, "finish_reason": null, "index": 0, "logprobs": null } ], "created": 1, "id": "chatcmpl-x", "model": "gpt-4o", "obfuscation": "aB3", "object": "chat.completion.chunk", "system_fingerprint": null }"#;
        assert_eq!(fast_text(azure.as_bytes()), Some(r#""Hi""#));
        for other in [
            chunk(r#"{"content":"x"}"#, r#""stop""#),
            chunk(r#"{"content":"\u00e9"}"#, "null"),
            chunk(r#"{"role":"assistant","content":""}"#, "null"),
            chunk(r#"{"content":null}"#, "null"),
            chunk(r#"{"content":"x","refusal":null}"#, "null"),
            chunk(r#"{"reasoning_content":"x"}"#, "null"),
            chunk(
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}"#,
                "null",
            ),
            chunk(r#"{"content":"x"}"#, "null").replace(r#""index":0"#, r#""index":1"#),
            chunk(r#"{"content":"x"}"#, "null").replace(r#""index":0"#, r#""index":01"#),
            chunk(r#"{"content":"x"}"#, "null").replace(r#""created":1741569952"#, r#""usage":{}"#),
            chunk(r#"{"content":"x"}"#, "null") + "x",
        ] {
            assert_eq!(fast_text(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn the_fast_path_writes_what_the_typed_parse_writes() {
        let ctx = ResponseCtx {
            client_model: "m",
            created: 1,
            fallback_id: "r",
            front: FrontDoor::Chat,
            include_usage: false,
            echo: "",
        };
        let text = [" a", " \"b\"", "\tc\n", " é", ""];
        let mut input = format!(
            "data: {}\n\n",
            chunk(r#"{"role":"assistant","content":""}"#, "null")
        );
        for t in text {
            let lit = serde_json::to_string(t).unwrap();
            input.push_str(&format!(
                "data: {}\n\n",
                chunk(&format!(r#"{{"content":{lit}}}"#), "null")
            ));
        }
        input.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            chunk("{}", r#""stop""#)
        ));
        let mut t = stream(&ctx);
        let mut out = Vec::new();
        t.feed(input.as_bytes(), &mut out);
        t.finish(&mut out);
        let mut w = ChunkWriter::new(&ctx);
        let mut want = Vec::new();
        w.set_id(&ctx, Some("chatcmpl-B9"));
        w.start(&mut want);
        for t in text {
            w.content(&mut want, t);
        }
        w.finish(&mut want, FinishReason::Stop);
        w.done(&mut want);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }
}
