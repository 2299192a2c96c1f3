//! OCI Generative AI chat (`Dialect::OciGeneric`, `Dialect::OciCohere`).
//!
//! One path, `POST /20231130/actions/chat` (below
//! `https://inference.generativeai.{region}.oci.oraclecloud.com`; the gateway signs it): a JSON
//! answer, or with `chatRequest.isStream: true` a data-only SSE answer. Body:
//! `{"compartmentId": <provider config compartment_id>, "servingMode": {…}, "chatRequest": {…}}`
//! where `servingMode` is `{"servingType":"ON_DEMAND","modelId":m}`, or
//! `{"servingType":"DEDICATED","endpointId":m}` when `m` starts with `ocid1.generativeaiendpoint`.
//! Field names and enums follow the OCI SDK models (oracle/oci-python-sdk
//! `oci/generative_ai_inference/models`: `GenericChatRequest`, `CohereChatRequest`, …).
//!
//! GENERIC (`apiFormat: GENERIC`, Meta / xAI / OpenAI-style models):
//! - `messages`: `SYSTEM` (system and developer messages, in place), `USER`, `ASSISTANT`,
//!   `TOOL`, each with `content: [{type:TEXT,text} | {type:IMAGE,imageUrl:{url,detail}}]`;
//!   images only in user messages and only as `data:` URLs (OCI's `ImageUrl.url` is base64
//!   data; links are rejected naming `messages[i].content[j].image_url`); `detail` upper-cased;
//!   `file` (document) parts → 400 naming `messages[i].content[j]` (no documented input);
//!   assistant `toolCalls: [{type:FUNCTION,id,name,arguments}]`; tool results `toolCallId`;
//!   `name` kept; a final assistant message is sent as is;
//! - `maxTokens`, `temperature` (clamped to 0–2), `topP`, `stop`, `seed`, `numGenerations`
//!   (`n`; rejected above 1 for streams), `frequencyPenalty`, `presencePenalty`,
//!   `tools: [{type:FUNCTION,name,description,parameters}]`, `toolChoice`
//!   (`{type:NONE|AUTO|REQUIRED}` or `{type:FUNCTION,name}`), `isParallelToolCalls`,
//!   `responseFormat` (`{type:TEXT}`, `{type:JSON_OBJECT}`,
//!   `{type:JSON_SCHEMA,jsonSchema:{name,schema,isStrict}}`), `isStream` and
//!   `streamOptions: {isIncludeUsage: true}` for streams (always: the gateway meters usage);
//! - reasoning (`reasoning_effort`, or the effort nearest a Messages client's `thinking`
//!   budget) → `reasoningEffort` `MINIMAL`/`LOW`/`MEDIUM`/`HIGH` (the OCI SDKs'
//!   `GenericChatRequest.reasoning_effort` enum) for OpenAI's and xAI's models (`openai.…`,
//!   `xai.…`) and dedicated endpoints; other models (Meta, …): dropped and named;
//! - dropped: `user`, tool `strict` (`tools[].function.strict`), unknown client fields.
//!
//! COHERE (`apiFormat: COHERE`, `cohere.command-*`):
//! - leading system/developer messages → `preambleOverride`; later ones → `SYSTEM` history
//!   entries; `message` = the last user message's text; earlier turns → `chatHistory` entries
//!   `USER` / `CHATBOT` (`message`, `toolCalls: [{name, parameters}]`; an empty assistant text
//!   is sent as `" "`) / `TOOL` (`toolResults`, consecutive tool messages merged); tool
//!   messages after the last assistant turn → `toolResults` with `message: ""`. Each tool
//!   result is `{call:{name,parameters}, outputs:[{"output": <text>}]}` (the call found by
//!   `tool_call_id`, else 400 naming `messages[i].tool_call_id`). A `TOOL` entry followed by
//!   anything but an assistant turn gets a `CHATBOT` entry repeating the tool output (the
//!   service wants a bot turn after tool results; same workaround as oracle/langchain-oracle's
//!   Cohere provider);
//! - `tools: [{name, description, parameterDefinitions}]`, converted from the JSON-schema
//!   `properties`: `{type, description, isRequired}` with `string→str`, `number→float`,
//!   `integer→int`, `boolean→bool`, `array→List`, `object→Dict` (oracle/langchain-oracle
//!   `JSON_TO_PYTHON_TYPES`);
//! - `maxTokens`, `temperature` (clamped to 0–1), `topP`, `frequencyPenalty` and
//!   `presencePenalty` (clamped to Cohere's 0–1), `stopSequences`, `seed`, `responseFormat`
//!   (`{type:TEXT}`, `{type:JSON_OBJECT[,schema]}`), `isStream`, `streamOptions`;
//! - rejected: images (naming the `image_url` part), `n > 1`, a conversation ending with an
//!   assistant message (no prefill); dropped: `tool_choice` other than `auto` (COHERE has no
//!   tool choice), `parallel_tool_calls`, `user`, `response_format.json_schema.strict`,
//!   tool `strict`, unknown client fields, reasoning (`reasoning_effort`: COHERE's request has
//!   no reasoning control).
//!
//! Both: tool-call `arguments` that are not a JSON object are rejected naming
//! `messages[i].tool_calls[j].function.arguments`; a missing compartment is a 400 naming the
//! provider config's `compartment_id`.
//!
//! Answers: GENERIC `chatResponse.choices[]` (`message.content[].text`, `toolCalls`,
//! `reasoningContent` → `Choice.reasoning`, `finishReason` `stop`/`length`/`tool_calls`/
//! `content_filter`, `stop` with tool calls → `tool_calls`); COHERE `chatResponse.text`,
//! `toolCalls` (no ids: `call_{n}`), `finishReason` `COMPLETE`/`USER_CANCEL` → `stop`
//! (`tool_calls` with calls), `MAX_TOKENS`/`ERROR_LIMIT` → `length`, `ERROR_TOXIC` →
//! `content_filter`, `ERROR` → unreadable answer with `errorMessage`. `usage`:
//! `promptTokens`, `completionTokens`, `promptTokensDetails.cachedTokens`,
//! `completionTokensDetails.reasoningTokens` (the SDKs' `CompletionTokensDetails`). OCI answers carry
//! no response id (the gateway's id is used).
//!
//! Streams (data-only SSE, no event names): GENERIC events are `ChatChoice`-like
//! `{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":…}],
//! "toolCalls":[…],"reasoningContent":…}}`; tool-call fragments carry no index: a fragment
//! with a new `id` opens a call, id-less fragments continue the call last opened at the same
//! position, an id-less fragment with a new name opens a call with a synthesized id (the
//! patterns oracle/langchain-oracle handles for GPT, Grok and Gemini models). COHERE events are
//! `{"apiFormat":"COHERE","text":…}` and `{"toolCalls":[{name,parameters}]}`. The event with
//! `finishReason` ends the answer; its text / tool calls are used only when none were streamed
//! before (COHERE repeats the whole answer there). Usage comes in any event's `usage`
//! (`StreamOptions.isIncludeUsage`: "an additional chunk … before the data: [DONE] message",
//! OCI SDK). The stream ends at EOF or `data: [DONE]`: Complete when a finish reason was seen,
//! truncated otherwise. `errorMessage` ("if there is an error during the streaming scenario",
//! `CohereChatResponse`), `finishReason: ERROR`, or an OCI error body `{code, message}` as an
//! event → one OpenAI error event. Fast path: a one-line text-only event (the two shapes above
//! with one text part, `pad` allowed) is recognised byte by byte (`json_scan`) and its JSON
//! string literal copied to the client as is when it is in the form `serde_json` writes; every
//! other event takes `parse_event` and the typed parse, with the same client bytes.
//!
//! Errors `{"code","message"}`: the message is kept and `code` is OCI's, except 401
//! `NotAuthenticated` → 502 (the gateway's signature was refused), 404
//! `NotAuthorizedOrNotFound` / `NotFound` → 404 `model_not_found`, 429 `TooManyRequests` and
//! 400 `LimitExceeded` / `QuotaExceeded` → 429 `rate_limit_exceeded`; other statuses per the
//! shared mapping.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::gemini::host_tool_id;
use super::json_scan::{literal, members, plain, sse_line, token, ws};
use crate::chat::request::{Effort, Reasoning};
use crate::chat::{
    ChatRequest, Choice, ChunkWriter, Completion, FinishReason, Message, Part, ResponseCtx,
    ResponseFormat, Role, ToolCall, ToolChoice,
};
use crate::openai::{InvalidRequest, Usage};
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    Answer, AnswerFormat, BadAnswer, Dialect, ErrorHints, ErrorReply, StreamEnd, StreamTranslator,
    Target, Translator, UpstreamRequest,
};

const CHAT_PATH: &str = "/20231130/actions/chat";

// ---------------------------------------------------------------------------------------
// Request: shared parts

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatDetails<'a, R> {
    compartment_id: &'a str,
    serving_mode: ServingMode<'a>,
    chat_request: R,
}

#[derive(Serialize)]
#[serde(tag = "servingType")]
enum ServingMode<'a> {
    #[serde(rename = "ON_DEMAND", rename_all = "camelCase")]
    OnDemand { model_id: &'a str },
    #[serde(rename = "DEDICATED", rename_all = "camelCase")]
    Dedicated { endpoint_id: &'a str },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamOptions {
    is_include_usage: bool,
}

fn serving_mode<'a>(model: &'a str) -> ServingMode<'a> {
    if model.starts_with("ocid1.generativeaiendpoint") {
        ServingMode::Dedicated { endpoint_id: model }
    } else {
        ServingMode::OnDemand { model_id: model }
    }
}

fn compartment<'a>(t: &Target<'a>) -> Result<&'a str, InvalidRequest> {
    t.project.filter(|p| !p.is_empty()).ok_or_else(|| {
        InvalidRequest::new(
            "This OCI Generative AI model cannot be called: the gateway's provider config needs compartment_id (the OCI compartment OCID to call the model in).",
            None,
        )
    })
}

/// A `file` (document) part: the chat API documents no document input, so it is refused by
/// name rather than dropped.
fn file_rejected(i: usize, j: usize) -> InvalidRequest {
    let param = format!("messages[{i}].content[{j}]");
    InvalidRequest::new(
        format!("Invalid '{param}': OCI Generative AI chat models do not accept file (document) parts; send the document's text instead, or use a model on a provider that reads PDFs."),
        Some(&param),
    )
}

fn image_rejected(i: usize, j: usize, why: &str) -> InvalidRequest {
    let param = format!("messages[{i}].content[{j}].image_url");
    InvalidRequest::new(format!("Invalid '{param}': {why}"), Some(&param))
}

/// The text of a message that may not carry images, joined by newlines.
fn text_only<'m>(m: &'m Message, i: usize, why: &str) -> Result<Cow<'m, str>, InvalidRequest> {
    let mut texts = Vec::with_capacity(m.content.len());
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t.as_str()),
            Part::Image { .. } => return Err(image_rejected(i, j, why)),
            Part::File { .. } => return Err(file_rejected(i, j)),
        }
    }
    Ok(match texts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join("\n")),
    })
}

fn bad_arguments(i: usize, j: usize) -> InvalidRequest {
    let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
    InvalidRequest::new(
        format!("Invalid '{param}': expected a JSON object encoded as a string."),
        Some(&param),
    )
}

/// Checks that a tool call's arguments are a JSON object without building a tree.
fn check_arguments(args: &str, i: usize, j: usize) -> Result<(), InvalidRequest> {
    if args.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(args).is_ok()
    {
        Ok(())
    } else {
        Err(bad_arguments(i, j))
    }
}

fn common_dropped(req: &ChatRequest) -> Vec<String> {
    let mut dropped = Vec::new();
    if req.tools.iter().any(|t| t.strict.is_some()) {
        dropped.push("tools[].function.strict".to_owned());
    }
    if req.user.is_some() {
        dropped.push("user".to_owned());
    }
    dropped
}

/// Builds the `/20231130/actions/chat` request (GENERIC or COHERE by `t.dialect`).
pub fn prepare_chat(t: &Target<'_>, req: &ChatRequest) -> Result<UpstreamRequest, InvalidRequest> {
    let compartment_id = compartment(t)?;
    let mut dropped = common_dropped(req);
    let body = if t.dialect == Dialect::OciCohere {
        if req.reasoning.is_some() {
            dropped.push(Reasoning::PARAM.to_owned());
        }
        let chat_request = cohere_request(req, &mut dropped)?;
        serde_json::to_vec(&ChatDetails {
            compartment_id,
            serving_mode: serving_mode(t.upstream_model),
            chat_request,
        })
    } else {
        let mut chat_request = generic_request(req)?;
        if req.reasoning.is_some() && !reasons(t.upstream_model) {
            chat_request.reasoning_effort = None;
            dropped.push(Reasoning::PARAM.to_owned());
        }
        serde_json::to_vec(&ChatDetails {
            compartment_id,
            serving_mode: serving_mode(t.upstream_model),
            chat_request,
        })
    }
    .expect("request bodies serialize");
    dropped.extend(req.other_names().map(str::to_owned));
    Ok(UpstreamRequest {
        path: CHAT_PATH.to_owned(),
        body,
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
// Request: GENERIC

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenericRequest<'a> {
    api_format: &'static str,
    messages: Vec<GMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_generations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<GTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<GToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<GFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Vec<GPart<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<GCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum GPart<'a> {
    #[serde(rename = "TEXT")]
    Text { text: Cow<'a, str> },
    #[serde(rename = "IMAGE", rename_all = "camelCase")]
    Image { image_url: GImage<'a> },
}

#[derive(Serialize)]
struct GImage<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

#[derive(Serialize)]
struct GCall<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: Cow<'a, str>,
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct GTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum GToolChoice<'a> {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "REQUIRED")]
    Required,
    #[serde(rename = "FUNCTION")]
    Function { name: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum GFormat<'a> {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON_OBJECT")]
    JsonObject,
    #[serde(rename = "JSON_SCHEMA", rename_all = "camelCase")]
    JsonSchema { json_schema: GSchema<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_strict: Option<bool>,
}

fn detail(d: Option<&str>) -> Option<&'static str> {
    match d? {
        "low" => Some("LOW"),
        "high" => Some("HIGH"),
        _ => Some("AUTO"),
    }
}

fn generic_message<'a>(i: usize, m: &'a Message) -> Result<GMessage<'a>, InvalidRequest> {
    const ONLY_USER: &str = "OCI Generative AI accepts images only in user messages.";
    let text_parts = |m: &'a Message| -> Result<Option<Vec<GPart<'a>>>, InvalidRequest> {
        let text = text_only(m, i, ONLY_USER)?;
        Ok((!text.is_empty()).then(|| vec![GPart::Text { text }]))
    };
    let mut out = GMessage {
        role: "USER",
        content: None,
        name: m.name.as_deref(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    match m.role {
        Role::System | Role::Developer => {
            out.role = "SYSTEM";
            out.content = Some(text_parts(m)?.unwrap_or_default());
        }
        Role::User => {
            let parts = m
                .content
                .iter()
                .enumerate()
                .map(|(j, p)| match p {
                    Part::Text(t) => Ok(GPart::Text {
                        text: Cow::Borrowed(t),
                    }),
                    Part::Image { url, detail: d } => {
                        if !url.starts_with("data:") {
                            return Err(image_rejected(
                                i,
                                j,
                                "OCI Generative AI takes images as base64 data URLs (data:<mime>;base64,…), not links.",
                            ));
                        }
                        Ok(GPart::Image {
                            image_url: GImage {
                                url,
                                detail: detail(d.as_deref()),
                            },
                        })
                    }
                    Part::File { .. } => Err(file_rejected(i, j)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.content = Some(parts);
        }
        Role::Assistant => {
            out.role = "ASSISTANT";
            out.content = text_parts(m)?;
            out.tool_calls = m
                .tool_calls
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    check_arguments(&c.arguments, i, j)?;
                    Ok(GCall {
                        kind: "FUNCTION",
                        id: host_tool_id(&c.id),
                        name: &c.name,
                        arguments: &c.arguments,
                    })
                })
                .collect::<Result<_, InvalidRequest>>()?;
        }
        Role::Tool => {
            out.role = "TOOL";
            out.name = None;
            out.content = Some(text_parts(m)?.unwrap_or_default());
            out.tool_call_id = m.tool_call_id.as_deref().map(host_tool_id);
        }
    }
    Ok(out)
}

/// Whether a GENERIC model takes `reasoningEffort`: OpenAI's and xAI's models on OCI (the
/// reasoning models OCI lists), and dedicated endpoints (the operator chose the model).
fn reasons(model: &str) -> bool {
    model.starts_with("openai.")
        || model.starts_with("xai.")
        || model.starts_with("ocid1.generativeaiendpoint")
}

fn generic_request(req: &ChatRequest) -> Result<GenericRequest<'_>, InvalidRequest> {
    if req.stream && req.n.is_some_and(|n| n > 1) {
        return Err(InvalidRequest::new(
            "Invalid 'n': the gateway streams one choice; use n=1 or a non-streaming request.",
            Some("n"),
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| generic_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GenericRequest {
        api_format: "GENERIC",
        messages,
        max_tokens: req.max_tokens,
        temperature: req.temperature.map(|x| x.clamp(0.0, 2.0)),
        top_p: req.top_p,
        top_k: req.top_k,
        stop: &req.stop,
        seed: req.seed,
        num_generations: req.n,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        tools: req
            .tools
            .iter()
            .map(|t| GTool {
                kind: "FUNCTION",
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
            })
            .collect(),
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::None => GToolChoice::None,
            ToolChoice::Auto => GToolChoice::Auto,
            ToolChoice::Required => GToolChoice::Required,
            ToolChoice::Named(name) => GToolChoice::Function { name },
        }),
        is_parallel_tool_calls: req.parallel_tool_calls,
        reasoning_effort: req.reasoning.map(|r| match r.effort() {
            Effort::Minimal => "MINIMAL",
            Effort::Low => "LOW",
            Effort::Medium => "MEDIUM",
            Effort::High => "HIGH",
        }),
        response_format: req.response_format.as_ref().map(|f| match f {
            ResponseFormat::Text => GFormat::Text,
            ResponseFormat::JsonObject => GFormat::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => GFormat::JsonSchema {
                json_schema: GSchema {
                    name,
                    schema,
                    is_strict: *strict,
                },
            },
        }),
        is_stream: req.stream.then_some(true),
        stream_options: req.stream.then_some(StreamOptions {
            is_include_usage: true,
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Request: COHERE

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CohereRequest<'a> {
    api_format: &'static str,
    message: Cow<'a, str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chat_history: Vec<CEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preamble_override: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<CTool<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_results: Vec<CToolResult<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<CFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
#[serde(tag = "role")]
enum CEntry<'a> {
    #[serde(rename = "USER")]
    User { message: Cow<'a, str> },
    #[serde(rename = "CHATBOT", rename_all = "camelCase")]
    Chatbot {
        message: Cow<'a, str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CCall<'a>>,
    },
    #[serde(rename = "SYSTEM")]
    System { message: Cow<'a, str> },
    #[serde(rename = "TOOL", rename_all = "camelCase")]
    Tool { tool_results: Vec<CToolResult<'a>> },
}

#[derive(Serialize, Clone)]
struct CCall<'a> {
    name: &'a str,
    parameters: Value,
}

#[derive(Serialize)]
struct CToolResult<'a> {
    call: CCall<'a>,
    outputs: [COutput<'a>; 1],
}

#[derive(Serialize)]
struct COutput<'a> {
    output: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CTool<'a> {
    name: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "ParamDefs::is_empty")]
    parameter_definitions: ParamDefs<'a>,
}

/// `parameterDefinitions`, in the schema's property order.
struct ParamDefs<'a>(Vec<(&'a str, CParam<'a>)>);

impl ParamDefs<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ParamDefs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CParam<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    is_required: bool,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum CFormat<'a> {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON_OBJECT")]
    JsonObject {
        #[serde(skip_serializing_if = "Option::is_none")]
        schema: Option<&'a Value>,
    },
}

/// JSON-schema type → Cohere parameter type (oracle/langchain-oracle `JSON_TO_PYTHON_TYPES`).
fn cohere_type(prop: &Value) -> &str {
    let ty = match prop.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|s| *s != "null")
            .unwrap_or("any"),
        _ => "any",
    };
    match ty {
        "string" => "str",
        "number" => "float",
        "integer" => "int",
        "boolean" => "bool",
        "array" => "List",
        "object" => "Dict",
        other => other,
    }
}

fn cohere_tool(t: &crate::chat::Tool) -> CTool<'_> {
    let required: Vec<&str> = t
        .parameters
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let defs = t
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, prop)| {
                    (
                        name.as_str(),
                        CParam {
                            kind: cohere_type(prop),
                            description: prop.get("description").and_then(Value::as_str),
                            is_required: required.contains(&name.as_str()),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    CTool {
        name: &t.name,
        description: t.description.as_deref().unwrap_or(&t.name),
        parameter_definitions: ParamDefs(defs),
    }
}

const COHERE_NO_IMAGES: &str =
    "OCI's COHERE chat format takes text only; send images to a GENERIC-format model.";

fn parse_arguments(args: &str, i: usize, j: usize) -> Result<Value, InvalidRequest> {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad_arguments(i, j)),
    }
}

/// The service wants a bot turn right after tool results: when anything else follows a `TOOL`
/// entry, a `CHATBOT` entry repeating the tool output is inserted (the workaround
/// oracle/langchain-oracle's Cohere provider uses).
fn bot_after_tools(history: &mut Vec<CEntry<'_>>) {
    if let Some(CEntry::Tool { tool_results }) = history.last() {
        let text = tool_results
            .iter()
            .map(|r| r.outputs[0].output.as_ref())
            .collect::<Vec<_>>()
            .join("\n");
        history.push(CEntry::Chatbot {
            message: Cow::Owned(text),
            tool_calls: Vec::new(),
        });
    }
}

fn cohere_request<'a>(
    req: &'a ChatRequest,
    dropped: &mut Vec<String>,
) -> Result<CohereRequest<'a>, InvalidRequest> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(InvalidRequest::new(
            "Invalid 'n': OCI's COHERE chat format generates one answer per request.",
            Some("n"),
        ));
    }
    let msgs = &req.messages;
    // Every image is rejected, wherever it is.
    for (i, m) in msgs.iter().enumerate() {
        if let Some(j) = m
            .content
            .iter()
            .position(|p| matches!(p, Part::Image { .. }))
        {
            return Err(image_rejected(i, j, COHERE_NO_IMAGES));
        }
        if let Some(j) = m
            .content
            .iter()
            .position(|p| matches!(p, Part::File { .. }))
        {
            return Err(file_rejected(i, j));
        }
    }
    let lead = msgs
        .iter()
        .take_while(|m| matches!(m.role, Role::System | Role::Developer))
        .count();
    let preamble = match &msgs[..lead] {
        [] => None,
        [one] => Some(text_only(one, 0, COHERE_NO_IMAGES)?),
        many => Some(Cow::Owned(
            many.iter()
                .map(Message::text)
                .collect::<Vec<_>>()
                .join("\n\n"),
        )),
    };
    let mut end = msgs.len();
    while end > lead && msgs[end - 1].role == Role::Tool {
        end -= 1;
    }
    let (history_end, message, trailing_tools) = if end < msgs.len() {
        (end, Cow::Borrowed(""), end..msgs.len())
    } else {
        match msgs.last() {
            Some(m) if m.role == Role::User && msgs.len() > lead => (
                msgs.len() - 1,
                text_only(m, msgs.len() - 1, COHERE_NO_IMAGES)?,
                0..0,
            ),
            Some(m) if m.role == Role::Assistant => {
                let i = msgs.len() - 1;
                let param = format!("messages[{i}].role");
                return Err(InvalidRequest::new(
                    format!("Invalid '{param}': OCI's COHERE chat format cannot continue an assistant message; end the conversation with a user message or tool results."),
                    Some(&param),
                ));
            }
            _ => {
                return Err(InvalidRequest::new(
                    "Invalid 'messages': OCI's COHERE chat format needs a user message.",
                    Some("messages"),
                ))
            }
        }
    };

    // Calls made so far, by id: (name, parameters).
    let mut calls: Vec<(&'a str, CCall<'a>)> = Vec::new();
    let mut history: Vec<CEntry<'a>> = Vec::with_capacity(history_end - lead);
    let tool_result = |calls: &[(&'a str, CCall<'a>)],
                       i: usize,
                       m: &'a Message|
     -> Result<CToolResult<'a>, InvalidRequest> {
        let id = m.tool_call_id.as_deref().unwrap_or("");
        let call = calls.iter().find(|(cid, _)| *cid == id).ok_or_else(|| {
            let param = format!("messages[{i}].tool_call_id");
            InvalidRequest::new(
                format!("Invalid '{param}': no earlier assistant tool call has the id '{id}'."),
                Some(&param),
            )
        })?;
        Ok(CToolResult {
            call: call.1.clone(),
            outputs: [COutput {
                output: text_only(m, i, COHERE_NO_IMAGES)?,
            }],
        })
    };
    for (i, m) in msgs.iter().enumerate().take(history_end).skip(lead) {
        match m.role {
            Role::System | Role::Developer => {
                bot_after_tools(&mut history);
                history.push(CEntry::System {
                    message: text_only(m, i, COHERE_NO_IMAGES)?,
                });
            }
            Role::User => {
                bot_after_tools(&mut history);
                history.push(CEntry::User {
                    message: text_only(m, i, COHERE_NO_IMAGES)?,
                });
            }
            Role::Assistant => {
                let mut tool_calls = Vec::with_capacity(m.tool_calls.len());
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let call = CCall {
                        name: &c.name,
                        parameters: parse_arguments(&c.arguments, i, j)?,
                    };
                    calls.push((&c.id, call.clone()));
                    tool_calls.push(call);
                }
                let text = text_only(m, i, COHERE_NO_IMAGES)?;
                history.push(CEntry::Chatbot {
                    message: if text.is_empty() {
                        Cow::Borrowed(" ")
                    } else {
                        text
                    },
                    tool_calls,
                });
            }
            Role::Tool => {
                let result = tool_result(&calls, i, m)?;
                match history.last_mut() {
                    Some(CEntry::Tool { tool_results }) => tool_results.push(result),
                    _ => history.push(CEntry::Tool {
                        tool_results: vec![result],
                    }),
                }
            }
        }
    }
    if trailing_tools.is_empty() {
        bot_after_tools(&mut history);
    }
    let tool_results = trailing_tools
        .map(|i| tool_result(&calls, i, &msgs[i]))
        .collect::<Result<Vec<_>, _>>()?;

    match &req.tool_choice {
        None | Some(ToolChoice::Auto) => {}
        Some(_) => dropped.push("tool_choice".to_owned()),
    }
    if req.messages.iter().any(|m| m.name.is_some()) {
        dropped.push("messages[].name".to_owned()); // COHERE chat history has no speaker names
    }
    if req.parallel_tool_calls.is_some() {
        dropped.push("parallel_tool_calls".to_owned());
    }
    let response_format = req.response_format.as_ref().map(|f| match f {
        ResponseFormat::Text => CFormat::Text,
        ResponseFormat::JsonObject => CFormat::JsonObject { schema: None },
        ResponseFormat::JsonSchema { schema, strict, .. } => {
            if strict.is_some() {
                dropped.push("response_format.json_schema.strict".to_owned());
            }
            CFormat::JsonObject {
                schema: Some(schema),
            }
        }
    });
    Ok(CohereRequest {
        api_format: "COHERE",
        message,
        chat_history: history,
        preamble_override: preamble,
        tools: req.tools.iter().map(cohere_tool).collect(),
        tool_results,
        max_tokens: req.max_tokens,
        temperature: req.temperature.map(|x| x.clamp(0.0, 1.0)),
        top_p: req.top_p,
        top_k: req.top_k,
        frequency_penalty: req.frequency_penalty.map(|x| x.clamp(0.0, 1.0)),
        presence_penalty: req.presence_penalty.map(|x| x.clamp(0.0, 1.0)),
        stop_sequences: &req.stop,
        seed: req.seed,
        response_format,
        is_stream: req.stream.then_some(true),
        stream_options: req.stream.then_some(StreamOptions {
            is_include_usage: true,
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Answers

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct OciUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<CachedDetails>,
    completion_tokens_details: Option<ReasoningDetails>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct ReasoningDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: u64,
}

impl From<OciUsage> for Usage {
    fn from(u: OciUsage) -> Usage {
        let mut out = Usage::new(u.prompt_tokens, u.completion_tokens);
        out.cached_tokens = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        out.reasoning_tokens = u
            .completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens);
        out
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatResult<R> {
    chat_response: R,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenericResponse {
    #[serde(default)]
    choices: Vec<GChoiceIn>,
    usage: Option<OciUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GChoiceIn {
    message: Option<GMessageIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GMessageIn {
    content: Option<Vec<GPartIn>>,
    tool_calls: Option<Vec<GCallIn>>,
    reasoning_content: Option<String>,
}

#[derive(Deserialize)]
struct GPartIn {
    text: Option<String>,
}

#[derive(Deserialize)]
struct GCallIn {
    id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CohereResponse {
    text: Option<String>,
    finish_reason: Option<String>,
    tool_calls: Option<Vec<CCallIn>>,
    error_message: Option<String>,
    usage: Option<OciUsage>,
}

#[derive(Deserialize)]
struct CCallIn {
    name: String,
    #[serde(default)]
    parameters: Value,
}

fn cohere_arguments(parameters: &Value) -> String {
    match parameters {
        Value::Null => "{}".to_owned(),
        v => v.to_string(),
    }
}

/// GENERIC `finishReason` (lower-case strings in practice) → OpenAI.
fn generic_finish(reason: &str, has_tool_calls: bool) -> Result<FinishReason, ()> {
    Ok(match reason.to_ascii_lowercase().as_str() {
        "length" | "max_tokens" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        "error" => return Err(()),
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    })
}

/// COHERE `finishReason` → OpenAI; `Err` for `ERROR`.
fn cohere_finish(reason: &str, has_tool_calls: bool) -> Result<FinishReason, ()> {
    Ok(match reason {
        "MAX_TOKENS" | "ERROR_LIMIT" => FinishReason::Length,
        "ERROR_TOXIC" => FinishReason::ContentFilter,
        "ERROR" => return Err(()),
        // COMPLETE, USER_CANCEL, unknown values
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    })
}

/// Reads a `/20231130/actions/chat` answer.
pub fn parse_chat(t: &Target<'_>, body: &[u8]) -> Result<Completion, BadAnswer> {
    let unreadable = |e: serde_json::Error| BadAnswer(format!("unreadable OCI chat answer: {e}"));
    if t.dialect == Dialect::OciCohere {
        let r: ChatResult<CohereResponse> = serde_json::from_slice(body).map_err(unreadable)?;
        let r = r.chat_response;
        let tool_calls: Vec<ToolCall> = r
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(n, c)| ToolCall {
                id: format!("call_{n}"),
                arguments: cohere_arguments(&c.parameters),
                name: c.name,
            })
            .collect();
        let finish = cohere_finish(
            r.finish_reason.as_deref().unwrap_or(""),
            !tool_calls.is_empty(),
        )
        .map_err(|()| {
            BadAnswer(format!(
                "OCI Generative AI reported an error: {}",
                r.error_message.as_deref().unwrap_or("finishReason ERROR")
            ))
        })?;
        let content = r.text.filter(|s| !s.is_empty() || tool_calls.is_empty());
        return Ok(Completion {
            id: None,
            choices: vec![Choice {
                content,
                reasoning: None,
                thinking_blocks: Vec::new(),
                tool_calls,
                finish_reason: Some(finish),
            }],
            usage: r.usage.map(Usage::from),
        });
    }
    let r: ChatResult<GenericResponse> = serde_json::from_slice(body).map_err(unreadable)?;
    let r = r.chat_response;
    if r.choices.is_empty() {
        return Err(BadAnswer(
            "OCI Generative AI answered without choices".into(),
        ));
    }
    let choices = r
        .choices
        .into_iter()
        .map(|c| {
            let (text, calls, reasoning) = match c.message {
                Some(m) => (
                    m.content
                        .map(|parts| parts.into_iter().filter_map(|p| p.text).collect::<String>()),
                    m.tool_calls.unwrap_or_default(),
                    m.reasoning_content,
                ),
                None => (None, Vec::new(), None),
            };
            let tool_calls: Vec<ToolCall> = calls
                .into_iter()
                .enumerate()
                .map(|(n, c)| ToolCall {
                    id: c
                        .id
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("call_{n}")),
                    name: c.name.unwrap_or_default(),
                    arguments: c
                        .arguments
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "{}".into()),
                })
                .collect();
            let finish = generic_finish(
                c.finish_reason.as_deref().unwrap_or(""),
                !tool_calls.is_empty(),
            )
            .map_err(|()| {
                BadAnswer("OCI Generative AI reported an error generating the answer".into())
            })?;
            let content = match text {
                Some(t) if !t.is_empty() || tool_calls.is_empty() => Some(t),
                Some(_) => None,
                None if tool_calls.is_empty() => Some(String::new()),
                None => None,
            };
            Ok(Choice {
                content,
                reasoning: reasoning.filter(|r| !r.is_empty()),
                thinking_blocks: Vec::new(),
                tool_calls,
                finish_reason: Some(finish),
            })
        })
        .collect::<Result<Vec<_>, BadAnswer>>()?;
    Ok(Completion {
        id: None,
        choices,
        usage: r.usage.map(Usage::from),
    })
}

// ---------------------------------------------------------------------------------------
// Stream

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GEvent<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    message: Option<GEventMessage<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    usage: Option<OciUsage>,
    #[serde(borrow)]
    error_message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GEventMessage<'a> {
    /// The `content` parts' text, joined (borrowed when there is one part).
    #[serde(default, borrow, deserialize_with = "joined_text")]
    content: Cow<'a, str>,
    #[serde(default, borrow)]
    tool_calls: Vec<GEventCall<'a>>,
    #[serde(default, borrow)]
    reasoning_content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct GEventPart<'a> {
    #[serde(default, borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct GEventCall<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Cow<'a, str>,
}

/// Reads `[{"type":"TEXT","text":…},…]` as the joined text, without a per-event `Vec`.
fn joined_text<'de: 'a, 'a, D>(d: D) -> Result<Cow<'a, str>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Joined<'a>(std::marker::PhantomData<&'a str>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for Joined<'a> {
        type Value = Cow<'a, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of content parts")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut text: Cow<'a, str> = Cow::Borrowed("");
            while let Some(p) = seq.next_element::<GEventPart<'a>>()? {
                if text.is_empty() {
                    text = p.text;
                } else if !p.text.is_empty() {
                    text.to_mut().push_str(&p.text);
                }
            }
            Ok(text)
        }
    }
    d.deserialize_any(Joined(std::marker::PhantomData))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CEvent<'a> {
    #[serde(default, borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    tool_calls: Option<Vec<CCallIn>>,
    usage: Option<OciUsage>,
    #[serde(borrow)]
    error_message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// An OCI error body sent as a stream event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorEvent<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_message: Option<Cow<'a, str>>,
}

/// The text of the event that makes up nearly all of a GENERIC stream, as its JSON string
/// literal: `{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"…"}]}}`
/// (any member order, spaces allowed; `index`, `role`, `type` and OCI's `pad` optional).
/// None for anything else — tool calls, reasoning, a finish reason, usage, errors, other
/// fields, several parts, text that [`literal`] does not take — which then takes the full
/// typed parse. See `json_scan`.
fn fast_generic_text(data: &[u8]) -> Option<&str> {
    const TOP: [&[u8]; 3] = [br#""message""#, br#""index""#, br#""pad""#];
    const MESSAGE: [&[u8]; 2] = [br#""content""#, br#""role""#];
    const PART: [&[u8]; 2] = [br#""text""#, br#""type""#];
    let mut text = None;
    let rest = members(token(data, b"{")?, &TOP, |k, v| match k {
        0 => members(token(v, b"{")?, &MESSAGE, |k, v| match k {
            0 => {
                let v = members(token(v, b"[{")?, &PART, |k, v| match k {
                    0 => {
                        let (lit, v) = literal(v)?;
                        text = Some(lit);
                        Some(v)
                    }
                    _ => token(v, br#""TEXT""#),
                })?;
                token(v, b"]")
            }
            _ => token(v, br#""ASSISTANT""#),
        }),
        // `0` followed by a digit, `.` or `e` fails in `members`.
        1 => v.strip_prefix(b"0"),
        _ => Some(plain(v)?.1),
    })?;
    if !ws(rest).is_empty() {
        return None;
    }
    text
}

/// The COHERE counterpart of [`fast_generic_text`]: `{"apiFormat":"COHERE","text":"…"}`
/// (any order, spaces allowed, `apiFormat` and `pad` optional), nothing else.
fn fast_cohere_text(data: &[u8]) -> Option<&str> {
    const TOP: [&[u8]; 3] = [br#""apiFormat""#, br#""text""#, br#""pad""#];
    let mut text = None;
    let rest = members(token(data, b"{")?, &TOP, |k, v| match k {
        0 => token(v, br#""COHERE""#),
        1 => {
            let (lit, v) = literal(v)?;
            text = Some(lit);
            Some(v)
        }
        _ => Some(plain(v)?.1),
    })?;
    if !ws(rest).is_empty() {
        return None;
    }
    text
}

/// A GENERIC tool call in the client's numbering.
struct CallState {
    id: String,
    name: String,
    has_args: bool,
}

struct OciStream {
    framer: SseFramer,
    writer: ChunkWriter,
    cohere: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    any_text: bool,
    calls: Vec<CallState>,
    /// GENERIC: (position in an event's `toolCalls`, call) last opened there.
    active: Vec<(usize, usize)>,
    end: Option<StreamEnd>,
}

/// A translator for a streamed `/20231130/actions/chat` answer.
pub fn stream(t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
    Box::new(OciStream {
        framer: SseFramer::new(),
        writer: ChunkWriter::new(ctx),
        cohere: t.dialect == Dialect::OciCohere,
        finish: None,
        usage: None,
        any_text: false,
        calls: Vec::new(),
        active: Vec::new(),
        end: None,
    })
}

const STREAM_ERROR: &str = "OCI Generative AI reported an error mid-stream.";

impl OciStream {
    fn on_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        // The common text-only event (one `data:` line, no `parse_event`): its text literal
        // goes to the client as it is.
        let fast = sse_line(raw).and_then(|data| {
            if self.cohere {
                fast_cohere_text(data)
            } else {
                fast_generic_text(data)
            }
        });
        if let Some(text) = fast {
            self.writer.start(out);
            if text.len() > 2 {
                self.any_text = true;
                self.writer.content_json(out, text);
            }
            return;
        }
        let ev = parse_event(raw);
        if !ev.has_data || ev.data.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if &*ev.data == b"[DONE]" {
            return self.complete(out);
        }
        if self.cohere {
            match serde_json::from_slice::<CEvent<'_>>(&ev.data) {
                Ok(e) => self.cohere_event(e, out),
                Err(_) => self.unreadable(&ev.data, out),
            }
        } else {
            match serde_json::from_slice::<GEvent<'_>>(&ev.data) {
                Ok(e) => self.generic_event(e, out),
                Err(_) => self.unreadable(&ev.data, out),
            }
        }
    }

    /// An event that does not parse as a chat chunk: an OCI error body, or a corrupt stream.
    fn unreadable(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match serde_json::from_slice::<ErrorEvent<'_>>(data) {
            Ok(e) if e.message.is_some() || e.error_message.is_some() || e.code.is_some() => {
                let message = e
                    .error_message
                    .as_deref()
                    .or(e.message.as_deref())
                    .unwrap_or(STREAM_ERROR)
                    .to_owned();
                self.fail(out, &message, e.code.as_deref());
            }
            _ => {
                self.writer.truncated(out);
                self.end = Some(StreamEnd::Truncated);
            }
        }
    }

    fn generic_event(&mut self, e: GEvent<'_>, out: &mut Vec<u8>) {
        if let Some(msg) = e.error_message.as_deref() {
            return self.fail(out, msg, e.code.as_deref());
        }
        if e.code.is_some() && e.message.is_none() && e.finish_reason.is_none() {
            return self.fail(out, STREAM_ERROR, e.code.as_deref());
        }
        self.writer.start(out);
        if let Some(u) = e.usage {
            self.usage = Some(u.into());
        }
        if e.index.unwrap_or(0) != 0 {
            return;
        }
        let is_last = e.finish_reason.is_some();
        if let Some(m) = e.message {
            if !is_last {
                self.writer.reasoning(out, &m.reasoning_content);
            }
            if (!is_last || !self.any_text) && !m.content.is_empty() {
                self.any_text = true;
                self.writer.content(out, &m.content);
            }
            if !is_last || self.calls.is_empty() {
                for (pos, c) in m.tool_calls.iter().enumerate() {
                    self.generic_call(out, pos, c);
                }
            }
        }
        if let Some(reason) = e.finish_reason.as_deref() {
            match generic_finish(reason, !self.calls.is_empty()) {
                Ok(f) => self.finish = Some(f),
                Err(()) => self.fail(out, STREAM_ERROR, Some("error")),
            }
        }
    }

    fn generic_call(&mut self, out: &mut Vec<u8>, pos: usize, c: &GEventCall<'_>) {
        let id = Some(c.id.as_ref()).filter(|s| !s.is_empty());
        let name = Some(c.name.as_ref()).filter(|s| !s.is_empty());
        let active = self.active.iter().find(|(p, _)| *p == pos).map(|(_, k)| *k);
        let existing = match id {
            Some(id) => self.calls.iter().position(|k| k.id == id),
            // An id-less fragment continues the call open at this position, unless it names
            // another function (or the same one again after arguments): a new id-less call.
            None => active.filter(|&k| {
                let call = &self.calls[k];
                name.is_none_or(|n| n == call.name && !call.has_args)
            }),
        };
        let k = match existing {
            Some(k) => k,
            None => {
                let k = self.calls.len();
                let id = id.map_or_else(|| format!("call_{k}"), str::to_owned);
                let name = name.unwrap_or("").to_owned();
                self.writer.tool_call_start(out, k, &id, &name);
                self.calls.push(CallState {
                    id,
                    name,
                    has_args: false,
                });
                k
            }
        };
        match self.active.iter_mut().find(|(p, _)| *p == pos) {
            Some(slot) => slot.1 = k,
            None => self.active.push((pos, k)),
        }
        if !c.arguments.is_empty() {
            self.calls[k].has_args = true;
            self.writer.tool_call_arguments(out, k, &c.arguments);
        }
    }

    fn cohere_event(&mut self, e: CEvent<'_>, out: &mut Vec<u8>) {
        let failed = e.finish_reason.as_deref() == Some("ERROR");
        if e.error_message.is_some() || failed || (e.code.is_some() && e.text.is_empty()) {
            let message = e
                .error_message
                .as_deref()
                .or(e.message.as_deref())
                .unwrap_or(STREAM_ERROR)
                .to_owned();
            let code = e.code.as_deref().or(failed.then_some("ERROR"));
            return self.fail(out, &message, code);
        }
        self.writer.start(out);
        if let Some(u) = e.usage {
            self.usage = Some(u.into());
        }
        let is_last = e.finish_reason.is_some();
        if let Some(calls) = &e.tool_calls {
            if !is_last || self.calls.is_empty() {
                for c in calls {
                    let k = self.calls.len();
                    let id = format!("call_{k}");
                    self.writer.tool_call_start(out, k, &id, &c.name);
                    self.writer
                        .tool_call_arguments(out, k, &cohere_arguments(&c.parameters));
                    self.calls.push(CallState {
                        id,
                        name: c.name.clone(),
                        has_args: true,
                    });
                }
            }
        } else if (!is_last || !self.any_text) && !e.text.is_empty() {
            self.any_text = true;
            self.writer.content(out, &e.text);
        }
        if let Some(reason) = e.finish_reason.as_deref() {
            if let Ok(f) = cohere_finish(reason, !self.calls.is_empty()) {
                self.finish = Some(f);
            }
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, message: &str, code: Option<&str>) {
        self.writer.error(out, message, "server_error", code);
        self.end = Some(StreamEnd::ProviderError(message.to_owned()));
    }

    /// The provider's stream ended (EOF or `[DONE]`).
    fn complete(&mut self, out: &mut Vec<u8>) {
        match self.finish {
            Some(reason) => {
                let reason = match reason {
                    FinishReason::Stop if !self.calls.is_empty() => FinishReason::ToolCalls,
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

impl StreamTranslator for OciStream {
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
// Errors

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

const CREDENTIALS: &str = "The provider rejected the gateway's credentials.";

/// Maps an OCI error answer to the client's OpenAI error.
pub fn error(status: u16, body: &[u8]) -> ErrorReply {
    let parsed = serde_json::from_slice::<ErrorBody<'_>>(body)
        .ok()
        .filter(|b| b.code.is_some() || b.message.is_some());
    let (code, message) = match &parsed {
        Some(b) => (
            b.code.as_deref().filter(|c| !c.is_empty()),
            b.message
                .as_deref()
                .unwrap_or("OCI Generative AI returned an error.")
                .to_owned(),
        ),
        None => (None, format!("Provider returned HTTP {status}.")),
    };
    match (status, code) {
        (401, _) | (_, Some("NotAuthenticated")) => {
            ErrorReply::new(502, &format!("{CREDENTIALS} {message}"), code)
        }
        (429, _) | (_, Some("TooManyRequests" | "LimitExceeded" | "QuotaExceeded")) => {
            ErrorReply::new(429, &message, Some("rate_limit_exceeded"))
        }
        (404, _) | (_, Some("NotAuthorizedOrNotFound" | "NotFound")) => {
            ErrorReply::new(404, &message, Some("model_not_found"))
        }
        (400, _) if looks_like_context_length(&message) => {
            ErrorReply::new(400, &message, Some("context_length_exceeded"))
        }
        (400 | 403 | 409 | 413 | 422, _) => ErrorReply::new(status, &message, code),
        (408 | 504, _) => ErrorReply::new(504, &message, code),
        (503, _) => ErrorReply::new(503, &message, code),
        (s, _) if (400..500).contains(&s) => ErrorReply::new(400, &message, code),
        _ => ErrorReply::new(500, &message, code),
    }
}

fn looks_like_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("context length") || m.contains("context window") || m.contains("too many tokens")
}

// ---------------------------------------------------------------------------------------
// Translator

/// The translator for [`Dialect::OciGeneric`] and [`Dialect::OciCohere`] (the functions above
/// tell the two apart by `Target::dialect`).
pub struct Oci;

impl Translator for Oci {
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

    fn parse_chat(&self, t: &Target<'_>, answer: &Answer<'_>) -> Result<Completion, BadAnswer> {
        parse_chat(t, answer.body)
    }

    fn chat_stream(&self, t: &Target<'_>, ctx: &ResponseCtx<'_>) -> Box<dyn StreamTranslator> {
        stream(t, ctx)
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
    use serde_json::json;

    const COMPARTMENT: &str = "ocid1.compartment.oc1..aaaa";

    fn target(dialect: Dialect, model: &str) -> Target<'_> {
        Target {
            dialect,
            upstream_model: model,
            project: Some(COMPARTMENT),
            location: None,
            api_version: None,
        }
    }

    fn generic() -> Target<'static> {
        target(Dialect::OciGeneric, "meta.llama-3.3-70b-instruct")
    }

    fn cohere() -> Target<'static> {
        target(Dialect::OciCohere, "cohere.command-r-plus-08-2024")
    }

    fn chat(body: &str) -> ChatRequest {
        ChatRequest::from_parsed(
            &parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// Issue 15.1: `reasoning_effort` → GENERIC `reasoningEffort` for reasoning models; named
    /// as dropped for other GENERIC models and for COHERE.
    #[test]
    fn reasoning_effort_mapping() {
        let req = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"minimal"}"#,
        );
        for model in [
            "openai.gpt-oss-120b",
            "xai.grok-3-mini",
            "ocid1.generativeaiendpoint.oc1..x",
        ] {
            let up = prepare_chat(&target(Dialect::OciGeneric, model), &req).unwrap();
            let v: Value = serde_json::from_slice(&up.body).unwrap();
            assert_eq!(v["chatRequest"]["reasoningEffort"], "MINIMAL", "{model}");
            assert!(up.dropped.is_empty(), "{:?}", up.dropped);
        }
        for t in [generic(), cohere()] {
            let up = prepare_chat(&t, &req).unwrap();
            let v: Value = serde_json::from_slice(&up.body).unwrap();
            assert!(v["chatRequest"].get("reasoningEffort").is_none());
            assert_eq!(up.dropped, ["reasoning_effort"]);
        }
    }

    fn prepared(t: &Target<'_>, body: &str) -> (UpstreamRequest, Value) {
        let up = prepare_chat(t, &chat(body)).unwrap();
        let v = serde_json::from_slice(&up.body).unwrap();
        (up, v)
    }

    const RICH: &str = r#"{"model":"m","messages":[
        {"role":"system","content":"be brief"},
        {"role":"developer","content":"use metric"},
        {"role":"user","name":"ann","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
        {"role":"assistant","content":"Checking.","tool_calls":[
            {"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
            {"id":"c2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"London\"}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"sunny"},
        {"role":"tool","tool_call_id":"c2","content":"rain"},
        {"role":"assistant","content":"Paris is sunny."},
        {"role":"user","content":"thanks"}],
        "max_tokens":50,"temperature":2.5,"top_p":0.9,"stop":["END"],"seed":7,
        "frequency_penalty":0.1,"presence_penalty":1.5,"user":"u1","parallel_tool_calls":false,"logprobs":true,
        "tools":[{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string","description":"City"},"days":{"type":"integer"}},"required":["city"]},"strict":true}}],
        "tool_choice":{"type":"function","function":{"name":"weather"}},
        "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}}}"#;

    #[test]
    fn generic_rich_request_field_by_field() {
        let (up, v) = prepared(&generic(), RICH);
        assert_eq!(up.path, "/20231130/actions/chat");
        assert_eq!(up.answer, AnswerFormat::Json);
        assert_eq!(v["compartmentId"], COMPARTMENT);
        assert_eq!(
            v["servingMode"],
            json!({"servingType":"ON_DEMAND","modelId":"meta.llama-3.3-70b-instruct"})
        );
        let r = &v["chatRequest"];
        assert_eq!(r["apiFormat"], "GENERIC");
        let m = &r["messages"];
        assert_eq!(
            m[0],
            json!({"role":"SYSTEM","content":[{"type":"TEXT","text":"be brief"}]})
        );
        assert_eq!(
            m[1],
            json!({"role":"SYSTEM","content":[{"type":"TEXT","text":"use metric"}]})
        );
        assert_eq!(
            m[2],
            json!({"role":"USER","name":"ann","content":[{"type":"TEXT","text":"look"},
                {"type":"IMAGE","imageUrl":{"url":"data:image/png;base64,AAAA","detail":"LOW"}}]})
        );
        assert_eq!(
            m[3],
            json!({"role":"ASSISTANT","content":[{"type":"TEXT","text":"Checking."}],"toolCalls":[
                {"type":"FUNCTION","id":"c1","name":"weather","arguments":"{\"city\":\"Paris\"}"},
                {"type":"FUNCTION","id":"c2","name":"weather","arguments":"{\"city\":\"London\"}"}]})
        );
        assert_eq!(
            m[4],
            json!({"role":"TOOL","content":[{"type":"TEXT","text":"sunny"}],"toolCallId":"c1"})
        );
        assert_eq!(
            m[5],
            json!({"role":"TOOL","content":[{"type":"TEXT","text":"rain"}],"toolCallId":"c2"})
        );
        assert_eq!(
            m[6],
            json!({"role":"ASSISTANT","content":[{"type":"TEXT","text":"Paris is sunny."}]})
        );
        assert_eq!(
            m[7],
            json!({"role":"USER","content":[{"type":"TEXT","text":"thanks"}]})
        );
        assert_eq!(r["maxTokens"], 50);
        assert_eq!(r["temperature"], 2.0);
        assert_eq!(r["topP"], 0.9);
        assert_eq!(r["stop"], json!(["END"]));
        assert_eq!(r["seed"], 7);
        assert_eq!(r["frequencyPenalty"], 0.1);
        assert_eq!(r["presencePenalty"], 1.5);
        assert_eq!(r["isParallelToolCalls"], false);
        assert_eq!(
            r["tools"],
            json!([{"type":"FUNCTION","name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string","description":"City"},"days":{"type":"integer"}},"required":["city"]}}])
        );
        assert_eq!(r["toolChoice"], json!({"type":"FUNCTION","name":"weather"}));
        assert_eq!(
            r["responseFormat"],
            json!({"type":"JSON_SCHEMA","jsonSchema":{"name":"w","schema":{"type":"object"},"isStrict":true}})
        );
        for absent in [
            "isStream",
            "streamOptions",
            "numGenerations",
            "user",
            "logprobs",
        ] {
            assert!(r.get(absent).is_none(), "{absent}");
        }
        assert_eq!(
            up.dropped,
            vec!["tools[].function.strict", "user", "logprobs"]
        );
    }

    #[test]
    fn generic_stream_dedicated_and_choices() {
        let t = target(
            Dialect::OciGeneric,
            "ocid1.generativeaiendpoint.oc1.us-chicago-1.xyz",
        );
        for (choice, expected) in [
            (r#""none""#, json!({"type":"NONE"})),
            (r#""auto""#, json!({"type":"AUTO"})),
            (r#""required""#, json!({"type":"REQUIRED"})),
        ] {
            let (up, v) = prepared(
                &t,
                &format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":true,"n":1,
                    "tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":{choice},"response_format":{{"type":"json_object"}}}}"#
                ),
            );
            assert_eq!(up.answer, AnswerFormat::Sse);
            assert_eq!(
                v["servingMode"],
                json!({"servingType":"DEDICATED","endpointId":"ocid1.generativeaiendpoint.oc1.us-chicago-1.xyz"})
            );
            let r = &v["chatRequest"];
            assert_eq!(r["toolChoice"], expected);
            assert_eq!(r["isStream"], true);
            assert_eq!(r["streamOptions"], json!({"isIncludeUsage":true}));
            assert_eq!(r["numGenerations"], 1);
            assert_eq!(r["responseFormat"], json!({"type":"JSON_OBJECT"}));
            assert_eq!(
                r["tools"][0]["parameters"],
                json!({"type":"object","properties":{}})
            );
        }
    }

    #[test]
    fn cohere_rich_request_field_by_field() {
        let (up, v) = prepared(&cohere(), RICH.replace(r#",{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}"#, "").as_str());
        assert_eq!(
            v["servingMode"],
            json!({"servingType":"ON_DEMAND","modelId":"cohere.command-r-plus-08-2024"})
        );
        let r = &v["chatRequest"];
        assert_eq!(r["apiFormat"], "COHERE");
        assert_eq!(r["message"], "thanks");
        assert_eq!(r["preambleOverride"], "be brief\n\nuse metric");
        assert_eq!(
            r["chatHistory"],
            json!([
                {"role":"USER","message":"look"},
                {"role":"CHATBOT","message":"Checking.","toolCalls":[
                    {"name":"weather","parameters":{"city":"Paris"}},
                    {"name":"weather","parameters":{"city":"London"}}]},
                {"role":"TOOL","toolResults":[
                    {"call":{"name":"weather","parameters":{"city":"Paris"}},"outputs":[{"output":"sunny"}]},
                    {"call":{"name":"weather","parameters":{"city":"London"}},"outputs":[{"output":"rain"}]}]},
                {"role":"CHATBOT","message":"Paris is sunny."}
            ])
        );
        assert!(r.get("toolResults").is_none());
        assert_eq!(
            r["tools"],
            json!([{"name":"weather","description":"Weather","parameterDefinitions":{
                "city":{"type":"str","description":"City","isRequired":true},
                "days":{"type":"int","isRequired":false}}}])
        );
        assert_eq!(r["maxTokens"], 50);
        assert_eq!(r["temperature"], 1.0, "clamped to 0-1");
        assert_eq!(r["topP"], 0.9);
        assert_eq!(r["frequencyPenalty"], 0.1);
        assert_eq!(r["presencePenalty"], 1.0, "clamped to 0-1");
        assert_eq!(r["stopSequences"], json!(["END"]));
        assert_eq!(r["seed"], 7);
        assert_eq!(
            r["responseFormat"],
            json!({"type":"JSON_OBJECT","schema":{"type":"object"}})
        );
        for absent in [
            "isStream",
            "messages",
            "stop",
            "toolChoice",
            "numGenerations",
        ] {
            assert!(r.get(absent).is_none(), "{absent}");
        }
        assert_eq!(
            up.dropped,
            vec![
                "tools[].function.strict",
                "user",
                "tool_choice",
                "messages[].name",
                "parallel_tool_calls",
                "response_format.json_schema.strict",
                "logprobs"
            ]
        );
    }

    #[test]
    fn cohere_trailing_tool_results_and_bot_turn_after_tools() {
        let (_, v) = prepared(
            &cohere(),
            r#"{"model":"m","stream":true,"messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                                                            {"id":"c2","type":"function","function":{"name":"time","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"tool","tool_call_id":"c2","content":"noon"}],
            "tools":[{"type":"function","function":{"name":"weather"}},{"type":"function","function":{"name":"time","description":"Clock"}}]}"#,
        );
        let r = &v["chatRequest"];
        assert_eq!(r["message"], "");
        assert_eq!(
            r["chatHistory"],
            json!([{"role":"USER","message":"weather?"},
                   {"role":"CHATBOT","message":" ","toolCalls":[{"name":"weather","parameters":{"city":"Paris"}},{"name":"time","parameters":{}}]}])
        );
        assert_eq!(
            r["toolResults"],
            json!([{"call":{"name":"weather","parameters":{"city":"Paris"}},"outputs":[{"output":"sunny"}]},
                   {"call":{"name":"time","parameters":{}},"outputs":[{"output":"noon"}]}])
        );
        assert_eq!(
            r["tools"],
            json!([{"name":"weather","description":"weather"},{"name":"time","description":"Clock"}])
        );
        assert_eq!(r["isStream"], true);
        assert_eq!(r["streamOptions"], json!({"isIncludeUsage":true}));
        assert!(r.get("preambleOverride").is_none());

        // Tool results directly followed by a user turn: a bot turn repeats the output.
        let (_, v) = prepared(
            &cohere(),
            r#"{"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"system","content":"late rule"},
            {"role":"user","content":"and now?"}]}"#,
        );
        let h = &v["chatRequest"]["chatHistory"];
        assert_eq!(h[2]["role"], "TOOL");
        assert_eq!(h[3], json!({"role":"CHATBOT","message":"sunny"}));
        assert_eq!(h[4], json!({"role":"SYSTEM","message":"late rule"}));
        assert_eq!(h.as_array().unwrap().len(), 5);
        let (_, v) = prepared(
            &cohere(),
            r#"{"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"user","content":"and now?"}]}"#,
        );
        let h = &v["chatRequest"]["chatHistory"];
        assert_eq!(h[3], json!({"role":"CHATBOT","message":"sunny"}));
        assert_eq!(v["chatRequest"]["message"], "and now?");
    }

    #[test]
    fn rejections_name_their_parameter() {
        let cases: &[(&Target<'_>, &str, &str)] = &[
            (
                &generic(),
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
                "messages[0].content[0].image_url",
            ),
            (
                &generic(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"nope"}}]}]}"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                &generic(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3,"stream":true}"#,
                "n",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}]}"#,
                "messages[0].content[1].image_url",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"pre"}]}"#,
                "messages[1].role",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
                "messages",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[]"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]}"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                &cohere(),
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"zz","content":"r"}]}"#,
                "messages[2].tool_call_id",
            ),
        ];
        for (t, body, param) in cases {
            let err = prepare_chat(t, &chat(body)).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(*param), "{body}");
        }
        let mut t = generic();
        t.project = None;
        let err = prepare_chat(
            &t,
            &chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#),
        )
        .unwrap_err();
        assert!(err.message.contains("compartment_id"), "{}", err.message);
    }

    #[test]
    fn generic_answers() {
        // Shape: PROTOCOLS 7.1 / OCI SDK ChatResult → GenericChatResponse → ChatChoice.
        let c = parse_chat(
            &generic(),
            br#"{"modelId":"meta.llama-3.3-70b-instruct","modelVersion":"1.0.0","chatResponse":{"apiFormat":"GENERIC",
            "timeCreated":"2025-01-01T00:00:00.000Z","choices":[{"index":0,"message":{"role":"ASSISTANT",
            "content":[{"type":"TEXT","text":"Hello "},{"type":"TEXT","text":"there"}],"reasoningContent":"hmm"},
            "finishReason":"stop","logprobs":null}],
            "usage":{"promptTokens":10,"completionTokens":5,"totalTokens":15,"promptTokensDetails":{"cachedTokens":4},
              "completionTokensDetails":{"reasoningTokens":3}}}}"#,
        )
        .unwrap();
        assert_eq!(c.id, None);
        assert_eq!(c.choices[0].content.as_deref(), Some("Hello there"));
        assert_eq!(c.choices[0].reasoning.as_deref(), Some("hmm"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
        let mut u = Usage::new(10, 5);
        u.cached_tokens = 4;
        u.reasoning_tokens = 3;
        assert_eq!(c.usage, Some(u));

        let c = parse_chat(
            &generic(),
            br#"{"modelId":"m","chatResponse":{"apiFormat":"GENERIC","timeCreated":"t","choices":[{"index":0,
            "message":{"role":"ASSISTANT","content":null,"toolCalls":[
              {"type":"FUNCTION","id":"call_a","name":"weather","arguments":"{\"city\":\"Paris\"}"},
              {"type":"FUNCTION","name":"weather","arguments":"{\"city\":\"London\"}"}]},"finishReason":"tool_calls"}]}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content, None);
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(ch.tool_calls[0].id, "call_a");
        assert_eq!(ch.tool_calls[1].id, "call_1");
        assert_eq!(c.usage, None);
        for (reason, expected) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("STOP", FinishReason::Stop),
        ] {
            let body = format!(
                r#"{{"chatResponse":{{"apiFormat":"GENERIC","choices":[{{"index":0,"message":{{"role":"ASSISTANT","content":[{{"type":"TEXT","text":"a"}}]}},"finishReason":"{reason}"}}]}}}}"#
            );
            assert_eq!(
                parse_chat(&generic(), body.as_bytes()).unwrap().choices[0].finish_reason,
                Some(expected)
            );
        }
        assert!(parse_chat(&generic(), b"not json").is_err());
        assert!(parse_chat(
            &generic(),
            br#"{"chatResponse":{"apiFormat":"GENERIC","choices":[]}}"#
        )
        .is_err());
    }

    #[test]
    fn cohere_answers() {
        // Shape: OCI SDK CohereChatResponse (text, finishReason, toolCalls{name,parameters}, usage).
        let c = parse_chat(
            &cohere(),
            br#"{"modelId":"cohere.command-r-plus","modelVersion":"1.2","chatResponse":{"apiFormat":"COHERE","text":"Hi!",
            "finishReason":"COMPLETE","chatHistory":[{"role":"USER","message":"hi"},{"role":"CHATBOT","message":"Hi!"}],
            "usage":{"promptTokens":3,"completionTokens":2,"totalTokens":5}}}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].content.as_deref(), Some("Hi!"));
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(c.usage, Some(Usage::new(3, 2)));
        let c = parse_chat(
            &cohere(),
            br#"{"chatResponse":{"apiFormat":"COHERE","text":"","finishReason":"COMPLETE",
            "toolCalls":[{"name":"weather","parameters":{"city":"Paris"}},{"name":"weather","parameters":{"city":"London"}}]}}"#,
        )
        .unwrap();
        let ch = &c.choices[0];
        assert_eq!(ch.content, None);
        assert_eq!(ch.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            ch.tool_calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments: r#"{"city":"London"}"#.into()
                },
            ]
        );
        for (reason, expected) in [
            ("COMPLETE", FinishReason::Stop),
            ("USER_CANCEL", FinishReason::Stop),
            ("MAX_TOKENS", FinishReason::Length),
            ("ERROR_LIMIT", FinishReason::Length),
            ("ERROR_TOXIC", FinishReason::ContentFilter),
        ] {
            let body = format!(
                r#"{{"chatResponse":{{"apiFormat":"COHERE","text":"a","finishReason":"{reason}"}}}}"#
            );
            assert_eq!(
                parse_chat(&cohere(), body.as_bytes()).unwrap().choices[0].finish_reason,
                Some(expected)
            );
        }
        let err = parse_chat(
            &cohere(),
            br#"{"chatResponse":{"apiFormat":"COHERE","text":"","finishReason":"ERROR","errorMessage":"model crashed"}}"#,
        )
        .unwrap_err();
        assert!(err.0.contains("model crashed"));
    }

    fn ctx(include_usage: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "llama",
            created: 3,
            fallback_id: "req-9",
            front: FrontDoor::Chat,
            include_usage,
            echo: "",
        }
    }

    fn data(events: &[&str]) -> String {
        events.iter().map(|e| format!("data: {e}\n\n")).collect()
    }

    /// GENERIC text stream: ChatChoice-like events (padding field as OCI adds), the finish
    /// event, then the usage chunk (`StreamOptions.isIncludeUsage`).
    fn generic_text() -> String {
        data(&[
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"Hello"}]},"pad":"aaaa"}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":" wörld"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT"},"finishReason":"stop"}"#,
            r#"{"usage":{"promptTokens":12,"completionTokens":2,"totalTokens":14,"promptTokensDetails":{"cachedTokens":8}}}"#,
        ])
    }

    #[test]
    fn generic_text_stream_at_every_split() {
        let input = generic_text();
        let (out, end, usage) = every_split(|| stream(&generic(), &ctx(true)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let mut u = Usage::new(12, 2);
        u.cached_tokens = 8;
        assert_eq!(usage, Some(u));
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "Hello wörld");
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"));
        let evs = events(&out);
        assert_eq!(evs[0]["id"], "chatcmpl-req-9");
        assert_eq!(
            evs[evs.len() - 2]["usage"]["prompt_tokens_details"]["cached_tokens"],
            8
        );
        assert_eq!(evs.last().unwrap(), "[DONE]");
        // [DONE], if OCI sends one, ends the stream too.
        let input = format!("{}data: [DONE]\n\n", generic_text());
        let (_, end, _) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
    }

    #[test]
    fn first_event_is_written_immediately() {
        let mut t = stream(&generic(), &ctx(false));
        let mut out = Vec::new();
        let first = generic_text();
        let first = &first[..first.find("\n\n").unwrap() + 2];
        t.feed(first.as_bytes(), &mut out);
        let evs = events(&out);
        assert_eq!(evs[1]["choices"][0]["delta"]["content"], "Hello");
    }

    #[test]
    fn generic_parallel_tool_calls_stream() {
        // GPT pattern: id+name opens a call at position 0, id-less fragments continue it,
        // a new id at the same position opens the next call; a Gemini-style call without id
        // arrives whole. Reasoning first. (oracle/langchain-oracle test_oci_generative_ai.py)
        let input = data(&[
            r#"{"index":0,"message":{"role":"ASSISTANT","reasoningContent":"Two cities."}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":""}],"toolCalls":[{"type":"FUNCTION","id":"call_p","name":"weather","arguments":"{\"ci"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","toolCalls":[{"arguments":"ty\":\"Paris\"}"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","toolCalls":[{"type":"FUNCTION","id":"call_l","name":"weather","arguments":""}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","toolCalls":[{"arguments":"{\"city\":\"London\"}"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","toolCalls":[{"type":"FUNCTION","name":"time","arguments":"{}"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT"},"finishReason":"tool_calls"}"#,
        ]);
        let (out, end, usage) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, None);
        let (text, calls, finish) = reassemble(&out);
        assert_eq!(text, "");
        assert_eq!(
            calls,
            vec![
                (
                    "call_p".into(),
                    "weather".into(),
                    "{\"city\":\"Paris\"}".into()
                ),
                (
                    "call_l".into(),
                    "weather".into(),
                    "{\"city\":\"London\"}".into()
                ),
                ("call_2".into(), "time".into(), "{}".into()),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert_eq!(
            events(&out)[1]["choices"][0]["delta"]["reasoning_content"],
            "Two cities."
        );
    }

    #[test]
    fn generic_finish_event_repeating_the_answer_is_not_duplicated() {
        let input = data(&[
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"Hi"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"Hi"}]},"finishReason":"length"}"#,
        ]);
        let (out, end, _) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(
            reassemble(&out),
            ("Hi".into(), vec![], Some("length".into()))
        );
        // …but text that only arrives with the finish reason is kept.
        let input = data(&[
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"Once"}]},"finishReason":"stop"}"#,
        ]);
        let (out, _, _) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
        assert_eq!(reassemble(&out).0, "Once");
    }

    #[test]
    fn cohere_streams() {
        // COHERE: text events, then the final event repeating the full text with finishReason.
        let input = data(&[
            r#"{"apiFormat":"COHERE","text":"Hel"}"#,
            r#"{"apiFormat":"COHERE","text":"lo"}"#,
            r#"{"apiFormat":"COHERE","text":"Hello","finishReason":"COMPLETE","chatHistory":[{"role":"USER","message":"hi"},{"role":"CHATBOT","message":"Hello"}],"usage":{"promptTokens":3,"completionTokens":1,"totalTokens":4}}"#,
        ]);
        let (out, end, usage) = every_split(|| stream(&cohere(), &ctx(true)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(usage, Some(Usage::new(3, 1)));
        assert_eq!(
            reassemble(&out),
            ("Hello".into(), vec![], Some("stop".into()))
        );

        // Tool calls: one event with complete calls (no ids), then the final event repeating them.
        let input = data(&[
            r#"{"apiFormat":"COHERE","toolCalls":[{"name":"weather","parameters":{"city":"Paris"}},{"name":"weather","parameters":{"city":"London"}}]}"#,
            r#"{"apiFormat":"COHERE","text":"","finishReason":"COMPLETE","toolCalls":[{"name":"weather","parameters":{"city":"Paris"}},{"name":"weather","parameters":{"city":"London"}}]}"#,
        ]);
        let (out, end, _) = every_split(|| stream(&cohere(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
        let (_, calls, finish) = reassemble(&out);
        assert_eq!(
            calls,
            vec![
                (
                    "call_0".into(),
                    "weather".into(),
                    r#"{"city":"Paris"}"#.into()
                ),
                (
                    "call_1".into(),
                    "weather".into(),
                    r#"{"city":"London"}"#.into()
                ),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));

        for (reason, expected) in [
            ("MAX_TOKENS", "length"),
            ("ERROR_TOXIC", "content_filter"),
            ("USER_CANCEL", "stop"),
        ] {
            let input = data(&[&format!(
                r#"{{"apiFormat":"COHERE","text":"x","finishReason":"{reason}"}}"#
            )]);
            let (out, _, _) = every_split(|| stream(&cohere(), &ctx(false)), input.as_bytes());
            assert_eq!(reassemble(&out).2.as_deref(), Some(expected));
        }
    }

    #[test]
    fn mid_stream_errors() {
        let cases: &[(&Target<'_>, &str, &str, Option<&str>)] = &[
            (
                &cohere(),
                r#"{"apiFormat":"COHERE","text":"","finishReason":"ERROR","errorMessage":"Model failed"}"#,
                "Model failed",
                Some("ERROR"),
            ),
            (
                &cohere(),
                r#"{"apiFormat":"COHERE","errorMessage":"Internal error"}"#,
                "Internal error",
                None,
            ),
            (
                &cohere(),
                r#"{"code":"InternalServerError","message":"Boom"}"#,
                "Boom",
                Some("InternalServerError"),
            ),
            (
                &generic(),
                r#"{"code":"InternalServerError","message":"Boom"}"#,
                "Boom",
                Some("InternalServerError"),
            ),
            (
                &generic(),
                r#"{"errorMessage":"Overloaded","code":"ServiceUnavailable"}"#,
                "Overloaded",
                Some("ServiceUnavailable"),
            ),
        ];
        for (t, err_event, message, code) in cases {
            let first = if t.dialect == Dialect::OciCohere {
                r#"{"apiFormat":"COHERE","text":"Hel"}"#
            } else {
                r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"Hel"}]}}"#
            };
            let input = data(&[first, err_event, first]);
            let (out, end, _) = every_split(|| stream(t, &ctx(false)), input.as_bytes());
            assert_eq!(
                end,
                StreamEnd::ProviderError((*message).into()),
                "{err_event}"
            );
            let evs = events(&out);
            let last = evs.last().unwrap();
            assert_eq!(last["error"]["message"], *message);
            assert_eq!(last["error"]["code"].as_str(), *code);
            assert_eq!(
                reassemble(&out).0,
                "Hel",
                "input after the error is ignored"
            );
        }
    }

    #[test]
    fn truncated_streams() {
        let full = generic_text();
        let cut = &full[..full.find("finishReason").unwrap()];
        for input in [cut, &full[..full.find("finishReason").unwrap() - 30], ""] {
            let (out, end, _) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
            assert_eq!(end, StreamEnd::Truncated);
            if !input.is_empty() {
                assert_eq!(
                    events(&out).last().unwrap()["error"]["code"],
                    "stream_truncated"
                );
            }
        }
        let input = data(&[r#"{"apiFormat":"COHERE","text":"Hel"}"#]);
        let (_, end, _) = every_split(|| stream(&cohere(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Truncated);
        // The finish event without its blank line still completes the stream.
        let input = full.trim_end();
        let (_, end, _) = every_split(|| stream(&generic(), &ctx(false)), input.as_bytes());
        assert_eq!(end, StreamEnd::Complete);
    }

    #[test]
    fn error_mapping_table() {
        for (status, code, out_status, out_code, out_type) in [
            (
                400,
                "InvalidParameter",
                400,
                "InvalidParameter",
                "invalid_request_error",
            ),
            (
                400,
                "MissingParameter",
                400,
                "MissingParameter",
                "invalid_request_error",
            ),
            (
                400,
                "CannotParseRequest",
                400,
                "CannotParseRequest",
                "invalid_request_error",
            ),
            (
                400,
                "LimitExceeded",
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
            ),
            (
                400,
                "QuotaExceeded",
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
            ),
            (
                401,
                "NotAuthenticated",
                502,
                "NotAuthenticated",
                "server_error",
            ),
            (
                403,
                "NotAuthorized",
                403,
                "NotAuthorized",
                "permission_error",
            ),
            (
                404,
                "NotAuthorizedOrNotFound",
                404,
                "model_not_found",
                "not_found_error",
            ),
            (404, "NotFound", 404, "model_not_found", "not_found_error"),
            (409, "Conflict", 409, "Conflict", "invalid_request_error"),
            (
                413,
                "PayloadTooLarge",
                413,
                "PayloadTooLarge",
                "invalid_request_error",
            ),
            (
                429,
                "TooManyRequests",
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
            ),
            (
                500,
                "InternalServerError",
                500,
                "InternalServerError",
                "server_error",
            ),
            (
                503,
                "ServiceUnavailable",
                503,
                "ServiceUnavailable",
                "server_error",
            ),
            (
                504,
                "RequestTimeout",
                504,
                "RequestTimeout",
                "timeout_error",
            ),
        ] {
            let body = json!({"code": code, "message": "details"}).to_string();
            let r = error(status, body.as_bytes());
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.status, out_status, "{status} {code}");
            assert_eq!(v["error"]["code"], out_code, "{status} {code}");
            assert_eq!(v["error"]["type"], out_type, "{status} {code}");
            let message = if out_status == 502 {
                "The provider rejected the gateway's credentials. details"
            } else {
                "details"
            };
            assert_eq!(v["error"]["message"], message);
        }
        let r = error(
            400,
            br#"{"code":"InvalidParameter","message":"Input exceeds the model's context length"}"#,
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        let r = error(502, b"<html>");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["error"]["message"].as_str()),
            (500, Some("Provider returned HTTP 502."))
        );
        assert_eq!(error(401, b"").status, 502);
    }

    // The fast path for text events (`fast_generic_text` / `fast_cohere_text` +
    // `ChunkWriter::content_json`); the texts are shared with the Gemini tests.

    use crate::providers::gemini::tests::{BAD_LITERALS, OTHER_ESCAPES};

    fn fast_path_texts() -> Vec<String> {
        crate::providers::gemini::tests::fast_path_texts()
    }

    /// A GENERIC text event as OCI sends it and in other layouts the fast path takes.
    fn generic_layouts(lit: &str) -> Vec<String> {
        vec![
            format!(
                r#"{{"index":0,"message":{{"role":"ASSISTANT","content":[{{"type":"TEXT","text":{lit}}}]}},"pad":"aaaa"}}"#
            ),
            format!(
                r#"{{"index":0,"message":{{"role":"ASSISTANT","content":[{{"type":"TEXT","text":{lit}}}]}}}}"#
            ),
            // keys sorted (serde_json's `json!`), as benches/providers.rs builds them
            format!(
                r#"{{"index":0,"message":{{"content":[{{"text":{lit},"type":"TEXT"}}],"role":"ASSISTANT"}}}}"#
            ),
            format!(r#"{{"message":{{"content":[{{"text":{lit}}}]}}}}"#),
            format!(
                "{{ \"index\" : 0 ,\t\"message\" : {{ \"content\" : [ {{ \"type\" : \"TEXT\" , \"text\" : {lit} }} ] }} }} "
            ),
        ]
    }

    /// A COHERE text event as OCI sends it and in other layouts the fast path takes.
    fn cohere_layouts(lit: &str) -> Vec<String> {
        vec![
            format!(r#"{{"apiFormat":"COHERE","text":{lit}}}"#),
            format!(r#"{{"apiFormat":"COHERE","text":{lit},"pad":"aaaaaaa"}}"#),
            format!(r#"{{"text":{lit}}}"#),
            format!("{{ \"text\" : {lit} ,\t\"apiFormat\" : \"COHERE\" }}"),
        ]
    }

    fn fast(cohere: bool, data: &[u8]) -> Option<&str> {
        if cohere {
            fast_cohere_text(data)
        } else {
            fast_generic_text(data)
        }
    }

    /// Client bytes (checked at every split) for a stream: `events`, then the finish event.
    fn client_bytes(cohere: bool, events: &[&str], legacy: bool, split: bool) -> Vec<u8> {
        let mut all = events.to_vec();
        all.push(if cohere {
            r#"{"apiFormat":"COHERE","text":"","finishReason":"COMPLETE"}"#
        } else {
            r#"{"index":0,"message":{"role":"ASSISTANT"},"finishReason":"stop"}"#
        });
        let t = if cohere { self::cohere() } else { generic() };
        let ctx = ResponseCtx {
            front: FrontDoor::legacy(legacy),
            ..ctx(true)
        };
        let input = data(&all);
        let (out, end) = if split {
            let (out, end, _) = every_split(|| stream(&t, &ctx), input.as_bytes());
            (out, end)
        } else {
            let mut tr = stream(&t, &ctx);
            let mut out = Vec::new();
            tr.feed(input.as_bytes(), &mut out);
            let end = tr.finish(&mut out);
            (out, end)
        };
        assert_eq!(end, StreamEnd::Complete);
        out
    }

    /// The same event with one more (unknown) member: serde ignores it, the fast path
    /// refuses it, so this twin takes the full parse.
    fn full_parse_twin(ev: &str) -> String {
        let at = ev.find('{').unwrap() + 1;
        format!(r#"{}"unknownField":1,{}"#, &ev[..at], &ev[at..])
    }

    #[test]
    fn fast_text_agrees_with_the_full_parse() {
        for cohere in [false, true] {
            let layouts = if cohere {
                cohere_layouts
            } else {
                generic_layouts
            };
            for text in fast_path_texts() {
                let lit = serde_json::to_string(&text).unwrap();
                for ev in layouts(&lit) {
                    assert_eq!(fast(cohere, ev.as_bytes()), Some(&*lit), "missed {ev}");
                    let twin = full_parse_twin(&ev);
                    assert_eq!(fast(cohere, twin.as_bytes()), None);
                    for legacy in [false, true] {
                        let out = client_bytes(cohere, &[&ev], legacy, false);
                        assert_eq!(out, client_bytes(cohere, &[&twin], legacy, false), "{ev}");
                        if !legacy {
                            assert_eq!(reassemble(&out).0, text);
                        }
                    }
                }
            }
            for (lit, text) in OTHER_ESCAPES {
                let canonical = serde_json::to_string(text).unwrap();
                for (ev, canon) in layouts(lit).iter().zip(layouts(&canonical)) {
                    assert_eq!(fast(cohere, ev.as_bytes()), None, "{ev}");
                    assert_eq!(
                        client_bytes(cohere, &[ev], false, false),
                        client_bytes(cohere, &[&canon], false, false)
                    );
                }
            }
            for lit in BAD_LITERALS {
                let lit = String::from_utf8_lossy(lit);
                for ev in layouts(&lit) {
                    let mut bytes = ev.clone().into_bytes();
                    if lit.contains('\u{fffd}') {
                        let at = ev.find('\u{fffd}').unwrap();
                        bytes.splice(at..at + '\u{fffd}'.len_utf8(), [0xff]);
                    }
                    assert_eq!(fast(cohere, &bytes), None, "{ev}");
                    if cohere {
                        assert!(serde_json::from_slice::<CEvent<'_>>(&bytes).is_err());
                    } else {
                        assert!(serde_json::from_slice::<GEvent<'_>>(&bytes).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn fast_text_leaves_other_events_to_the_full_parse() {
        for ev in [
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]},"finishReason":"stop"}"#,
            r#"{"index":1,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]}}"#,
            r#"{"index":0.0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]}}"#,
            r#"{"index":01,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"},{"type":"TEXT","text":"y"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"IMAGE","text":"x"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}],"reasoningContent":"r"}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}],"toolCalls":[]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]},"usage":{"promptTokens":1}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]},"code":"E"}"#,
            r#"{"index":0,"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"x"}]}} x"#,
            r#"{"index":0,"message":{"role":"ASSISTANT","content":[]}}"#,
            r#"{"index":0,"message":{"role":"ASSISTANT"}}"#,
            r#"{"index":0,"message":{"content":[{"text":"x"}]},"pad":"aa\"a"}"#,
        ] {
            assert_eq!(fast_generic_text(ev.as_bytes()), None, "{ev}");
        }
        for ev in [
            r#"{"apiFormat":"COHERE","text":"x","finishReason":"COMPLETE"}"#,
            r#"{"apiFormat":"COHERE","text":"x","toolCalls":[]}"#,
            r#"{"apiFormat":"COHERE","text":"x","usage":{"promptTokens":1}}"#,
            r#"{"apiFormat":"COHERE","text":"x","errorMessage":"boom"}"#,
            r#"{"apiFormat":"COHERE","text":"x","code":"E"}"#,
            r#"{"apiFormat":"COHERE","text":"x","message":"m"}"#,
            r#"{"apiFormat":"COHERE","text":"x","text":"y"}"#,
            r#"{"apiFormat":"GENERIC","text":"x"}"#,
            r#"{"apiFormat":"COHERE"}"#,
            r#"{"apiFormat":"COHERE","text":null}"#,
            r#"["apiFormat","COHERE"]"#,
        ] {
            assert_eq!(fast_cohere_text(ev.as_bytes()), None, "{ev}");
        }
    }

    fn fast_raw(cohere: bool, raw: &str) -> Option<&str> {
        sse_line(raw.as_bytes()).and_then(|d| fast(cohere, d))
    }

    #[test]
    fn fast_path_takes_only_single_data_line_events() {
        let lit = serde_json::to_string("a \"b\"\n").unwrap();
        for cohere in [false, true] {
            let layouts = if cohere {
                cohere_layouts
            } else {
                generic_layouts
            };
            for ev in layouts(&lit) {
                let raw = format!("data: {ev}\n\n");
                assert_eq!(fast_raw(cohere, &raw), Some(&*lit));
                // A line end anywhere inside the line: refused.
                for at in 0..raw.len() - 2 {
                    for end in ["\n", "\r", "\r\n"] {
                        let mut cut = raw.clone();
                        cut.insert_str(at, end);
                        assert_eq!(fast_raw(cohere, &cut), None, "{cut:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_and_full_events_mixed_at_every_split() {
        for cohere in [false, true] {
            let layouts = if cohere {
                cohere_layouts
            } else {
                generic_layouts
            };
            let mut events = Vec::new();
            let texts = &fast_path_texts()[..13];
            for (i, text) in texts.iter().enumerate() {
                let lit = serde_json::to_string(text).unwrap();
                let evs = layouts(&lit);
                let ev = evs[i % evs.len()].clone();
                events.push(if i % 3 == 0 { full_parse_twin(&ev) } else { ev });
            }
            let events: Vec<&str> = events.iter().map(String::as_str).collect();
            let out = client_bytes(cohere, &events, false, true);
            assert_eq!(reassemble(&out).0, texts.concat());
            let twins: Vec<String> = events.iter().map(|e| full_parse_twin(e)).collect();
            let twins: Vec<&str> = twins.iter().map(String::as_str).collect();
            assert_eq!(out, client_bytes(cohere, &twins, false, false));
        }
    }

    /// Issue 15.5: OCI documents no document input for chat: a `file` part is refused by name
    /// on both API formats.
    #[test]
    fn file_parts_are_refused_by_name() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0="}}]}]}"#;
        for t in [generic(), cohere()] {
            let req = ChatRequest::from_parsed(
                &parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap(),
            )
            .unwrap();
            let e = prepare_chat(&t, &req).err().unwrap();
            assert_eq!(e.param.as_deref(), Some("messages[0].content[1]"));
        }
    }
}
