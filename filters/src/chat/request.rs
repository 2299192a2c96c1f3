//! The client's chat request as typed data, validated once, for the translators to read.
//!
//! `/v1/chat/completions` bodies are parsed here; legacy `/v1/completions` bodies are turned
//! into an equivalent one-user-message chat request first ([`ChatRequest::from_completions`]).
//! Every field the translators understand gets a typed slot; every other field the client sent
//! is kept by name in [`ChatRequest::other`] so a translator can list it as dropped rather than
//! lose it silently.

use crate::front::FrontDoor;
use serde_json::{Map, Value};

use crate::openai::{Endpoint, InvalidRequest, ParsedRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// `image_url.url`: an `https://` URL or a `data:<mime>;base64,<data>` URL.
    Image {
        url: String,
        detail: Option<String>,
    },
    /// A document (a PDF) sent inline: OpenAI's `file` part with `file_data`, or a Messages
    /// `document` block with a base64 source. User messages only (the decoders refuse it
    /// elsewhere; translators refuse it defensively too).
    File {
        /// The base64 payload, without the `data:` prefix.
        data: String,
        /// The media type, e.g. `application/pdf`.
        mime: String,
        /// The client's file name or document title, if any.
        name: Option<String>,
    },
}

/// A tool call the assistant made (history) or makes (response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The JSON arguments as a string, as OpenAI carries them.
    pub arguments: String,
}

/// A signed reasoning block of a Claude answer (Anthropic, Bedrock, Vertex — their signatures
/// are interchangeable), kept so that it can be sent back: with extended thinking and tools,
/// Claude refuses a tool-loop continuation whose last assistant turn does not start with the
/// thinking block it produced, unmodified. OpenAI-dialect clients carry these in
/// `thinking_blocks` (LiteLLM's field: `{"type":"thinking","thinking","signature"}` /
/// `{"type":"redacted_thinking","data"}`); Messages clients in their own content blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThinkingBlock {
    /// `thinking` (Converse `reasoningText`): the text and the signature that covers it.
    Thinking { thinking: String, signature: String },
    /// `redacted_thinking` (Converse `redactedContent`): encrypted reasoning, opaque.
    Redacted { data: String },
}

impl ThinkingBlock {
    /// The block as LiteLLM's `thinking_blocks` entry (also Anthropic's content block shape).
    pub fn to_json(&self) -> Value {
        match self {
            ThinkingBlock::Thinking {
                thinking,
                signature,
            } => {
                serde_json::json!({"type": "thinking", "thinking": thinking, "signature": signature})
            }
            ThinkingBlock::Redacted { data } => {
                serde_json::json!({"type": "redacted_thinking", "data": data})
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// Empty for an assistant message that only calls tools (`content: null`).
    pub content: Vec<Part>,
    pub tool_calls: Vec<ToolCall>,
    /// On `tool` messages: the call this result answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
    /// On assistant messages: the signed Claude reasoning blocks the answer carried
    /// (`thinking_blocks`), in order. Only Claude translators send them (first in the turn);
    /// every other translator ignores them — they are the gateway's carrier, not a parameter.
    pub thinking: Vec<ThinkingBlock>,
}

impl Message {
    /// The message's text parts joined by newlines (images ignored).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let Part::Text(t) = p {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (`{"type":"object","properties":{}}` when absent).
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// How hard the model should think, as OpenAI names it (`reasoning_effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    /// Reads OpenAI's `reasoning_effort` value.
    pub fn parse(s: &str) -> Option<Effort> {
        Some(match s {
            "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// The effort closest to a thinking budget in tokens: ≤ 2048 low, ≤ 8192 medium, else
    /// high (the inverse of the Anthropic mapping in `providers::anthropic`, rounded up).
    pub fn from_budget(tokens: u64) -> Effort {
        match tokens {
            0..=2048 => Effort::Low,
            2049..=8192 => Effort::Medium,
            _ => Effort::High,
        }
    }
}

/// The client asked the model to reason before answering: an effort level (OpenAI
/// `reasoning_effort`), an explicit budget in tokens (Messages `thinking.budget_tokens`), or
/// both. Each translator maps it to its provider's native control or names it as dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    pub effort: Option<Effort>,
    pub budget_tokens: Option<u64>,
}

impl Reasoning {
    /// The name the client used, for `x-switchyard-dropped-params` (Messages clients see
    /// `thinking` through `front::messages::request::client_name`).
    pub const PARAM: &'static str = "reasoning_effort";

    /// The thinking budget in tokens: the client's, else the effort's — minimal/low 1024,
    /// medium 4096, high 16384 (four times per step from Anthropic's minimum of 1024, so
    /// [`Effort::from_budget`] maps each back to its own effort). Providers clamp it to their
    /// range.
    pub fn budget(&self) -> u64 {
        self.budget_tokens.unwrap_or(match self.effort() {
            Effort::Minimal | Effort::Low => 1024,
            Effort::Medium => 4096,
            Effort::High => 16384,
        })
    }

    /// The effort, or the one closest to the budget.
    pub fn effort(&self) -> Effort {
        match (self.effort, self.budget_tokens) {
            (Some(e), _) => e,
            (None, Some(b)) => Effort::from_budget(b),
            (None, None) => Effort::Medium,
        }
    }
}

/// How long a prompt-cache entry should live (Anthropic's `ttl`: `5m`, the default, or `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTtl {
    FiveMinutes,
    OneHour,
}

impl CacheTtl {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }
}

/// Where a prompt-cache breakpoint sits: the prompt up to and including this element is
/// cached. System and developer messages are messages like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAt {
    /// After content part `part` of message `message`.
    Part { message: usize, part: usize },
    /// After the whole of message `message` (its last part, or its last tool call).
    Message(usize),
    /// After tool `k` of [`ChatRequest::tools`].
    Tool(usize),
}

/// A client's prompt-cache marker (`cache_control: {"type":"ephemeral","ttl"?}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePoint {
    pub at: CacheAt,
    /// None: the provider's default (5 minutes on Anthropic).
    pub ttl: Option<CacheTtl>,
}

impl CachePoint {
    /// Reads a `cache_control` value: `{"type":"ephemeral"}` with an optional `ttl` of `5m`
    /// or `1h`. Anything else is refused with `param` named.
    pub fn parse(at: CacheAt, v: &Value, param: &str) -> Result<CachePoint, InvalidRequest> {
        let bad =
            |what: &str| InvalidRequest::new(format!("Invalid '{param}': {what}."), Some(param));
        if v.get("type").and_then(Value::as_str) != Some("ephemeral") {
            return Err(bad("expected {\"type\": \"ephemeral\"}"));
        }
        let ttl = match v.get("ttl") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "5m" => Some(CacheTtl::FiveMinutes),
            Some(Value::String(s)) if s == "1h" => Some(CacheTtl::OneHour),
            Some(_) => return Err(bad("'ttl' must be '5m' or '1h'")),
        };
        Ok(CachePoint { at, ttl })
    }
}

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Sample from the `top_k` likeliest tokens (Anthropic, Gemini, OCI); OpenAI has none.
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub n: Option<u64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    /// `reasoning_effort` (chat) or `thinking` (Messages); None: the provider's default.
    pub reasoning: Option<Reasoning>,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The API the request came through (chat, legacy completions, Messages).
    pub front: FrontDoor,
    /// Fields sent that have no typed slot above, by name, in the client's order.
    pub other: Vec<(String, Value)>,
    /// Client parameters the front door could not carry into this neutral form (e.g. a
    /// Messages `cache_control` on the way to a non-Claude host): every provider names them in
    /// `x-switchyard-dropped-params`.
    pub dropped: Vec<String>,
    /// Prompt-cache breakpoints the client marked (`cache_control`), in the order read:
    /// tools' markers are not necessarily first. Empty on most requests.
    pub cache: Vec<CachePoint>,
}

/// Fields consumed by the typed slots (or by routing) and never reported as dropped.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "stream",
    "stream_options",
];

impl ChatRequest {
    /// Parses a request already checked by [`crate::openai::parse_request`] and [`validate`].
    pub fn from_parsed(p: &ParsedRequest) -> Result<ChatRequest, InvalidRequest> {
        match p.endpoint {
            Endpoint::ChatCompletions => Self::from_chat(p.body()?),
            Endpoint::Completions => Self::from_completions(p.body()?),
            Endpoint::Messages | Endpoint::CountTokens => {
                crate::front::messages::request::decode(p.body()?)
            }
            Endpoint::Responses => crate::front::responses::request::decode(p.body()?),
            Endpoint::Embeddings => Err(InvalidRequest::new(
                "Embeddings requests are not chat requests.",
                None,
            )),
        }
    }

    pub fn from_chat(body: &Map<String, Value>) -> Result<ChatRequest, InvalidRequest> {
        let msgs = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                InvalidRequest::new("Missing required parameter: 'messages'.", Some("messages"))
            })?;
        let messages = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut req = Self::common(body, messages, KNOWN)?;
        req.tools = tools(body.get("tools"))?;
        req.tool_choice = tool_choice(body.get("tool_choice"))?;
        req.parallel_tool_calls = opt_bool(body, "parallel_tool_calls")?;
        req.response_format = response_format(body.get("response_format"))?;
        req.reasoning = reasoning_effort(body.get("reasoning_effort"))?;
        req.cache = chat_cache(msgs, body.get("tools"))?;
        if let Some(ToolChoice::Named(name)) = &req.tool_choice {
            if !req.tools.iter().any(|t| &t.name == name) {
                return Err(InvalidRequest::new(
                    format!("Invalid 'tool_choice': no tool named '{name}' in 'tools'."),
                    Some("tool_choice"),
                ));
            }
        }
        Ok(req)
    }

    /// A legacy completions body as a chat request: the prompt becomes one user message, and
    /// `max_tokens` defaults to 16 as on OpenAI's endpoint.
    pub fn from_completions(body: &Map<String, Value>) -> Result<ChatRequest, InvalidRequest> {
        const LEGACY_KNOWN: &[&str] = &[
            "model",
            "prompt",
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "user",
            "n",
            "presence_penalty",
            "frequency_penalty",
            "stream",
            "stream_options",
        ];
        let prompt = match body.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_owned()
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                return Err(InvalidRequest::new(
                    format!("This provider answers one prompt per request; 'prompt' has {}. Send them as separate requests.", a.len()),
                    Some("prompt"),
                ))
            }
            _ => {
                return Err(InvalidRequest::new(
                    "Invalid 'prompt': this provider accepts a string (token-id prompts cannot be translated).",
                    Some("prompt"),
                ))
            }
        };
        let messages = vec![Message {
            role: Role::User,
            content: vec![Part::Text(prompt)],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            thinking: Vec::new(),
        }];
        let mut req = Self::common(body, messages, LEGACY_KNOWN)?;
        req.front = FrontDoor::Completions;
        if req.max_tokens.is_none() {
            req.max_tokens = Some(16);
        }
        Ok(req)
    }

    fn common(
        body: &Map<String, Value>,
        messages: Vec<Message>,
        known: &[&str],
    ) -> Result<ChatRequest, InvalidRequest> {
        let max_tokens = match opt_u64(body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_u64(body, "max_tokens")?,
        };
        let stop = match body.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str().map(str::to_owned).ok_or_else(|| {
                        InvalidRequest::new("Invalid 'stop': expected strings.", Some("stop"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(InvalidRequest::new(
                    "Invalid 'stop': expected a string or an array of strings.",
                    Some("stop"),
                ))
            }
        };
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = stream
            && body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let n = opt_u64(body, "n")?;
        if n == Some(0) {
            return Err(InvalidRequest::new(
                "Invalid 'n': must be at least 1.",
                Some("n"),
            ));
        }
        Ok(ChatRequest {
            messages,
            max_tokens,
            temperature: opt_f64(body, "temperature")?,
            top_p: opt_f64(body, "top_p")?,
            top_k: None,
            stop,
            seed: opt(body, "seed", "an integer", Value::as_i64)?,
            user: opt_str(body, "user")?,
            n,
            presence_penalty: opt_f64(body, "presence_penalty")?,
            frequency_penalty: opt_f64(body, "frequency_penalty")?,
            response_format: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            reasoning: None,
            stream,
            include_usage,
            front: FrontDoor::Chat,
            other: body
                .iter()
                .filter(|(k, v)| !known.contains(&k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dropped: Vec::new(),
            cache: Vec::new(),
        })
    }

    /// The ttl of the breakpoint at `at`, if the client marked one there (`Some(None)`: the
    /// provider's default ttl).
    pub fn cache_at(&self, at: CacheAt) -> Option<Option<CacheTtl>> {
        self.cache.iter().find(|c| c.at == at).map(|c| c.ttl)
    }

    /// Names of the fields in [`Self::other`].
    pub fn other_names(&self) -> impl Iterator<Item = &str> {
        self.other.iter().map(|(k, _)| k.as_str())
    }

    /// The text of every system and developer message, in order, joined by blank lines.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .map(Message::text)
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

/// The roles OpenAI accepts in `messages` (`function` is its deprecated tool role).
pub(crate) const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Checks a chat or completions body's sampling and length parameters and message roles
/// against OpenAI's ranges, so every provider — the mock, OpenAI and each translated one —
/// refuses the same out-of-range request with the same 400 and `param`. Only the fields
/// present are read; nothing is allocated unless the request is refused.
pub fn validate(p: &ParsedRequest) -> Result<(), InvalidRequest> {
    // Read from the body's bytes field by field: no JSON tree of the whole body (whose
    // messages may be megabytes) just to check a few numbers.
    let value = |key: &str| -> Option<Value> { serde_json::from_str(p.field(key)?).ok() };
    let chat = p.endpoint == Endpoint::ChatCompletions;
    number_in(value("temperature"), "temperature", 0.0, 2.0)?;
    number_in(value("top_p"), "top_p", 0.0, 1.0)?;
    number_in(value("presence_penalty"), "presence_penalty", -2.0, 2.0)?;
    number_in(value("frequency_penalty"), "frequency_penalty", -2.0, 2.0)?;
    integer_in(value("max_tokens"), "max_tokens", 1, u64::MAX)?;
    integer_in(
        value("max_completion_tokens"),
        "max_completion_tokens",
        1,
        u64::MAX,
    )?;
    integer_in(value("n"), "n", 1, 128)?;
    if chat {
        // Chat: `logprobs` is a switch, `top_logprobs` (0-20) needs it on.
        let logprobs = value("logprobs");
        match logprobs {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(_) => {
                return Err(InvalidRequest::new(
                    "Invalid type for 'logprobs': expected a boolean.",
                    Some("logprobs"),
                ))
            }
        }
        let top_logprobs = value("top_logprobs");
        let top = top_logprobs.as_ref().is_some_and(|v| !v.is_null());
        integer_in(top_logprobs, "top_logprobs", 0, 20)?;
        if top && logprobs.as_ref().and_then(Value::as_bool) != Some(true) {
            return Err(InvalidRequest::new(
                "Invalid value for 'logprobs': must be true when 'top_logprobs' is set.",
                Some("logprobs"),
            ));
        }
        // Known roles: not even the field's text is looked up (a UTF-8 check of all of it).
        if !p.roles_known() {
            if let Some(messages) = p.field("messages") {
                check_roles(messages)?;
            }
        }
    } else {
        // Legacy completions: `logprobs` is how many (0-5).
        integer_in(value("logprobs"), "logprobs", 0, 5)?;
    }
    Ok(())
}

/// Only a message's `role`, read without building the rest of the message.
#[derive(serde::Deserialize)]
struct RoleOnly {
    #[serde(default)]
    role: Option<Value>,
}

/// Every message of `messages` (its JSON text) has a supported role. Not an array: left to
/// the parse that needs it.
fn check_roles(messages: &str) -> Result<(), InvalidRequest> {
    // The common case without reading any role into a value: one walk, nothing kept.
    if crate::json_shape::all_roles(messages.as_bytes(), |r| ROLES.contains(&r)) {
        return Ok(());
    }
    // The usual case in one pass: every message reads as `RoleOnly` where it stands, which
    // gives each the role that reading its own text would. Otherwise (some message is not
    // an object, a role is duplicated, not an array...) message by message, as below.
    if let Ok(all) = serde_json::from_str::<Vec<RoleOnly>>(messages) {
        for (i, m) in all.into_iter().enumerate() {
            check_role(i, m.role)?;
        }
        return Ok(());
    }
    let Ok(items) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(messages) else {
        return Ok(());
    };
    for (i, m) in items.iter().enumerate() {
        let role = serde_json::from_str::<RoleOnly>(m.get())
            .ok()
            .and_then(|r| r.role);
        check_role(i, role)?;
    }
    Ok(())
}

/// Message `i`'s role (`None`: missing, or the message did not read as one) is supported.
fn check_role(i: usize, role: Option<Value>) -> Result<(), InvalidRequest> {
    match role {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => Ok(()),
        Some(Value::String(r)) => Err(InvalidRequest::new(
            format!("Invalid value for 'messages[{i}].role': '{}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.", r.chars().take(64).collect::<String>()),
            Some(&format!("messages[{i}].role")),
        )),
        Some(_) => Err(InvalidRequest::new(
            format!("Invalid type for 'messages[{i}].role': expected a string."),
            Some(&format!("messages[{i}].role")),
        )),
        None => Err(InvalidRequest::new(
            format!("Missing required parameter: 'messages[{i}].role'."),
            Some(&format!("messages[{i}].role")),
        )),
    }
}

/// `value` of `key`, when present and not null, must be a number within `min..=max`.
fn number_in(value: Option<Value>, key: &str, min: f64, max: f64) -> Result<(), InvalidRequest> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ => Err(InvalidRequest::new(
                format!("Invalid value for '{key}': {n} is out of range; it must be from {min} to {max}."),
                Some(key),
            )),
        },
        Some(_) => Err(InvalidRequest::new(
            format!("Invalid type for '{key}': expected a number."),
            Some(key),
        )),
    }
}

/// `value` of `key`, when present and not null, must be an integer within `min..=max`.
fn integer_in(value: Option<Value>, key: &str, min: u64, max: u64) -> Result<(), InvalidRequest> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ if max == u64::MAX => Err(InvalidRequest::new(
                format!("Invalid value for '{key}': {n} is less than the minimum of {min}."),
                Some(key),
            )),
            _ => Err(InvalidRequest::new(
                format!("Invalid value for '{key}': {n} is out of range; it must be from {min} to {max}."),
                Some(key),
            )),
        },
        Some(_) => Err(InvalidRequest::new(
            format!("Invalid type for '{key}': expected an integer."),
            Some(key),
        )),
    }
}

/// The `cache_control` markers of a chat body, the extension LiteLLM and others accept: on a
/// content part, on a message (its last part), on a tool (top level or inside `function`).
fn chat_cache(msgs: &[Value], tools: Option<&Value>) -> Result<Vec<CachePoint>, InvalidRequest> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if let Some(Value::Array(parts)) = m.get("content") {
            for (j, p) in parts.iter().enumerate() {
                if let Some(c) = present(p.get("cache_control")) {
                    let at = CacheAt::Part {
                        message: i,
                        part: j,
                    };
                    out.push(CachePoint::parse(
                        at,
                        c,
                        &format!("messages[{i}].content[{j}].cache_control"),
                    )?);
                }
            }
        }
        if let Some(c) = present(m.get("cache_control")) {
            let at = CacheAt::Message(i);
            out.push(CachePoint::parse(
                at,
                c,
                &format!("messages[{i}].cache_control"),
            )?);
        }
    }
    if let Some(Value::Array(list)) = tools {
        for (k, t) in list.iter().enumerate() {
            let c = present(t.get("cache_control"))
                .map(|c| (c, format!("tools[{k}].cache_control")))
                .or_else(|| {
                    present(t.get("function").and_then(|f| f.get("cache_control")))
                        .map(|c| (c, format!("tools[{k}].function.cache_control")))
                });
            if let Some((c, param)) = c {
                out.push(CachePoint::parse(CacheAt::Tool(k), c, &param)?);
            }
        }
    }
    Ok(out)
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|c| !c.is_null())
}

fn message(i: usize, m: &Value) -> Result<Message, InvalidRequest> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => {
            return Err(InvalidRequest::new(
                format!("Invalid value for '{}': '{other}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", at("role")),
                Some(&at("role")),
            ))
        }
        None => {
            return Err(InvalidRequest::new(
                format!("Missing required parameter: '{}'.", at("role")),
                Some(&at("role")),
            ))
        }
    };
    let content = match m.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![Part::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let at = format!("messages[{i}].content[{j}]");
                let p = part(&at, p)?;
                if matches!(p, Part::File { .. }) && role != Role::User {
                    return Err(InvalidRequest::new(
                        format!(
                            "Invalid '{at}.type': 'file' parts are accepted in user messages only."
                        ),
                        Some(&format!("{at}.type")),
                    ));
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid type for '{}': expected a string or an array of content parts.",
                    at("content")
                ),
                Some(&at("content")),
            ))
        }
    };
    if content.is_empty() && role != Role::Assistant {
        return Err(InvalidRequest::new(
            format!("Missing required parameter: '{}'.", at("content")),
            Some(&at("content")),
        ));
    }
    let tool_calls = match m.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) if role == Role::Assistant => calls
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(&format!("messages[{i}].tool_calls[{j}]"), c))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid '{}': only assistant messages carry an array of tool calls.",
                    at("tool_calls")
                ),
                Some(&at("tool_calls")),
            ))
        }
    };
    if role == Role::Assistant && content.is_empty() && tool_calls.is_empty() {
        return Err(InvalidRequest::new(
            format!(
                "Invalid '{}': an assistant message needs content or tool_calls.",
                at("content")
            ),
            Some(&at("content")),
        ));
    }
    let tool_call_id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if role == Role::Tool && tool_call_id.is_none() {
        return Err(InvalidRequest::new(
            format!("Missing required parameter: '{}'.", at("tool_call_id")),
            Some(&at("tool_call_id")),
        ));
    }
    let thinking = match m.get("thinking_blocks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(blocks)) if role == Role::Assistant => blocks
            .iter()
            .enumerate()
            .filter_map(|(j, b)| {
                thinking_block(&format!("messages[{i}].thinking_blocks[{j}]"), b).transpose()
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid '{}': only assistant messages carry an array of thinking blocks.",
                    at("thinking_blocks")
                ),
                Some(&at("thinking_blocks")),
            ))
        }
    };
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id,
        name: m.get("name").and_then(Value::as_str).map(str::to_owned),
        thinking,
    })
}

/// One `thinking_blocks` entry. A `thinking` block without a signature (what a client that
/// assembled a stream's `reasoning_content` may send) cannot be verified by anyone: it is
/// left out (None), as the plain `reasoning_content` is.
fn thinking_block(at: &str, b: &Value) -> Result<Option<ThinkingBlock>, InvalidRequest> {
    let field = |k: &str| b.get(k).and_then(Value::as_str);
    let bad = |what: &str| InvalidRequest::new(format!("Invalid '{at}': {what}."), Some(at));
    match field("type") {
        Some("thinking") => {
            let Some(signature) = field("signature").filter(|s| !s.is_empty()) else {
                return Ok(None);
            };
            Ok(Some(ThinkingBlock::Thinking {
                thinking: field("thinking").unwrap_or_default().to_owned(),
                signature: signature.to_owned(),
            }))
        }
        Some("redacted_thinking") => match field("data") {
            Some(data) if !data.is_empty() => Ok(Some(ThinkingBlock::Redacted {
                data: data.to_owned(),
            })),
            _ => Err(bad("a redacted_thinking block needs its 'data' string")),
        },
        _ => Err(bad(
            "expected {\"type\": \"thinking\", \"thinking\": ..., \"signature\": ...} or {\"type\": \"redacted_thinking\", \"data\": ...}",
        )),
    }
}

fn part(at: &str, p: &Value) -> Result<Part, InvalidRequest> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text") {
            Some(Value::String(t)) => Ok(Part::Text(t.clone())),
            _ => Err(InvalidRequest::new(
                format!("Missing required parameter: '{at}.text'."),
                Some(&format!("{at}.text")),
            )),
        },
        Some("image_url") => {
            let image = p.get("image_url");
            let url = image
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    InvalidRequest::new(
                        format!("Missing required parameter: '{at}.image_url.url'."),
                        Some(&format!("{at}.image_url.url")),
                    )
                })?;
            Ok(Part::Image {
                url: url.to_owned(),
                detail: image
                    .and_then(|i| i.get("detail"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        }
        Some("file") => file_part(at, p),
        Some(other) => Err(InvalidRequest::new(
            format!("Invalid '{at}.type': content parts of type '{other}' cannot be translated for this provider (supported: 'text', 'image_url', 'file')."),
            Some(&format!("{at}.type")),
        )),
        None => Err(InvalidRequest::new(
            format!("Missing required parameter: '{at}.type'."),
            Some(&format!("{at}.type")),
        )),
    }
}

/// An OpenAI `file` part: `{"type":"file","file":{"file_data":"data:application/pdf;base64,…",
/// "filename":"…"}}`. A `file_id` names a file uploaded to OpenAI, which no other provider can
/// resolve: refused by name.
fn file_part(at: &str, p: &Value) -> Result<Part, InvalidRequest> {
    let f = p.get("file");
    let name = f
        .and_then(|f| f.get("filename"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match f.and_then(|f| f.get("file_data")).and_then(Value::as_str) {
        Some(url) => {
            let Some((mime, data)) = data_url(url) else {
                return Err(InvalidRequest::new(
                    format!("Invalid '{at}.file.file_data': expected a data:<type>;base64,<data> URL."),
                    Some(&format!("{at}.file.file_data")),
                ));
            };
            Ok(Part::File {
                data: data.to_owned(),
                mime: mime.to_owned(),
                name,
            })
        }
        None if f.and_then(|f| f.get("file_id")).is_some() => Err(InvalidRequest::new(
            format!("Invalid '{at}.file.file_id': file ids refer to files uploaded to OpenAI, which this model's provider cannot read; send the file inline as 'file_data' (data:application/pdf;base64,...)."),
            Some(&format!("{at}.file.file_id")),
        )),
        None => Err(InvalidRequest::new(
            format!("Missing required parameter: '{at}.file.file_data'."),
            Some(&format!("{at}.file.file_data")),
        )),
    }
}

fn tool_call(at: &str, c: &Value) -> Result<ToolCall, InvalidRequest> {
    let f = c.get("function");
    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
    let (Some(id), Some(name)) = (c.get("id").and_then(Value::as_str), name) else {
        return Err(InvalidRequest::new(
            format!("Invalid '{at}': a tool call needs 'id' and 'function.name'."),
            Some(at),
        ));
    };
    let arguments = match f.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments,
    })
}

fn tools(v: Option<&Value>) -> Result<Vec<Tool>, InvalidRequest> {
    let Some(Value::Array(list)) = v else {
        return match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(InvalidRequest::new(
                "Invalid 'tools': expected an array.",
                Some("tools"),
            )),
        };
    };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("tools[{i}]");
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {}
                other => {
                    return Err(InvalidRequest::new(
                        format!(
                        "Invalid '{at}.type': '{}' tools cannot be translated (only 'function').",
                        other.unwrap_or("null")
                    ),
                        Some(&format!("{at}.type")),
                    ))
                }
            }
            let f = t.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    InvalidRequest::new(
                        format!("Missing required parameter: '{at}.function.name'."),
                        Some(&format!("{at}.function.name")),
                    )
                })?;
            Ok(Tool {
                name: name.to_owned(),
                description: f
                    .and_then(|f| f.get("description"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: f
                    .and_then(|f| f.get("parameters"))
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                strict: f.and_then(|f| f.get("strict")).and_then(Value::as_bool),
            })
        })
        .collect()
}

fn tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, InvalidRequest> {
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(InvalidRequest::new(
                    format!("Invalid value for 'tool_choice': '{other}'. Supported values are: 'none', 'auto' and 'required', or a named function."),
                    Some("tool_choice"),
                ))
            }
        }),
        Some(o) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_owned())),
            None => {
                return Err(InvalidRequest::new(
                    "Invalid 'tool_choice': expected {\"type\":\"function\",\"function\":{\"name\":...}}.",
                    Some("tool_choice"),
                ))
            }
        },
    })
}

fn response_format(v: Option<&Value>) -> Result<Option<ResponseFormat>, InvalidRequest> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    Ok(Some(match v.get("type").and_then(Value::as_str) {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => {
            let js = v.get("json_schema");
            let schema = js.and_then(|j| j.get("schema")).filter(|s| s.is_object()).cloned().ok_or_else(|| {
                InvalidRequest::new(
                    "Missing required parameter: 'response_format.json_schema.schema'.",
                    Some("response_format.json_schema.schema"),
                )
            })?;
            ResponseFormat::JsonSchema {
                name: js
                    .and_then(|j| j.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema,
                strict: js.and_then(|j| j.get("strict")).and_then(Value::as_bool),
            }
        }
        other => {
            return Err(InvalidRequest::new(
                format!("Invalid value for 'response_format.type': '{}'. Supported values are: 'text', 'json_object' and 'json_schema'.", other.unwrap_or("null")),
                Some("response_format.type"),
            ))
        }
    }))
}

/// `reasoning_effort`: one of OpenAI's levels, else a 400 naming it. `none` (OpenAI's "do not
/// reason", gpt-5.1 and later) asks for nothing, like leaving it out.
fn reasoning_effort(v: Option<&Value>) -> Result<Option<Reasoning>, InvalidRequest> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "none" => Ok(None),
        Some(v) => match v.as_str().and_then(Effort::parse) {
            Some(effort) => Ok(Some(Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            })),
            None => Err(InvalidRequest::new(
                match v.as_str() {
                    Some(s) => format!("Invalid value for 'reasoning_effort': '{}'. Supported values are: 'none', 'minimal', 'low', 'medium' and 'high'.", s.chars().take(64).collect::<String>()),
                    None => "Invalid type for 'reasoning_effort': expected a string.".to_owned(),
                },
                Some("reasoning_effort"),
            )),
        },
    }
}

/// Reads optional field `key` with `read`; null counts as absent, a wrong type is a 400
/// naming the field and what was `expected`.
fn opt<T>(
    body: &Map<String, Value>,
    key: &str,
    expected: &str,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, InvalidRequest> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v).map(Some).ok_or_else(|| {
            InvalidRequest::new(
                format!("Invalid type for '{key}': expected {expected}."),
                Some(key),
            )
        }),
    }
}

fn opt_f64(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, InvalidRequest> {
    opt(body, key, "a number", Value::as_f64)
}

fn opt_u64(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, InvalidRequest> {
    opt(body, key, "a non-negative integer", Value::as_u64)
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, InvalidRequest> {
    opt(body, key, "a boolean", Value::as_bool)
}

fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, InvalidRequest> {
    opt(body, key, "a string", |v| v.as_str().map(str::to_owned))
}

/// Splits a `data:<mime>;base64,<data>` URL into its media type and base64 payload.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, data))
}

#[cfg(test)]
mod tests {
    /// The one-pass reading of the roles answers as reading message by message does.
    #[test]
    fn roles_in_one_pass_answer_as_message_by_message() {
        fn by_message(messages: &str) -> Result<(), super::InvalidRequest> {
            let Ok(items) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(messages)
            else {
                return Ok(());
            };
            for (i, m) in items.iter().enumerate() {
                let role = serde_json::from_str::<super::RoleOnly>(m.get())
                    .ok()
                    .and_then(|r| r.role);
                super::check_role(i, role)?;
            }
            Ok(())
        }
        let deep = format!("[{}{}]", "[".repeat(127), "]".repeat(127));
        for messages in [
            r#"[]"#,
            r#"[{"role":"user","content":"hi \" ]"}]"#,
            r#"[{"content":"x","role":"assistant"},{"role":"tool"}]"#,
            r#"[{"role":"user"},{"role":"robot"}]"#,
            r#"[{"role":"user"},{"role":7}]"#,
            r#"[{"role":null}]"#,
            r#"[{"content":"no role"}]"#,
            r#"[{"role":"user","role":"system"}]"#,
            r#"[{"role":"user"},"text",{"role":"bad"}]"#,
            r#"[{"role":"bad"},"text"]"#,
            r#"[["user"]]"#,
            r#"[["user","extra"]]"#,
            r#"[1, {"role":"user"}]"#,
            r#"{"role":"user"}"#,
            r#"[{"role":"user"}"#,
            r#"[{"role":"\ud800"}]"#,
            r#"[{"role":"user","n":1e999}]"#,
            deep.as_str(),
        ] {
            let (one, each) = (super::check_roles(messages), by_message(messages));
            assert_eq!(
                one.as_ref().err().map(|e| (&e.message, &e.param)),
                each.as_ref().err().map(|e| (&e.message, &e.param)),
                "{messages}"
            );
        }
    }

    use super::*;
    use crate::openai::parse_request;

    fn chat(body: &str) -> Result<ChatRequest, InvalidRequest> {
        ChatRequest::from_parsed(
            &parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap(),
        )
    }

    /// Issue 20.6: out-of-range sampling and length values and unknown roles are refused as
    /// OpenAI refuses them, naming the parameter; in-range values pass.
    #[test]
    fn validate_refuses_what_openai_refuses() {
        let check = |endpoint, extra: &str| {
            let body = match endpoint {
                Endpoint::Completions => format!(r#"{{"model":"m","prompt":"x"{extra}}}"#),
                _ => format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
                ),
            };
            validate(&parse_request(endpoint, body.as_bytes()).unwrap())
                .err()
                .map(|e| e.param.unwrap_or_default())
        };
        let chat = Endpoint::ChatCompletions;
        for (extra, param) in [
            (r#","temperature":5"#, "temperature"),
            (r#","temperature":-0.1"#, "temperature"),
            (r#","temperature":"hot""#, "temperature"),
            (r#","top_p":1.5"#, "top_p"),
            (r#","max_tokens":0"#, "max_tokens"),
            (r#","max_tokens":-3"#, "max_tokens"),
            (r#","max_completion_tokens":0"#, "max_completion_tokens"),
            (r#","n":0"#, "n"),
            (r#","n":129"#, "n"),
            (r#","presence_penalty":2.5"#, "presence_penalty"),
            (r#","frequency_penalty":-3"#, "frequency_penalty"),
            (r#","logprobs":1"#, "logprobs"),
            (r#","top_logprobs":3"#, "logprobs"),
            (r#","logprobs":true,"top_logprobs":21"#, "top_logprobs"),
        ] {
            assert_eq!(check(chat, extra).as_deref(), Some(param), "{extra}");
        }
        let wizard = r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"wizard","content":"b"}]}"#;
        let e = validate(&parse_request(chat, wizard.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        assert!(e.message.contains("'wizard'"), "{}", e.message);

        assert_eq!(
            check(Endpoint::Completions, r#","logprobs":6"#).as_deref(),
            Some("logprobs")
        );
        for extra in [
            "",
            r#","temperature":0,"top_p":1,"max_tokens":1,"n":1"#,
            r#","temperature":2,"presence_penalty":-2,"frequency_penalty":2"#,
            r#","logprobs":true,"top_logprobs":20,"max_completion_tokens":5"#,
            r#","temperature":null,"max_tokens":null"#,
        ] {
            assert_eq!(check(chat, extra), None, "{extra}");
        }
        assert_eq!(check(Endpoint::Completions, r#","logprobs":5"#), None);
        let roles = r#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"developer","content":"a"},{"role":"user","content":"a"},{"role":"assistant","content":"a"},{"role":"function","name":"f","content":"a"}]}"#;
        assert!(validate(&parse_request(chat, roles.as_bytes()).unwrap()).is_ok());
    }

    #[test]
    fn parses_every_typed_field() {
        let r = chat(r#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "max_tokens":5,"max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"stop":"END","seed":3,"user":"u",
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false,
            "response_format":{"type":"json_object"},"logit_bias":{"1":2},"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.stop, vec!["END"]);
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(r.messages[2].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.other_names().collect::<Vec<_>>(), vec!["logit_bias"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.system_text().as_deref(), Some("be brief"));
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
    }

    #[test]
    fn bad_shapes_name_the_parameter() {
        for (body, param) in [
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
                "tool_choice",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"g"}}}"#,
                "tool_choice",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#,
                "response_format.type",
            ),
        ] {
            assert_eq!(
                chat(body).unwrap_err().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
    }

    #[test]
    fn reasoning_effort_is_typed_and_validated() {
        let with = |effort: &str| {
            chat(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"reasoning_effort":{effort}}}"#
            ))
        };
        for (v, e) in [
            ("minimal", Effort::Minimal),
            ("low", Effort::Low),
            ("medium", Effort::Medium),
            ("high", Effort::High),
        ] {
            let r = with(&format!("\"{v}\"")).unwrap();
            assert_eq!(
                r.reasoning,
                Some(Reasoning {
                    effort: Some(e),
                    budget_tokens: None
                })
            );
            assert_eq!(r.other_names().count(), 0, "not left in other");
            assert_eq!(e.as_str(), v);
        }
        assert_eq!(with("\"none\"").unwrap().reasoning, None);
        assert_eq!(with("null").unwrap().reasoning, None);
        for bad in ["\"extreme\"", "3", "{}"] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("reasoning_effort"), "{bad}");
        }
        assert!(with("\"extreme\"")
            .unwrap_err()
            .message
            .contains("'extreme'"));
    }

    #[test]
    fn effort_and_budget_map_both_ways() {
        let budget = |effort| {
            Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            }
            .budget()
        };
        assert_eq!(budget(Effort::Minimal), 1024);
        assert_eq!(budget(Effort::Low), 1024);
        assert_eq!(budget(Effort::Medium), 4096);
        assert_eq!(budget(Effort::High), 16384);
        for e in [Effort::Low, Effort::Medium, Effort::High] {
            assert_eq!(Effort::from_budget(budget(e)), e, "{e:?} round-trips");
        }
        for (b, e) in [
            (0, Effort::Low),
            (2048, Effort::Low),
            (2049, Effort::Medium),
            (8192, Effort::Medium),
            (8193, Effort::High),
            (u64::MAX, Effort::High),
        ] {
            let r = Reasoning {
                effort: None,
                budget_tokens: Some(b),
            };
            assert_eq!(r.effort(), e, "{b}");
            assert_eq!(r.budget(), b, "an explicit budget is kept");
        }
    }

    #[test]
    fn legacy_prompt_becomes_a_user_message() {
        let p = parse_request(
            Endpoint::Completions,
            br#"{"model":"m","prompt":["Say hi"],"echo":true}"#,
        )
        .unwrap();
        let r = ChatRequest::from_parsed(&p).unwrap();
        assert_eq!(r.front, FrontDoor::Completions);
        assert_eq!(r.messages[0].text(), "Say hi");
        assert_eq!(r.max_tokens, Some(16));
        assert_eq!(r.other_names().collect::<Vec<_>>(), vec!["echo"]);
        let p = parse_request(Endpoint::Completions, br#"{"model":"m","prompt":[1,2,3]}"#).unwrap();
        assert_eq!(
            ChatRequest::from_parsed(&p).unwrap_err().param.as_deref(),
            Some("prompt")
        );
    }

    /// Issue 15.5: an OpenAI `file` part with inline `file_data` decodes to `Part::File`; a
    /// `file_id`, a non-data URL, and a file outside a user message are refused by name.
    #[test]
    fn file_parts_decode_and_file_ids_are_refused() {
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},
            {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"x.pdf"}}]}]}"#)
        .unwrap();
        assert_eq!(
            r.messages[0].content[1],
            Part::File {
                data: "JVBERi0=".into(),
                mime: "application/pdf".into(),
                name: Some("x.pdf".into()),
            }
        );
        for (body, param) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc"}}]}]}"#,
                "messages[0].content[0].file.file_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"JVBERi0="}}]}]}"#,
                "messages[0].content[0].file.file_data",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file"}]}]}"#,
                "messages[0].content[0].file.file_data",
            ),
            (
                r#"{"model":"m","messages":[{"role":"system","content":[{"type":"file","file":{"file_data":"data:application/pdf;base64,AA"}}]},{"role":"user","content":"x"}]}"#,
                "messages[0].content[0].type",
            ),
        ] {
            assert_eq!(
                chat(body).unwrap_err().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
    }
}
