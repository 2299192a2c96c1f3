//! Decodes an Anthropic Messages request (`/v1/messages`) into the neutral [`ChatRequest`],
//! for providers that do not speak Messages themselves. (Claude hosts get the caller's body
//! nearly unchanged instead: `crate::providers::messages_native`.)
//!
//! Every field is mapped to a typed slot, kept in [`ChatRequest::other`] for the provider's
//! translator to map or name as dropped (`top_k`; `thinking` becomes
//! [`ChatRequest::reasoning`] with its budget, `{"type":"disabled"}` none; `cache_control`
//! becomes [`ChatRequest::cache`]), named in [`ChatRequest::dropped`] when the neutral model
//! cannot carry it to a non-Claude host (`service_tier`), or
//! refused with a 400 that names it (URL documents, server tools).
//! Base64 `document` blocks become [`Part::File`]; text-source documents become text.
//! Signed `thinking` and `redacted_thinking` blocks of assistant turns become
//! [`Message::thinking`] (Claude on Converse gets them back; for other hosts
//! `translate::prepare_chat` names `thinking` as dropped); unsigned ones are left out and
//! named.

use serde_json::{Map, Value};

use crate::chat::request::{CacheAt, CachePoint, Reasoning};
use crate::chat::{ChatRequest, Message, Part, Role, ThinkingBlock, Tool, ToolCall, ToolChoice};
use crate::front::FrontDoor;
use crate::openai::{InvalidRequest, ParsedRequest};

/// Top-level fields with a typed slot or consumed by routing.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
];

/// Top-level fields that only a Claude host understands: named as dropped elsewhere.
const CLAUDE_ONLY: &[&str] = &[
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

/// The Messages name of a neutral (OpenAI-named) parameter a provider dropped, where the two
/// differ.
pub fn client_name(neutral: &str) -> Option<&'static str> {
    Some(match neutral {
        "user" => "metadata.user_id",
        "stop" => "stop_sequences",
        "parallel_tool_calls" => "tool_choice.disable_parallel_tool_use",
        "tools[].function.strict" => "tools[].strict",
        "reasoning_effort" => "thinking",
        _ => return None,
    })
}

/// Checks what every provider needs before routing (Anthropic's own 400s): `max_tokens` a
/// positive integer (not on count_tokens), `messages` a non-empty array, sampling in range.
/// Reads single fields from the body's bytes; builds no tree.
pub fn validate(p: &ParsedRequest, count_tokens: bool) -> Result<(), InvalidRequest> {
    let value = |key: &str| -> Option<Value> { serde_json::from_str(p.field(key)?).ok() };
    if !count_tokens {
        match value("max_tokens") {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {}
            None | Some(Value::Null) => {
                return Err(InvalidRequest::new(
                    "max_tokens: Field required",
                    Some("max_tokens"),
                ))
            }
            Some(_) => {
                return Err(InvalidRequest::new(
                    "max_tokens: Input should be a positive integer",
                    Some("max_tokens"),
                ))
            }
        }
    }
    match value("messages") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        Some(Value::Array(_)) => {
            return Err(InvalidRequest::new(
                "messages: at least one message is required",
                Some("messages"),
            ))
        }
        _ => {
            return Err(InvalidRequest::new(
                "messages: Input should be a valid list",
                Some("messages"),
            ))
        }
    }
    for (key, max) in [("temperature", 1.0), ("top_p", 1.0)] {
        match value(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|x| (0.0..=max).contains(&x)) => {}
            Some(_) => {
                return Err(InvalidRequest::new(
                    format!("{key}: Input should be a number between 0 and {max}"),
                    Some(key),
                ))
            }
        }
    }
    Ok(())
}

fn bad(message: impl Into<String>, param: impl std::fmt::Display) -> InvalidRequest {
    InvalidRequest::new(message, Some(&param.to_string()))
}

/// Where in the body a problem is, formatted only when a request is refused (no string is
/// built per block on the way through).
#[derive(Debug, Clone, Copy)]
enum At<'a> {
    System(usize),
    Block(usize, usize),
    Tool(usize),
    Named(&'a str),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::System(j) => write!(f, "system[{j}]"),
            At::Block(i, j) => write!(f, "messages[{i}].content[{j}]"),
            At::Tool(k) => write!(f, "tools[{k}]"),
            At::Named(name) => f.write_str(name),
        }
    }
}

/// The Messages body as a neutral chat request.
pub fn decode(body: &Map<String, Value>) -> Result<ChatRequest, InvalidRequest> {
    let mut dropped: Vec<String> = Vec::new();
    let mut drop = |name: &str| {
        if !dropped.iter().any(|d| d == name) {
            dropped.push(name.to_owned());
        }
    };
    let mut messages = Vec::new();
    let mut cache = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(plain(Role::System, vec![Part::Text(s.clone())])),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let where_ = At::System(j);
                if let Some(c) = b.get("cache_control").filter(|c| !c.is_null()) {
                    // The system message is the first neutral message.
                    let at = CacheAt::Part {
                        message: 0,
                        part: j,
                    };
                    cache.push(cache_point(at, c, &where_)?);
                }
                match block_type(b, &where_)? {
                    "text" => parts.push(Part::Text(text_of(b, &where_)?)),
                    other => {
                        return Err(bad(
                            format!("{where_}.type: system blocks are text, not `{other}`"),
                            where_,
                        ))
                    }
                }
            }
            messages.push(plain(Role::System, parts));
        }
        Some(_) => {
            return Err(bad(
                "system: Input should be a string or a list of text blocks",
                "system",
            ))
        }
    }
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: Input should be a valid list", "messages"))?;
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(bad(
                    format!("messages[{i}].role: Input should be 'user' or 'assistant'"),
                    format!("messages[{i}].role"),
                ))
            }
        };
        let blocks: &[Value] = match m.get("content") {
            Some(Value::String(s)) => {
                // The common case, without building a text block to decode.
                messages.push(plain(role, vec![Part::Text(s.clone())]));
                continue;
            }
            Some(Value::Array(a)) => a,
            _ => {
                return Err(bad(
                    format!("messages[{i}].content: Input should be a string or a list of blocks"),
                    format!("messages[{i}].content"),
                ))
            }
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        let mut thinking = Vec::new();
        // Markers on this message's parts (`Some(part)`) or tool calls (`None`), placed once
        // the message's index is known (after its tool results).
        let mut pending: Vec<(Option<usize>, CachePoint)> = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let where_ = At::Block(i, j);
            let mut marker = b.get("cache_control").filter(|c| !c.is_null());
            match (role, block_type(b, &where_)?) {
                (_, "text") => parts.push(Part::Text(text_of(b, &where_)?)),
                (Role::User, "image") => parts.push(image(b, &where_)?),
                (Role::User, "document") => {
                    if b.get("citations").is_some() {
                        drop("document.citations");
                    }
                    if b.get("context").is_some() {
                        drop("document.context");
                    }
                    parts.push(document(b, &where_)?)
                }
                (Role::User, "tool_result") => {
                    if let Some(c) = marker.take() {
                        // Tool results become messages of their own, before this one.
                        let message = messages.len() + results.len();
                        let at = CacheAt::Message(message);
                        cache.push(cache_point(at, c, &where_)?);
                    }
                    let id = str_field(b, "tool_use_id", &where_)?;
                    let (text, images) = tool_result_text(b.get("content"), &where_)?;
                    if images {
                        drop("tool_result.content.image");
                    }
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        drop("tool_result.is_error");
                    }
                    results.push(Message {
                        role: Role::Tool,
                        content: vec![Part::Text(text)],
                        tool_calls: Vec::new(),
                        tool_call_id: Some(id),
                        name: None,
                        thinking: Vec::new(),
                    });
                }
                (Role::Assistant, "tool_use") => {
                    if let Some(c) = marker {
                        // Tool calls follow the text parts: the marker covers the message.
                        pending.push((None, cache_point(CacheAt::Message(0), c, &where_)?));
                    }
                    calls.push(ToolCall {
                        id: str_field(b, "id", &where_)?,
                        name: str_field(b, "name", &where_)?,
                        arguments: serde_json::to_string(b.get("input").unwrap_or(&Value::Null))
                            .unwrap_or_else(|_| "{}".into()),
                    });
                    marker = None;
                }
                // Claude's signed blocks go on to Claude hosts (Converse); unsigned ones (what
                // the gateway wrote for another provider's reasoning) verify nowhere.
                (Role::Assistant, "thinking") => {
                    let signature = b.get("signature").and_then(Value::as_str).unwrap_or("");
                    if signature.is_empty() {
                        drop("thinking");
                    } else {
                        thinking.push(ThinkingBlock::Thinking {
                            thinking: b
                                .get("thinking")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            signature: signature.to_owned(),
                        });
                    }
                }
                (Role::Assistant, "redacted_thinking") => {
                    if let Some(data) = b.get("data").and_then(Value::as_str) {
                        thinking.push(ThinkingBlock::Redacted {
                            data: data.to_owned(),
                        });
                    }
                }
                (_, kind @ ("search_result" | "container_upload")) => {
                    return Err(bad(
                        format!("{where_}: `{kind}` blocks are forwarded only to Claude hosts (Anthropic, Bedrock, Vertex); this model's provider cannot take them"),
                        where_,
                    ))
                }
                (_, kind) => {
                    return Err(bad(
                        format!("{where_}.type: `{kind}` blocks are not accepted in a {} message on this model's provider", role_name(role)),
                        where_,
                    ))
                }
            }
            if let (Some(c), Some(part)) = (marker, parts.len().checked_sub(1)) {
                pending.push((Some(part), cache_point(CacheAt::Message(0), c, &where_)?));
            }
        }
        // Tool results answer the previous assistant turn: they come first, as tool messages.
        messages.extend(results);
        let message = messages.len();
        cache.extend(pending.into_iter().map(|(part, mut point)| {
            point.at = match part {
                Some(part) => CacheAt::Part { message, part },
                None => CacheAt::Message(message),
            };
            point
        }));
        if !parts.is_empty() || !calls.is_empty() {
            messages.push(Message {
                role,
                content: parts,
                tool_calls: calls,
                tool_call_id: None,
                name: None,
                thinking,
            });
        }
    }

    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            bad(
                "max_tokens: Input should be a positive integer",
                "max_tokens",
            )
        })?),
    };
    let stop = match body.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str().map(str::to_owned).ok_or_else(|| {
                    bad(
                        "stop_sequences: Input should be a list of strings",
                        "stop_sequences",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(bad(
                "stop_sequences: Input should be a list of strings",
                "stop_sequences",
            ))
        }
    };
    let user = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => m.get("user_id").and_then(Value::as_str).map(str::to_owned),
        Some(_) => return Err(bad("metadata: Input should be an object", "metadata")),
    };
    let mut tools = Vec::new();
    if let Some(list) = body.get("tools").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| bad("tools: Input should be a list", "tools"))?;
        for (k, t) in list.iter().enumerate() {
            let where_ = At::Tool(k);
            if let Some(c) = t.get("cache_control").filter(|c| !c.is_null()) {
                cache.push(cache_point(CacheAt::Tool(k), c, &where_)?);
            }
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(kind) => {
                    return Err(bad(
                        format!("{where_}.type: the server tool `{kind}` runs only on Claude hosts; this model's provider cannot take it"),
                        where_,
                    ))
                }
            }
            tools.push(Tool {
                name: str_field(t, "name", &where_)?,
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: t
                    .get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                strict: t.get("strict").and_then(Value::as_bool),
            });
        }
    }
    let (tool_choice, parallel_tool_calls) = match body.get("tool_choice") {
        None | Some(Value::Null) => (None, None),
        Some(c) => {
            let parallel = c
                .get("disable_parallel_tool_use")
                .and_then(Value::as_bool)
                .map(|d| !d);
            let choice = match c.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => {
                    let name = str_field(c, "name", &At::Named("tool_choice"))?;
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(bad(
                            format!("tool_choice: no tool named '{name}' in 'tools'"),
                            "tool_choice",
                        ));
                    }
                    ToolChoice::Named(name)
                }
                _ => {
                    return Err(bad(
                        "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
                        "tool_choice",
                    ))
                }
            };
            (Some(choice), parallel)
        }
    };
    let number = |key: &str| -> Result<Option<f64>, InvalidRequest> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("{key}: Input should be a number"), key)),
        }
    };
    let reasoning = thinking(body.get("thinking"))?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut other = Vec::new();
    for (k, v) in body {
        if KNOWN.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        if CLAUDE_ONLY.contains(&k.as_str()) {
            drop(k);
        } else {
            other.push((k.clone(), v.clone()));
        }
    }
    Ok(ChatRequest {
        messages,
        max_tokens,
        temperature: number("temperature")?,
        top_p: number("top_p")?,
        top_k: match body.get("top_k") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| bad("top_k: Input should be a non-negative integer", "top_k"))?,
            ),
        },
        stop,
        seed: None,
        user,
        n: None,
        presence_penalty: None,
        frequency_penalty: None,
        response_format: None,
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning,
        stream,
        include_usage: stream,
        front: FrontDoor::Messages,
        other,
        dropped,
        cache,
    })
}

/// A block's or tool's `cache_control` as a breakpoint, refused in Anthropic's words.
fn cache_point(at: CacheAt, c: &Value, where_: &At) -> Result<CachePoint, InvalidRequest> {
    CachePoint::parse(at, c, &format!("{where_}.cache_control"))
}

/// `thinking`: `{"type":"enabled","budget_tokens":N}` → a budget; `{"type":"disabled"}` →
/// none. Anthropic's own checks (budget ≥ 1024, < `max_tokens`) are left to the Claude hosts'
/// translator, which raises `max_tokens` instead of refusing.
fn thinking(v: Option<&Value>) -> Result<Option<Reasoning>, InvalidRequest> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        // An integral float (`1.0e3`) is an integer to Anthropic's validation too.
        Some("enabled") => match v.get("budget_tokens").and_then(|b| {
            b.as_u64().or_else(|| {
                b.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                    .map(|f| f as u64)
            })
        }) {
            Some(b) => Ok(Some(Reasoning {
                effort: None,
                budget_tokens: Some(b),
            })),
            None => Err(bad(
                "thinking.enabled.budget_tokens: Field required (a non-negative integer)",
                "thinking.budget_tokens",
            )),
        },
        _ => Err(bad(
            "thinking.type: Input should be 'enabled' or 'disabled'",
            "thinking.type",
        )),
    }
}

fn plain(role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
        thinking: Vec::new(),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Assistant => "assistant",
        _ => "user",
    }
}

fn block_type<'a>(b: &'a Value, where_: &At) -> Result<&'a str, InvalidRequest> {
    b.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{where_}.type: Field required"), where_))
}

fn str_field(b: &Value, key: &str, where_: &At) -> Result<String, InvalidRequest> {
    b.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{where_}.{key}: Field required"), where_))
}

fn text_of(b: &Value, where_: &At) -> Result<String, InvalidRequest> {
    str_field(b, "text", where_)
}

/// An image block as the neutral image part: base64 sources as a data URL, URL sources as is.
fn image(b: &Value, where_: &At) -> Result<Part, InvalidRequest> {
    let source = b
        .get("source")
        .ok_or_else(|| bad(format!("{where_}.source: Field required"), where_))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = str_field(source, "media_type", where_)?;
            let data = source.get("data").and_then(Value::as_str).ok_or_else(|| {
                bad(format!("{where_}.source.data: Field required"), where_)
            })?;
            let mut url = String::with_capacity(media.len() + data.len() + 13);
            url.push_str("data:");
            url.push_str(&media);
            url.push_str(";base64,");
            url.push_str(data);
            url
        }
        Some("url") => str_field(source, "url", where_)?,
        _ => {
            return Err(bad(
                format!("{where_}.source.type: image sources are 'base64' or 'url' on this model's provider"),
                where_,
            ))
        }
    };
    Ok(Part::Image { url, detail: None })
}

/// A document block as the neutral file part (base64 source) or as its text (text source).
/// URL and file-id sources would need the gateway to fetch or resolve them: refused by name.
fn document(b: &Value, where_: &At) -> Result<Part, InvalidRequest> {
    let source = b
        .get("source")
        .ok_or_else(|| bad(format!("{where_}.source: Field required"), where_))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mime = str_field(source, "media_type", where_)?;
            let data = source.get("data").and_then(Value::as_str).ok_or_else(|| {
                bad(format!("{where_}.source.data: Field required"), where_)
            })?;
            Ok(Part::File {
                data: data.to_owned(),
                mime,
                name: b.get("title").and_then(Value::as_str).map(str::to_owned),
            })
        }
        Some("text") => {
            let data = source.get("data").and_then(Value::as_str).ok_or_else(|| {
                bad(format!("{where_}.source.data: Field required"), where_)
            })?;
            Ok(Part::Text(data.to_owned()))
        }
        Some(kind) => Err(bad(
            format!("{where_}.source.type: `{kind}` document sources are forwarded only to Claude hosts (Anthropic, Bedrock, Vertex); on this model's provider send the document as a base64 or text source"),
            where_,
        )),
        None => Err(bad(format!("{where_}.source.type: Field required"), where_)),
    }
}

/// A tool result's content as text (a string, or text blocks joined by newlines); whether
/// it also held images, which the neutral tool message cannot carry.
fn tool_result_text(
    content: Option<&Value>,
    where_: &At,
) -> Result<(String, bool), InvalidRequest> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), false)),
        Some(Value::String(s)) => Ok((s.clone(), false)),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            let mut images = false;
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default());
                    }
                    Some("image") => images = true,
                    _ => {
                        return Err(bad(
                            format!("{where_}.content: tool results hold text and image blocks"),
                            where_,
                        ))
                    }
                }
            }
            Ok((text, images))
        }
        Some(_) => Err(bad(
            format!("{where_}.content: Input should be a string or a list of blocks"),
            where_,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::request::Reasoning;

    fn decode_str(s: &str) -> Result<ChatRequest, InvalidRequest> {
        decode(
            serde_json::from_str::<Value>(s)
                .unwrap()
                .as_object()
                .unwrap(),
        )
    }

    #[test]
    fn decodes_a_tool_round_trip_with_system_blocks() {
        let r = decode_str(
            r#"{"model":"m","max_tokens":100,"system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],
            "messages":[
              {"role":"user","content":"Weather in Paris and Rome?"},
              {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"Checking."},
                 {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
                 {"type":"tool_use","id":"toolu_2","name":"get_weather","input":{"city":"Rome"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},
                 {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"21C"}]},
                 {"type":"text","text":"Thanks"}]}],
            "tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":false},
            "stop_sequences":["END"],"top_k":5,"metadata":{"user_id":"u-1"},"service_tier":"auto","stream":true}"#,
        )
        .unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(r.messages[2].tool_calls.len(), 2);
        assert_eq!(r.messages[2].tool_calls[1].arguments, r#"{"city":"Rome"}"#);
        assert_eq!(r.messages[4].tool_call_id.as_deref(), Some("toolu_2"));
        assert_eq!(r.messages[4].text(), "21C");
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        assert_eq!(r.parallel_tool_calls, Some(true));
        assert_eq!(r.stop, ["END"]);
        assert_eq!(r.user.as_deref(), Some("u-1"));
        assert_eq!(r.top_k, Some(5));
        assert_eq!(r.other_names().count(), 0);
        // `cache_control` is carried as a breakpoint now, not dropped.
        assert_eq!(r.dropped, ["service_tier"]);
        assert_eq!(
            r.messages[2].thinking,
            [ThinkingBlock::Thinking {
                thinking: "t".into(),
                signature: "s".into()
            }]
        );
        assert_eq!(r.cache.len(), 1);
        assert_eq!(client_name("user"), Some("metadata.user_id"));
        assert_eq!(client_name("seed"), None);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.front, FrontDoor::Messages);
    }

    #[test]
    fn images_become_data_urls_and_documents_file_parts() {
        let r = decode_str(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[
              {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
              {"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.messages[0].content,
            [
                Part::Image {
                    url: "data:image/png;base64,AAAA".into(),
                    detail: None
                },
                Part::Image {
                    url: "https://x/y.png".into(),
                    detail: None
                },
            ]
        );
        // Issue 15.5: base64 documents become file parts, text documents text; URL and
        // file-id sources and documents outside user messages are refused by name.
        let r = decode_str(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[
              {"type":"document","title":"Q3","source":{"type":"base64","media_type":"application/pdf","data":"AAAA"}},
              {"type":"document","source":{"type":"text","media_type":"text/plain","data":"hello"}}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.messages[0].content,
            [
                Part::File {
                    data: "AAAA".into(),
                    mime: "application/pdf".into(),
                    name: Some("Q3".into()),
                },
                Part::Text("hello".into()),
            ]
        );
        for body in [
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[
              {"type":"document","source":{"type":"url","url":"https://x/y.pdf"}}]}]}"#,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[
              {"type":"document","source":{"type":"file","file_id":"file_1"}}]}]}"#,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[
              {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"AAAA"}}]}]}"#,
        ] {
            let e = decode_str(body).unwrap_err();
            assert!(
                e.param.as_deref().unwrap().contains(".content[0]"),
                "{body}"
            );
        }
        let e = decode_str(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],
               "tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0]"));
    }

    #[test]
    fn providers_name_dropped_fields_as_the_messages_client_wrote_them() {
        let r = decode_str(
            r#"{"model":"m","max_tokens":5,"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let t = crate::translate::Target {
            dialect: crate::translate::Dialect::BedrockConverse,
            upstream_model: "meta.llama3-1-70b-instruct-v1:0",
            project: None,
            location: None,
            api_version: None,
        };
        let up = crate::translate::prepare_chat(&t, &r).unwrap();
        assert_eq!(up.dropped, ["metadata.user_id"]);
    }

    #[test]
    fn top_k_reaches_the_providers_that_have_it_and_is_named_elsewhere() {
        use crate::translate::{prepare_chat, Dialect, Target};
        let r = decode_str(
            r#"{"model":"m","max_tokens":5,"top_k":7,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let target = |dialect| Target {
            dialect,
            upstream_model: "model",
            project: Some("p"),
            location: Some("us-central1"),
            api_version: None,
        };
        let body = |d| -> Value {
            let up = prepare_chat(&target(d), &r).unwrap();
            assert!(!up.dropped.contains(&"top_k".to_owned()), "{d:?}");
            serde_json::from_slice(&up.body).unwrap()
        };
        assert_eq!(body(Dialect::VertexGemini)["generationConfig"]["topK"], 7);
        assert_eq!(body(Dialect::OciGeneric)["chatRequest"]["topK"], 7);
        assert_eq!(body(Dialect::OciCohere)["chatRequest"]["topK"], 7);
        assert_eq!(body(Dialect::Anthropic)["top_k"], 7);
        for d in [Dialect::OpenAi, Dialect::BedrockConverse, Dialect::Watsonx] {
            let up = prepare_chat(&target(d), &r).unwrap();
            assert!(
                up.dropped.contains(&"top_k".to_owned()),
                "{d:?}: {:?}",
                up.dropped
            );
        }
    }

    #[test]
    fn thinking_becomes_a_reasoning_budget() {
        let with = |thinking: &str| {
            decode_str(&format!(
                r#"{{"model":"m","max_tokens":5,"thinking":{thinking},"messages":[{{"role":"user","content":"x"}}]}}"#
            ))
        };
        let r = with(r#"{"type":"enabled","budget_tokens":2000}"#).unwrap();
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                effort: None,
                budget_tokens: Some(2000)
            })
        );
        assert_eq!(r.other_names().count(), 0, "no longer in other");
        assert!(r.dropped.is_empty());
        assert_eq!(with(r#"{"type":"disabled"}"#).unwrap().reasoning, None);
        assert_eq!(
            with(r#"{"type":"enabled","budget_tokens":1.0e3}"#)
                .unwrap()
                .reasoning
                .and_then(|r| r.budget_tokens),
            Some(1000)
        );
        for bad in ["1.5", "-3", "\"many\"", "1e300"] {
            let e = with(&format!(r#"{{"type":"enabled","budget_tokens":{bad}}}"#)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("thinking.budget_tokens"), "{bad}");
        }
        assert_eq!(
            with(r#"{"type":"sometimes"}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("thinking.type")
        );
        assert_eq!(
            with(r#"{"type":"enabled"}"#).unwrap_err().param.as_deref(),
            Some("thinking.budget_tokens")
        );
    }

    /// Issue 15.1: a Messages client's `thinking` reaches each provider's own control, and is
    /// named `thinking` (the client's name) where there is none.
    #[test]
    fn thinking_reaches_every_provider_or_is_named() {
        use crate::translate::{prepare_chat, Dialect, Target};
        let r = decode_str(
            r#"{"model":"m","max_tokens":500,"thinking":{"type":"enabled","budget_tokens":10000},"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let up = |dialect, model| {
            prepare_chat(
                &Target {
                    dialect,
                    upstream_model: model,
                    project: Some("p"),
                    location: Some("us-central1"),
                    api_version: None,
                },
                &r,
            )
            .unwrap()
        };
        let body = |dialect, model| -> Value {
            let up = up(dialect, model);
            assert!(up.dropped.is_empty(), "{dialect:?}: {:?}", up.dropped);
            serde_json::from_slice(&up.body).unwrap()
        };
        let gemini = body(Dialect::VertexGemini, "gemini-2.5-flash");
        assert_eq!(
            gemini["generationConfig"]["thinkingConfig"],
            serde_json::json!({"includeThoughts": true, "thinkingBudget": 10000})
        );
        let gemini3 = body(Dialect::VertexGemini, "gemini-3-pro-preview");
        assert_eq!(
            gemini3["generationConfig"]["thinkingConfig"],
            serde_json::json!({"includeThoughts": true, "thinkingLevel": "HIGH"})
        );
        assert_eq!(body(Dialect::OpenAi, "o3")["reasoning_effort"], "high");
        assert_eq!(
            body(Dialect::OciGeneric, "openai.gpt-oss-120b")["chatRequest"]["reasoningEffort"],
            "HIGH"
        );
        let claude = body(Dialect::BedrockConverse, "anthropic.claude-sonnet-4-v1:0");
        assert_eq!(
            claude["additionalModelRequestFields"]["thinking"],
            serde_json::json!({"type": "enabled", "budget_tokens": 10000})
        );
        assert_eq!(claude["inferenceConfig"]["maxTokens"], 10500);
        for (dialect, model) in [
            (Dialect::Watsonx, "ibm/granite-3-8b-instruct"),
            (Dialect::OciCohere, "cohere.command-r-plus"),
            (Dialect::BedrockConverse, "meta.llama3-70b-instruct-v1:0"),
        ] {
            assert_eq!(up(dialect, model).dropped, ["thinking"], "{dialect:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let check = |s: &str, count: bool| {
            let p = crate::openai::parse_request(crate::Endpoint::Messages, s.as_bytes()).unwrap();
            validate(&p, count).err().and_then(|e| e.param)
        };
        assert_eq!(
            check(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                false
            )
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            check(
                r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                true
            ),
            None
        );
        assert_eq!(
            check(
                r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
                false
            )
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            check(r#"{"model":"m","max_tokens":5,"messages":[]}"#, false).as_deref(),
            Some("messages")
        );
        assert_eq!(check(r#"{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}"#, false).as_deref(), Some("temperature"));
    }
}
