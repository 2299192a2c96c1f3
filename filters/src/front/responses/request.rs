//! Decodes an OpenAI Responses request (`/v1/responses`) into the neutral [`ChatRequest`], for
//! providers that do not speak Responses themselves, and prepares what the gateway keeps of
//! it: the input as stored items ([`input_items`]), earlier turns spliced in
//! ([`prepend_history`]) and the members the `response` object echoes ([`echo`]).
//!
//! `input` items map to neutral messages: `message` items (roles user, system, developer,
//! assistant; `input_text` / `input_image` / `input_file` / assistant `output_text` and
//! `refusal` parts), `function_call` items to the assistant's tool calls, and
//! `function_call_output` items to tool messages. `reasoning` items are left out (named as
//! dropped): the neutral model has no place for an earlier turn's reasoning. Anything that
//! needs OpenAI's own storage or tools (file ids, file URLs, item references, built-in tools,
//! `conversation`, stored `prompt`s, background mode) is refused with a 400 naming it.
//! Fields with no typed slot go to [`ChatRequest::other`] by name, as on the chat door.

use serde_json::{json, Map, Value};

use crate::chat::request::{data_url, Effort, Reasoning};
use crate::chat::{ChatRequest, Message, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice};
use crate::front::FrontDoor;
use crate::openai::{InvalidRequest, ParsedRequest};

/// Top-level fields with a typed slot, consumed by the gateway (storage, echo, routing) or
/// refused: never passed on in [`ChatRequest::other`].
const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "metadata",
    "user",
    "store",
    "include",
    "truncation",
    "stream",
    "stream_options",
    "previous_response_id",
    "background",
    "conversation",
    "prompt",
    "top_logprobs",
];

/// The Responses name of a neutral (chat-named) parameter a provider dropped, where the two
/// differ.
pub fn client_name(neutral: &str) -> Option<&'static str> {
    Some(match neutral {
        "max_tokens" | "max_completion_tokens" => "max_output_tokens",
        "reasoning_effort" => "reasoning.effort",
        "response_format" => "text.format",
        "verbosity" => "text.verbosity",
        "tools[].function.strict" => "tools[].strict",
        "messages" => "input",
        _ => return None,
    })
}

fn bad(message: impl Into<String>, param: &str) -> InvalidRequest {
    InvalidRequest::new(message, Some(param))
}

/// Cheap checks of single fields before routing, refused in OpenAI's words: sampling and
/// length in range, `input` a string or a list, no background mode. Reads single fields from
/// the body's bytes; builds no tree.
pub fn validate(p: &ParsedRequest) -> Result<(), InvalidRequest> {
    let value = |key: &str| -> Option<Value> { serde_json::from_str(p.field(key)?).ok() };
    for (key, max) in [("temperature", 2.0), ("top_p", 1.0)] {
        match value(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                if !n.as_f64().is_some_and(|x| (0.0..=max).contains(&x)) {
                    return Err(bad(
                        format!("Invalid value for '{key}': {n} is out of range; it must be from 0 to {max}."),
                        key,
                    ));
                }
            }
            Some(_) => {
                return Err(bad(
                    format!("Invalid type for '{key}': expected a number."),
                    key,
                ))
            }
        }
    }
    for (key, min, max) in [("max_output_tokens", 16, u64::MAX), ("top_logprobs", 0, 20)] {
        match value(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => match n.as_u64() {
                Some(x) if (min..=max).contains(&x) => {}
                _ if max == u64::MAX => {
                    return Err(bad(
                        format!("Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {n} instead."),
                        key,
                    ))
                }
                _ => {
                    return Err(bad(
                        format!("Invalid value for '{key}': {n} is out of range; it must be from {min} to {max}."),
                        key,
                    ))
                }
            },
            Some(_) => {
                return Err(bad(
                    format!("Invalid type for '{key}': expected an integer."),
                    key,
                ))
            }
        }
    }
    match value("input") {
        None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
        Some(_) => {
            return Err(bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                "input",
            ))
        }
    }
    if value("background").and_then(|b| b.as_bool()) == Some(true) {
        return Err(bad(
            "Background mode ('background': true) is not supported by this gateway; send the request without it.",
            "background",
        ));
    }
    Ok(())
}

/// The Responses body as a neutral chat request.
pub fn decode(body: &Map<String, Value>) -> Result<ChatRequest, InvalidRequest> {
    let mut dropped: Vec<String> = Vec::new();
    for key in ["conversation", "prompt"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(bad(
                format!("'{key}' refers to objects stored at OpenAI, which this model's provider cannot read; send the input items themselves."),
                key,
            ));
        }
    }
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "Background mode ('background': true) is not supported by this gateway; send the request without it.",
            "background",
        ));
    }
    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(plain(Role::System, vec![Part::Text(s.clone())])),
        Some(_) => {
            return Err(bad(
                "Invalid type for 'instructions': expected a string.",
                "instructions",
            ))
        }
    }
    match body.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(plain(Role::User, vec![Part::Text(s.clone())])),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(i, item, &mut messages, &mut dropped)?;
            }
        }
        Some(_) => {
            return Err(bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                "input",
            ))
        }
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(bad("Missing required parameter: 'input'.", "input"));
    }
    let tools = tools(body.get("tools"))?;
    let tool_choice = tool_choice(body.get("tool_choice"))?;
    if let Some(ToolChoice::Named(name)) = &tool_choice {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(bad(
                format!("Invalid 'tool_choice': no function named '{name}' in 'tools'."),
                "tool_choice",
            ));
        }
    }
    let mut other = Vec::new();
    let (response_format, verbosity) = text(body.get("text"))?;
    if let Some(v) = verbosity {
        other.push(("verbosity".to_owned(), v.clone()));
    }
    for (k, v) in body {
        if !KNOWN.contains(&k.as_str()) && !v.is_null() {
            other.push((k.clone(), v.clone()));
        }
    }
    // What the translated answer cannot give back: log probabilities (its `output_text`
    // parts carry none) and encrypted reasoning.
    if body
        .get("top_logprobs")
        .is_some_and(|v| !v.is_null() && v.as_u64() != Some(0))
    {
        name_dropped(&mut dropped, "top_logprobs");
    }
    if let Some(Value::Array(include)) = body.get("include") {
        if include.iter().any(|i| {
            matches!(
                i.as_str(),
                Some("reasoning.encrypted_content" | "message.output_text.logprobs")
            )
        }) {
            name_dropped(&mut dropped, "include");
        }
    }
    let stream = opt(body, "stream", "a boolean", Value::as_bool)?.unwrap_or(false);
    Ok(ChatRequest {
        messages,
        max_tokens: opt(body, "max_output_tokens", "an integer", Value::as_u64)?,
        temperature: opt(body, "temperature", "a number", Value::as_f64)?,
        top_p: opt(body, "top_p", "a number", Value::as_f64)?,
        top_k: None,
        stop: Vec::new(),
        seed: None,
        user: opt(body, "user", "a string", |v| v.as_str().map(str::to_owned))?,
        n: None,
        presence_penalty: None,
        frequency_penalty: None,
        response_format,
        tools,
        tool_choice,
        parallel_tool_calls: opt(body, "parallel_tool_calls", "a boolean", Value::as_bool)?,
        reasoning: reasoning(body.get("reasoning"))?,
        stream,
        // The `response.completed` event always carries usage.
        include_usage: stream,
        front: FrontDoor::Responses,
        other,
        dropped,
        cache: Vec::new(),
    })
}

/// Optional field `key` read with `read`; null counts as absent, a wrong type is a 400.
fn opt<T>(
    body: &Map<String, Value>,
    key: &str,
    expected: &str,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, InvalidRequest> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v).map(Some).ok_or_else(|| {
            bad(
                format!("Invalid type for '{key}': expected {expected}."),
                key,
            )
        }),
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

/// A required string field of an item, else a 400 naming `at.key`.
fn str_field(v: &Value, key: &str, at: &dyn Fn() -> String) -> Result<String, InvalidRequest> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            let p = format!("{}.{key}", at());
            bad(format!("Missing required parameter: '{p}'."), &p)
        })
}

/// The item's `type`; a message given without one (`{"role","content"}`) is a `message`.
fn item_type(item: &Value) -> Option<&str> {
    match item.get("type") {
        Some(Value::String(t)) => Some(t),
        None | Some(Value::Null) if item.get("role").is_some() => Some("message"),
        _ => None,
    }
}

fn input_item(
    i: usize,
    item: &Value,
    messages: &mut Vec<Message>,
    dropped: &mut Vec<String>,
) -> Result<(), InvalidRequest> {
    let at = || format!("input[{i}]");
    if !item.is_object() {
        return Err(bad(
            format!("Invalid type for 'input[{i}]': expected an input item object."),
            &at(),
        ));
    }
    match item_type(item) {
        Some("message") => messages.push(message(i, item)?),
        Some("function_call") => {
            let call = ToolCall {
                id: str_field(item, "call_id", &at)?,
                name: str_field(item, "name", &at)?,
                arguments: match item.get("arguments") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                },
            };
            // Calls the assistant made in one turn belong to one assistant message, after its
            // text.
            match messages.last_mut() {
                Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                _ => messages.push(Message {
                    role: Role::Assistant,
                    content: Vec::new(),
                    tool_calls: vec![call],
                    tool_call_id: None,
                    name: None,
                    thinking: Vec::new(),
                }),
            }
        }
        Some("function_call_output") => {
            let id = str_field(item, "call_id", &at)?;
            let text = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => {
                                if !text.is_empty() {
                                    text.push('\n');
                                }
                                text.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                            }
                            _ => name_dropped(dropped, "function_call_output.output[].input_image"),
                        }
                    }
                    text
                }
                _ => {
                    let p = format!("input[{i}].output");
                    return Err(bad(
                        format!("Missing required parameter: '{p}' (a string)."),
                        &p,
                    ));
                }
            };
            messages.push(Message {
                role: Role::Tool,
                content: vec![Part::Text(text)],
                tool_calls: Vec::new(),
                tool_call_id: Some(id),
                name: None,
                thinking: Vec::new(),
            });
        }
        Some("reasoning") => name_dropped(dropped, "input[].reasoning"),
        Some("item_reference") => {
            return Err(bad(
                format!("Invalid 'input[{i}]': item references name items stored at OpenAI, which this model's provider cannot read; send the items themselves (or use 'previous_response_id')."),
                &at(),
            ))
        }
        Some(kind) => {
            let p = format!("input[{i}].type");
            return Err(bad(
                format!("Invalid value for '{p}': '{}' items are not supported by this provider (supported: 'message', 'function_call', 'function_call_output', 'reasoning').", clip(kind)),
                &p,
            ));
        }
        None => {
            let p = format!("input[{i}].type");
            return Err(bad(format!("Missing required parameter: '{p}'."), &p));
        }
    }
    Ok(())
}

fn name_dropped(dropped: &mut Vec<String>, name: &str) {
    if !dropped.iter().any(|d| d == name) {
        dropped.push(name.to_owned());
    }
}

/// At most 64 characters of a client's value, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn message(i: usize, item: &Value) -> Result<Message, InvalidRequest> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("assistant") => Role::Assistant,
        Some(other) => {
            let p = format!("input[{i}].role");
            return Err(bad(
                format!("Invalid value for '{p}': '{}'. Supported values are: 'user', 'system', 'developer' and 'assistant'.", clip(other)),
                &p,
            ));
        }
        None => {
            let p = format!("input[{i}].role");
            return Err(bad(format!("Missing required parameter: '{p}'."), &p));
        }
    };
    let parts = match item.get("content") {
        Some(Value::String(s)) => return Ok(plain(role, vec![Part::Text(s.clone())])),
        Some(Value::Array(parts)) => parts,
        _ => {
            let p = format!("input[{i}].content");
            return Err(bad(
                format!("Invalid type for '{p}': expected a string or an array of content parts."),
                &p,
            ));
        }
    };
    let mut content = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        content.push(content_part(i, j, role, part)?);
    }
    Ok(plain(role, content))
}

fn content_part(i: usize, j: usize, role: Role, p: &Value) -> Result<Part, InvalidRequest> {
    let at = || format!("input[{i}].content[{j}]");
    let kind = p.get("type").and_then(Value::as_str);
    let assistant = role == Role::Assistant;
    match kind {
        Some("input_text") => Ok(Part::Text(str_field(p, "text", &at)?)),
        Some("output_text") if assistant => Ok(Part::Text(str_field(p, "text", &at)?)),
        Some("refusal") if assistant => Ok(Part::Text(str_field(p, "refusal", &at)?)),
        Some("input_image") if role == Role::User => {
            match p.get("image_url").and_then(Value::as_str) {
                Some(url) => Ok(Part::Image {
                    url: url.to_owned(),
                    detail: p
                        .get("detail")
                        .and_then(Value::as_str)
                        .filter(|d| *d != "auto")
                        .map(str::to_owned),
                }),
                None if p.get("file_id").is_some_and(|f| !f.is_null()) => {
                    let param = format!("{}.file_id", at());
                    Err(bad(
                        format!("Invalid '{param}': file ids refer to files uploaded to OpenAI, which this model's provider cannot read; send the image as 'image_url' (an https URL or a data:image/...;base64 URL)."),
                        &param,
                    ))
                }
                None => {
                    let param = format!("{}.image_url", at());
                    Err(bad(
                        format!("Missing required parameter: '{param}'."),
                        &param,
                    ))
                }
            }
        }
        Some("input_file") if role == Role::User => input_file(&at(), p),
        Some(kind) => {
            let param = format!("{}.type", at());
            let allowed = if assistant {
                "'output_text' and 'refusal' (or 'input_text')"
            } else if role == Role::User {
                "'input_text', 'input_image' and 'input_file'"
            } else {
                "'input_text'"
            };
            Err(bad(
                format!("Invalid value for '{param}': '{}' parts are not accepted in a {} message. Supported values are: {allowed}.", clip(kind), role_name(role)),
                &param,
            ))
        }
        None => {
            let param = format!("{}.type", at());
            Err(bad(
                format!("Missing required parameter: '{param}'."),
                &param,
            ))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::Assistant => "assistant",
        Role::User | Role::Tool => "user",
    }
}

/// An `input_file` part: inline `file_data` (a `data:<type>;base64,` URL, or bare base64 taken
/// as a PDF) becomes [`Part::File`]; `file_id` and `file_url` would need the gateway to
/// resolve or fetch them: refused by name.
fn input_file(at: &str, p: &Value) -> Result<Part, InvalidRequest> {
    let name = p.get("filename").and_then(Value::as_str).map(str::to_owned);
    if let Some(data) = p.get("file_data").and_then(Value::as_str) {
        let (mime, data) = match data_url(data) {
            Some((mime, data)) => (mime, data),
            None if !data.starts_with("data:") => ("application/pdf", data),
            None => {
                let param = format!("{at}.file_data");
                return Err(bad(
                    format!("Invalid '{param}': expected a data:<type>;base64,<data> URL."),
                    &param,
                ));
            }
        };
        return Ok(Part::File {
            data: data.to_owned(),
            mime: mime.to_owned(),
            name,
        });
    }
    for key in ["file_id", "file_url"] {
        if p.get(key).is_some_and(|v| !v.is_null()) {
            let param = format!("{at}.{key}");
            let what = if key == "file_id" {
                "file ids refer to files uploaded to OpenAI, which this model's provider cannot read"
            } else {
                "file URLs are not fetched for this model's provider"
            };
            return Err(bad(
                format!("Invalid '{param}': {what}; send the file inline as 'file_data' (data:application/pdf;base64,...)."),
                &param,
            ));
        }
    }
    let param = format!("{at}.file_data");
    Err(bad(
        format!("Missing required parameter: '{param}'."),
        &param,
    ))
}

/// Responses' flat function tools (`{"type":"function","name","description","parameters",
/// "strict"}`); any built-in tool is refused by name.
fn tools(v: Option<&Value>) -> Result<Vec<Tool>, InvalidRequest> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("Invalid type for 'tools': expected an array.", "tools")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (k, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(kind) => {
                let p = format!("tools[{k}].type");
                return Err(bad(
                    format!("Invalid value for '{p}': the '{}' tool is not supported by this provider (only 'function' tools are).", clip(kind)),
                    &p,
                ));
            }
            None => {
                let p = format!("tools[{k}].type");
                return Err(bad(format!("Missing required parameter: '{p}'."), &p));
            }
        }
        let at = || format!("tools[{k}]");
        out.push(Tool {
            name: str_field(t, "name", &at)?,
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: t
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t.get("strict").and_then(Value::as_bool),
        });
    }
    Ok(out)
}

/// `tool_choice`: `auto` / `none` / `required`, or `{"type":"function","name"}`.
fn tool_choice(v: Option<&Value>) -> Result<Option<ToolChoice>, InvalidRequest> {
    Ok(Some(match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!("Invalid value for 'tool_choice': '{}'. Supported values are: 'none', 'auto' and 'required', or a named function.", clip(other)),
                    "tool_choice",
                ))
            }
        },
        Some(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => match o.get("name").and_then(Value::as_str) {
                Some(name) => ToolChoice::Named(name.to_owned()),
                None => {
                    return Err(bad(
                        "Missing required parameter: 'tool_choice.name'.",
                        "tool_choice.name",
                    ))
                }
            },
            Some(kind) => {
                return Err(bad(
                    format!("Invalid value for 'tool_choice.type': '{}' is not supported by this provider (only 'function').", clip(kind)),
                    "tool_choice.type",
                ))
            }
            None => {
                return Err(bad(
                    "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\":\"function\",\"name\":...}.",
                    "tool_choice",
                ))
            }
        },
    }))
}

/// `text`: its `format` as the neutral response format, and its `verbosity` if set.
fn text(v: Option<&Value>) -> Result<(Option<ResponseFormat>, Option<&Value>), InvalidRequest> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok((None, None));
    };
    if !v.is_object() {
        return Err(bad("Invalid type for 'text': expected an object.", "text"));
    }
    let verbosity = v.get("verbosity").filter(|v| !v.is_null());
    let Some(f) = v.get("format").filter(|f| !f.is_null()) else {
        return Ok((None, verbosity));
    };
    let format = match f.get("type").and_then(Value::as_str) {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => ResponseFormat::JsonSchema {
            name: f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response")
                .to_owned(),
            schema: f.get("schema").filter(|s| s.is_object()).cloned().ok_or_else(|| {
                bad(
                    "Missing required parameter: 'text.format.schema'.",
                    "text.format.schema",
                )
            })?,
            strict: f.get("strict").and_then(Value::as_bool),
        },
        other => {
            return Err(bad(
                format!("Invalid value for 'text.format.type': '{}'. Supported values are: 'text', 'json_object' and 'json_schema'.", clip(other.unwrap_or("null"))),
                "text.format.type",
            ))
        }
    };
    Ok((Some(format), verbosity))
}

/// `reasoning`: `effort` like chat's `reasoning_effort` (`none`: no reasoning asked for);
/// `summary` is accepted (the provider's reasoning text becomes the summary).
fn reasoning(v: Option<&Value>) -> Result<Option<Reasoning>, InvalidRequest> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if !v.is_object() {
        return Err(bad(
            "Invalid type for 'reasoning': expected an object.",
            "reasoning",
        ));
    }
    match v.get("effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "none" => Ok(None),
        Some(e) => match e.as_str().and_then(Effort::parse) {
            Some(effort) => Ok(Some(Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            })),
            None => Err(bad(
                match e.as_str() {
                    Some(s) => format!("Invalid value for 'reasoning.effort': '{}'. Supported values are: 'none', 'minimal', 'low', 'medium' and 'high'.", clip(s)),
                    None => "Invalid type for 'reasoning.effort': expected a string.".to_owned(),
                },
                "reasoning.effort",
            )),
        },
    }
}

/// The id prefix OpenAI uses for items of `kind`.
fn id_prefix(kind: &str) -> &'static str {
    match kind {
        "message" => "msg_",
        "function_call" => "fc_",
        "function_call_output" => "fco_",
        "reasoning" => "rs_",
        _ => "item_",
    }
}

/// The request's `input` as a list of items in Responses form (a string becomes one user
/// `message` item with an `input_text` part; a message's string content becomes one text
/// part), each given an `id` (`<prefix><id_seed>_<n>`) if it has none — what the gateway
/// stores for `previous_response_id` and `GET /v1/responses/{id}/input_items`. No `input`:
/// no items.
pub fn input_items(body: &Map<String, Value>, id_seed: &str) -> Result<Vec<Value>, InvalidRequest> {
    let items = match body.get("input") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![user_item(s)],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                "input",
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (n, mut item) in items.into_iter().enumerate() {
        let Some(kind) = item_type(&item).map(str::to_owned) else {
            let p = format!("input[{n}].type");
            return Err(bad(format!("Missing required parameter: '{p}'."), &p));
        };
        let Value::Object(m) = &mut item else {
            let p = format!("input[{n}]");
            return Err(bad(
                format!("Invalid type for '{p}': expected an input item object."),
                &p,
            ));
        };
        if kind == "message" {
            m.insert("type".into(), Value::String(kind.clone()));
            if let Some(Value::String(s)) = m.get("content") {
                let part = if m.get("role").and_then(Value::as_str) == Some("assistant") {
                    json!({"type": "output_text", "text": s, "annotations": []})
                } else {
                    json!({"type": "input_text", "text": s})
                };
                m.insert("content".into(), Value::Array(vec![part]));
            }
        }
        if m.get("id").and_then(Value::as_str).is_none() {
            m.insert(
                "id".into(),
                Value::String(format!("{}{id_seed}_{n}", id_prefix(&kind))),
            );
        }
        out.push(item);
    }
    Ok(out)
}

fn user_item(text: &str) -> Value {
    json!({
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    })
}

/// Replaces `input` with `history` (earlier items: inputs and outputs of the previous
/// responses) followed by this request's own items (a string `input` as one user message);
/// removes `previous_response_id`.
pub fn prepend_history(
    body: &mut Map<String, Value>,
    history: Vec<Value>,
) -> Result<(), InvalidRequest> {
    let own = match body.remove("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![user_item(&s)],
        Some(Value::Array(a)) => a,
        Some(other) => {
            body.insert("input".into(), other);
            return Err(bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                "input",
            ));
        }
    };
    let mut input = history;
    input.extend(own);
    body.insert("input".into(), Value::Array(input));
    body.remove("previous_response_id");
    Ok(())
}

/// The JSON members the `response` object echoes from the request, rendered once, without
/// braces (for [`crate::chat::ResponseCtx::echo`]). Absent fields take OpenAI's defaults:
/// `"background":false,"instructions":null,"max_output_tokens":null,"max_tool_calls":null,
/// "metadata":{},"parallel_tool_calls":true,"previous_response_id":null,
/// "prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},
/// "safety_identifier":null,"service_tier":"default","store":true,"temperature":1.0,
/// "text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_logprobs":0,
/// "top_p":1.0,"truncation":"disabled","user":null`.
pub fn echo(body: &Map<String, Value>, previous_response_id: Option<&str>) -> String {
    let get = |key: &str| body.get(key).filter(|v| !v.is_null());
    let or = |key: &str, default: Value| get(key).cloned().unwrap_or(default);
    let reasoning = get("reasoning");
    let text = get("text").filter(|t| t.is_object());
    let mut text_out = Map::new();
    text_out.insert(
        "format".into(),
        text.and_then(|t| t.get("format"))
            .filter(|f| !f.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "text"})),
    );
    if let Some(v) = text
        .and_then(|t| t.get("verbosity"))
        .filter(|v| !v.is_null())
    {
        text_out.insert("verbosity".into(), v.clone());
    }
    let members: [(&str, Value); 20] = [
        ("background", or("background", Value::Bool(false))),
        ("instructions", or("instructions", Value::Null)),
        ("max_output_tokens", or("max_output_tokens", Value::Null)),
        ("max_tool_calls", or("max_tool_calls", Value::Null)),
        ("metadata", or("metadata", json!({}))),
        (
            "parallel_tool_calls",
            or("parallel_tool_calls", Value::Bool(true)),
        ),
        (
            "previous_response_id",
            previous_response_id.map_or(Value::Null, |id| Value::String(id.to_owned())),
        ),
        ("prompt_cache_key", or("prompt_cache_key", Value::Null)),
        (
            "reasoning",
            json!({
                "effort": reasoning.and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
                "summary": reasoning.and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
            }),
        ),
        ("safety_identifier", or("safety_identifier", Value::Null)),
        ("service_tier", or("service_tier", json!("default"))),
        ("store", or("store", Value::Bool(true))),
        ("temperature", or("temperature", json!(1.0))),
        ("text", Value::Object(text_out)),
        ("tool_choice", or("tool_choice", json!("auto"))),
        ("tools", or("tools", json!([]))),
        ("top_logprobs", or("top_logprobs", json!(0))),
        ("top_p", or("top_p", json!(1.0))),
        ("truncation", or("truncation", json!("disabled"))),
        ("user", or("user", Value::Null)),
    ];
    let mut out = Vec::with_capacity(512);
    for (n, (key, value)) in members.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).expect("Vec write");
        out.push(b':');
        serde_json::to_writer(&mut out, value).expect("Vec write");
    }
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse_request, Endpoint};

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn dec(v: Value) -> Result<ChatRequest, InvalidRequest> {
        decode(&body(v))
    }

    /// The refusal of `v`, checking its `param` and that its message contains `words`.
    fn refused(v: Value, param: &str, words: &str) {
        let e = dec(v).expect_err("refused");
        assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
        assert!(e.message.contains(words), "{}", e.message);
    }

    #[test]
    fn decodes_a_string_input_and_every_parameter() {
        let r = dec(json!({
            "model": "m", "instructions": "Be brief.", "input": "Hi",
            "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9, "user": "u1",
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
            "metadata": {"k": "v"}, "store": true, "include": ["reasoning.encrypted_content"],
            "truncation": "auto", "stream": true, "prompt_cache_key": "pk", "safety_identifier": "s",
            "service_tier": "flex", "top_logprobs": 2, "max_tool_calls": 3, "background": false,
        }))
        .unwrap();
        assert_eq!(r.front, FrontDoor::Responses);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[0].text(), "Be brief.");
        assert_eq!(r.messages[1].role, Role::User);
        assert_eq!(r.messages[1].content, vec![Part::Text("Hi".into())]);
        assert_eq!(r.max_tokens, Some(100));
        assert_eq!((r.temperature, r.top_p), (Some(0.5), Some(0.9)));
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert_eq!(r.reasoning.and_then(|x| x.effort), Some(Effort::High));
        assert_eq!(
            r.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "out".into(),
                schema: json!({"type": "object"}),
                strict: Some(true)
            })
        );
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].name, "f");
        assert_eq!(r.tools[0].description.as_deref(), Some("d"));
        assert_eq!(r.tools[0].parameters["properties"]["a"]["type"], "string");
        assert_eq!(r.tools[0].strict, Some(true));
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(r.parallel_tool_calls, Some(false));
        assert!(r.stream && r.include_usage);
        // Consumed by the gateway (echo, storage): not passed on. The rest is named by the
        // provider translators like any unknown chat field.
        let other: Vec<&str> = r.other_names().collect();
        assert_eq!(
            other,
            vec![
                "verbosity",
                "max_tool_calls",
                "prompt_cache_key",
                "safety_identifier",
                "service_tier",
            ]
        );
        assert_eq!(
            r.dropped,
            vec!["top_logprobs".to_owned(), "include".to_owned()]
        );
    }

    #[test]
    fn decodes_every_item_and_part_kind() {
        let r = dec(json!({"model": "m", "input": [
            {"role": "developer", "content": "Rules."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Sys."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Look:"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"},
                {"type": "input_file", "file_data": "JVBERi0"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "secret"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
                {"type": "output_text", "text": "Calling.", "annotations": []},
                {"type": "refusal", "refusal": "no"},
            ]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "f", "arguments": "{\"x\":1}"},
            {"type": "function_call", "call_id": "call_b", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "42"},
            {"type": "function_call_output", "call_id": "call_b", "output": [
                {"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "https://i"}, {"type": "input_text", "text": "b"},
            ]},
            {"type": "function_call", "call_id": "call_c", "name": "f", "arguments": "{}"},
        ]}))
        .unwrap();
        let m = &r.messages;
        assert_eq!(m.len(), 7, "{m:#?}");
        assert_eq!((m[0].role, m[0].text()), (Role::Developer, "Rules.".into()));
        assert_eq!((m[1].role, m[1].text()), (Role::System, "Sys.".into()));
        assert_eq!(m[2].role, Role::User);
        assert_eq!(
            m[2].content,
            vec![
                Part::Text("Look:".into()),
                Part::Image {
                    url: "https://x/y.png".into(),
                    detail: Some("high".into())
                },
                Part::Image {
                    url: "data:image/png;base64,iVBO".into(),
                    detail: None
                },
                Part::File {
                    data: "JVBER".into(),
                    mime: "application/pdf".into(),
                    name: Some("a.pdf".into())
                },
                Part::File {
                    data: "JVBERi0".into(),
                    mime: "application/pdf".into(),
                    name: None
                },
            ]
        );
        // The reasoning item is gone; the assistant's text and both calls are one message.
        assert_eq!(m[3].role, Role::Assistant);
        assert_eq!(m[3].text(), "Calling.\nno");
        let calls: Vec<(&str, &str, &str)> = m[3]
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            vec![("call_a", "f", "{\"x\":1}"), ("call_b", "g", "{}")]
        );
        assert_eq!(
            (m[4].role, m[4].tool_call_id.as_deref(), m[4].text()),
            (Role::Tool, Some("call_a"), "42".into())
        );
        assert_eq!(m[5].text(), "a\nb");
        // A call after tool output starts a new assistant message.
        assert_eq!((m[6].role, m[6].tool_calls.len()), (Role::Assistant, 1));
        assert!(m[6].content.is_empty());
        assert_eq!(
            r.dropped,
            vec![
                "input[].reasoning".to_owned(),
                "function_call_output.output[].input_image".to_owned()
            ]
        );
    }

    #[test]
    fn refuses_what_needs_openai_by_name() {
        let input = |part: Value| json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}, part]}]});
        refused(
            input(json!({"type": "input_image", "file_id": "file-1"})),
            "input[0].content[1].file_id",
            "file ids",
        );
        refused(
            input(json!({"type": "input_image"})),
            "input[0].content[1].image_url",
            "Missing",
        );
        refused(
            input(json!({"type": "input_file", "file_id": "file-1"})),
            "input[0].content[1].file_id",
            "file_data",
        );
        refused(
            input(json!({"type": "input_file", "file_url": "https://x/a.pdf"})),
            "input[0].content[1].file_url",
            "file URLs",
        );
        refused(
            input(json!({"type": "input_file", "file_data": "data:application/pdf,JVBER"})),
            "input[0].content[1].file_data",
            "base64",
        );
        refused(
            input(json!({"type": "output_text", "text": "x"})),
            "input[0].content[1].type",
            "'output_text'",
        );
        refused(
            json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://i"}]}]}),
            "input[0].content[0].type",
            "assistant",
        );
        refused(
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
            "'tool'",
        );
        for tool in [
            "web_search_preview",
            "file_search",
            "code_interpreter",
            "computer_use_preview",
            "image_generation",
            "mcp",
        ] {
            refused(
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": tool}]}),
                "tools[1].type",
                &format!("the '{tool}' tool is not supported by this provider"),
            );
        }
        refused(
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
            "Missing",
        );
        refused(
            json!({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}}),
            "tool_choice",
            "'nope'",
        );
        refused(
            json!({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}),
            "tool_choice.type",
            "web_search_preview",
        );
        refused(
            json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
            "tool_choice",
            "'sometimes'",
        );
        refused(
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0]",
            "item references",
        );
        refused(
            json!({"model": "m", "input": [{"type": "computer_call_output", "call_id": "c"}]}),
            "input[0].type",
            "'computer_call_output' items are not supported",
        );
        refused(
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
            "Missing",
        );
        refused(
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}),
            "input[0].output",
            "Missing",
        );
        refused(json!({"model": "m", "input": [7]}), "input[0]", "object");
        refused(
            json!({"model": "m", "input": "x", "background": true}),
            "background",
            "Background mode",
        );
        refused(
            json!({"model": "m", "input": "x", "conversation": "conv_1"}),
            "conversation",
            "stored at OpenAI",
        );
        refused(
            json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}),
            "prompt",
            "stored at OpenAI",
        );
        refused(
            json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}),
            "text.format.type",
            "'xml'",
        );
        refused(
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "s"}}}),
            "text.format.schema",
            "Missing",
        );
        refused(
            json!({"model": "m", "input": "x", "reasoning": {"effort": "max"}}),
            "reasoning.effort",
            "'max'",
        );
        refused(
            json!({"model": "m", "input": "x", "max_output_tokens": "many"}),
            "max_output_tokens",
            "integer",
        );
        refused(
            json!({"model": "m", "instructions": "only"}),
            "input",
            "Missing",
        );
        refused(
            json!({"model": "m", "input": {"a": 1}}),
            "input",
            "Invalid type",
        );
    }

    #[test]
    fn text_formats_and_reasoning_none() {
        let r = dec(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "none"}, "tool_choice": "required", "top_logprobs": 0, "include": ["file_search_call.results"]})).unwrap();
        assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(r.reasoning, None);
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        let r =
            dec(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})).unwrap();
        assert_eq!(r.response_format, Some(ResponseFormat::Text));
        assert!(!r.stream && !r.include_usage);
    }

    #[test]
    fn validate_checks_fields_in_openai_words() {
        let check = |b: &str| {
            // `input` is the field the embeddings endpoint requires too.
            validate(&parse_request(Endpoint::Embeddings, b.as_bytes()).unwrap())
        };
        assert!(check(r#"{"model":"m","input":"x","temperature":2,"top_p":1,"max_output_tokens":16,"top_logprobs":20}"#).is_ok());
        for (b, param, words) in [
            (
                r#"{"model":"m","input":"x","temperature":2.5}"#,
                "temperature",
                "out of range",
            ),
            (
                r#"{"model":"m","input":"x","top_p":"a"}"#,
                "top_p",
                "expected a number",
            ),
            (
                r#"{"model":"m","input":"x","max_output_tokens":10}"#,
                "max_output_tokens",
                "Expected a value >= 16, but got 10 instead",
            ),
            (
                r#"{"model":"m","input":"x","max_output_tokens":1.5}"#,
                "max_output_tokens",
                "integer",
            ),
            (
                r#"{"model":"m","input":"x","top_logprobs":21}"#,
                "top_logprobs",
                "from 0 to 20",
            ),
            (
                r#"{"model":"m","input":"x","background":true}"#,
                "background",
                "not supported",
            ),
        ] {
            let e = check(b).expect_err(b);
            assert_eq!(e.param.as_deref(), Some(param), "{b}");
            assert!(e.message.contains(words), "{}", e.message);
        }
    }

    #[test]
    fn input_items_are_stored_in_responses_form_with_ids() {
        let items = input_items(&body(json!({"input": "Hi"})), "req7").unwrap();
        assert_eq!(
            items,
            vec![
                json!({"type": "message", "role": "user", "id": "msg_req7_0",
                "content": [{"type": "input_text", "text": "Hi"}]})
            ]
        );
        let items = input_items(
            &body(json!({"input": [
                {"role": "assistant", "content": "Before."},
                {"type": "function_call_output", "call_id": "c", "output": "1"},
                {"type": "function_call", "id": "fc_keep", "call_id": "c", "name": "f", "arguments": "{}"},
            ]})),
            "s",
        )
        .unwrap();
        assert_eq!(items[0]["type"], "message");
        assert_eq!(items[0]["id"], "msg_s_0");
        assert_eq!(
            items[0]["content"],
            json!([{"type": "output_text", "text": "Before.", "annotations": []}])
        );
        assert_eq!(items[1]["id"], "fco_s_1");
        assert_eq!(items[2]["id"], "fc_keep");
        assert!(input_items(&body(json!({})), "s").unwrap().is_empty());
        assert_eq!(
            input_items(&body(json!({"input": 3})), "s")
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        assert!(input_items(&body(json!({"input": [{"content": "x"}]})), "s").is_err());
        // Stored items decode again (the next turn's history).
        let again = dec(json!({"model": "m", "input": items})).unwrap();
        assert_eq!(again.messages.len(), 3);
    }

    #[test]
    fn history_comes_before_the_request_own_items() {
        let history = vec![
            json!({"type": "message", "role": "user", "id": "msg_a_0", "content": [{"type": "input_text", "text": "Q1"}]}),
            json!({"type": "reasoning", "id": "rs_b_0", "summary": [{"type": "summary_text", "text": "hm"}]}),
            json!({"type": "message", "role": "assistant", "id": "msg_b_1", "status": "completed", "content": [{"type": "output_text", "text": "A1", "annotations": [], "logprobs": []}]}),
        ];
        let mut b = body(json!({"model": "m", "input": "Q2", "previous_response_id": "resp_b"}));
        prepend_history(&mut b, history.clone()).unwrap();
        assert!(b.get("previous_response_id").is_none());
        let input = b["input"].as_array().unwrap();
        assert_eq!(input.len(), 4);
        assert_eq!(&input[..3], &history[..]);
        assert_eq!(input[3]["content"][0]["text"], "Q2");
        let r = decode(&b).unwrap();
        let texts: Vec<String> = r.messages.iter().map(Message::text).collect();
        assert_eq!(texts, vec!["Q1", "A1", "Q2"]);
        let mut b = body(json!({"input": [{"role": "user", "content": "x"}]}));
        prepend_history(&mut b, Vec::new()).unwrap();
        assert_eq!(b["input"].as_array().unwrap().len(), 1);
        let mut b = body(json!({"input": 1}));
        assert!(prepend_history(&mut b, Vec::new()).is_err());
        assert_eq!(b["input"], 1, "left as it was");
    }

    #[test]
    fn echo_gives_openai_defaults_and_the_request_values() {
        let v: Value = serde_json::from_str(&format!("{{{}}}", echo(&Map::new(), None))).unwrap();
        assert_eq!(
            v,
            json!({
                "background": false, "instructions": null, "max_output_tokens": null,
                "max_tool_calls": null, "metadata": {}, "parallel_tool_calls": true,
                "previous_response_id": null, "prompt_cache_key": null,
                "reasoning": {"effort": null, "summary": null}, "safety_identifier": null,
                "service_tier": "default", "store": true, "temperature": 1.0,
                "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
                "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled", "user": null,
            })
        );
        let tools = json!([{"type": "function", "name": "f", "parameters": {}}]);
        let b = body(json!({
            "instructions": "I", "max_output_tokens": 50, "metadata": {"a": "b"},
            "parallel_tool_calls": false, "reasoning": {"effort": "low"}, "store": false,
            "temperature": 0.2, "text": {"format": {"type": "json_object"}, "verbosity": "high"},
            "tool_choice": "required", "tools": tools, "top_p": 0.5, "truncation": "auto",
            "user": "u", "input": "not echoed",
        }));
        let v: Value = serde_json::from_str(&format!("{{{}}}", echo(&b, Some("resp_x")))).unwrap();
        assert_eq!(v["instructions"], "I");
        assert_eq!(v["max_output_tokens"], 50);
        assert_eq!(v["metadata"], json!({"a": "b"}));
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["previous_response_id"], "resp_x");
        assert_eq!(v["reasoning"], json!({"effort": "low", "summary": null}));
        assert_eq!(v["store"], false);
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(
            v["text"],
            json!({"format": {"type": "json_object"}, "verbosity": "high"})
        );
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["tools"], tools);
        assert_eq!(v["truncation"], "auto");
        assert_eq!(v["user"], "u");
        assert!(v.get("input").is_none());
    }

    #[test]
    fn the_fuzz_harness_holds_on_varied_bodies() {
        let harness = crate::fuzzing::by_name("responses").unwrap();
        let full = json!({
            "model": "m", "instructions": "I", "previous_response_id": "resp_0",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "a\"b"}, {"type": "input_image", "image_url": "https://i"}]},
                {"type": "reasoning", "summary": []},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "r"}]},
                {"role": "assistant", "content": "done"},
            ],
            "tools": [{"type": "function", "name": "f"}], "tool_choice": "auto",
            "text": {"format": {"type": "json_object"}}, "metadata": {"k": "\u{0}"},
        })
        .to_string();
        let bodies: Vec<&[u8]> = vec![
            full.as_bytes(),
            br#"{"model":"m","input":"x"}"#,
            br#"{"model":"m","input":[1,"a",null,{"type":7}]}"#,
            br#"{"model":"m","input":{"role":"user"}}"#,
            br#"{"input":[{"content":"no role"}],"tools":7,"text":[],"reasoning":"high"}"#,
            br#"{"model":"m","input":"x","tools":[{"type":"mcp"}]}"#,
            b"[]",
            b"{",
            b"",
        ];
        for body in bodies {
            for sel in 0u8..4 {
                let mut data = vec![sel];
                data.extend_from_slice(body);
                harness(&data);
            }
        }
        // Every prefix of a full body (most are not JSON; some are).
        for end in 0..=full.len() {
            let mut data = vec![3u8];
            data.extend_from_slice(&full.as_bytes()[..end]);
            harness(&data);
        }
    }

    #[test]
    fn client_names() {
        assert_eq!(client_name("max_tokens"), Some("max_output_tokens"));
        assert_eq!(client_name("reasoning_effort"), Some("reasoning.effort"));
        assert_eq!(client_name("response_format"), Some("text.format"));
        assert_eq!(client_name("temperature"), None);
    }
}
