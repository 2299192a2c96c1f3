//! The client-facing OpenAI dialect: which endpoint a request targets, what the gateway must
//! know about it before routing (model, stream, usage), usage accounting and error bodies.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json_shape::{Fields, Json, MessagesCheck, Top};

/// The unified API endpoints a request can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic Messages `/v1/messages`.
    Messages,
    /// Anthropic Messages `/v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI Responses `/v1/responses`.
    Responses,
}

impl Endpoint {
    /// The path of this endpoint under `/v1`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
            Endpoint::Responses => "/responses",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Responses => "responses",
        }
    }

    /// The field that carries the request's input and must be present.
    fn input_field(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings => "input",
            Endpoint::Messages | Endpoint::CountTokens => "messages",
            Endpoint::Responses => "input",
        }
    }
}

/// A request the gateway refuses before calling any upstream (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    pub message: String,
    pub param: Option<String>,
}

impl InvalidRequest {
    pub fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }
}

/// A parsed, validated unified-API request body.
///
/// The body stays the client's bytes ([`ParsedRequest::raw`]) with its top-level fields
/// located ([`ParsedRequest::fields`]); the full JSON tree ([`ParsedRequest::body`]) is built
/// only when something needs it (a translator, the mock provider), since it costs many times
/// the body's size. OpenAI-shaped upstreams get the body spliced from the client's bytes.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub endpoint: Endpoint,
    pub summary: RequestSummary,
    raw: Bytes,
    fields: Fields,
    /// Chat: every message's role was read and is one OpenAI accepts (the walk that read
    /// the body vouched for them); false says nothing.
    roles_known: bool,
    tree: OnceLock<Result<Map<String, Value>, InvalidRequest>>,
}

impl ParsedRequest {
    /// The body as the client sent it.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The body's top-level fields (names and where their values are in [`Self::raw`]).
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// Chat: every message's role is known to be one OpenAI accepts (read when the body
    /// was); false says nothing.
    pub fn roles_known(&self) -> bool {
        self.roles_known
    }

    /// The JSON text of top-level field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(&self.raw, name)
    }

    /// The body as a JSON tree, built on first use.
    pub fn body(&self) -> Result<&Map<String, Value>, InvalidRequest> {
        self.tree
            .get_or_init(|| {
                serde_json::from_slice(&self.raw).map_err(|e| {
                    InvalidRequest::new(
                        format!("We could not parse the JSON body of your request: {e}"),
                        None,
                    )
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// What routing and accounting need to know about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The model name as the client sent it.
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for the final usage chunk of a stream.
    pub client_wants_usage: bool,
}

/// Parses and validates a unified-API body: a JSON object with a string `model`, the
/// endpoint's input field, and correctly typed `stream` / `stream_options`.
pub fn parse_request(endpoint: Endpoint, raw: &[u8]) -> Result<ParsedRequest, InvalidRequest> {
    parse_request_bytes(endpoint, Bytes::copy_from_slice(raw))
}

/// [`parse_request`] keeping `raw` itself (no copy): one pass over the body that keeps only
/// its top-level layout.
pub fn parse_request_bytes(
    endpoint: Endpoint,
    raw: Bytes,
) -> Result<ParsedRequest, InvalidRequest> {
    // Chat bodies: the roles are read in the same walk ([`crate::json_shape::all_roles`]).
    let parsed = match endpoint {
        Endpoint::ChatCompletions => {
            Fields::parse_chat(&raw, |r| crate::chat::request::ROLES.contains(&r))
        }
        _ => Fields::parse(&raw).map(|top| (top, false)),
    };
    let (fields, roles_known) = match parsed {
        Ok((Top::Object(fields), roles_known)) => (fields, roles_known),
        Ok((Top::Other(_), _)) => {
            return Err(InvalidRequest::new(
                "The request body must be a JSON object.",
                None,
            ))
        }
        Err(e) => {
            return Err(InvalidRequest::new(
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            ))
        }
    };
    let field = |name: &str| fields.get(&raw, name);
    let kind = |name: &str| field(name).map(Json::of);
    let model = match kind("model") {
        Some(Json::String(m)) if !m.is_empty() => {
            crate::model_name::check(&m)?;
            m.into_owned()
        }
        Some(Json::String(_)) | None | Some(Json::Null) => {
            return Err(InvalidRequest::new(
                "you must provide a model parameter",
                Some("model"),
            ))
        }
        Some(other) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid type for 'model': expected a string, but got {}.",
                    other.type_name()
                ),
                Some("model"),
            ))
        }
    };
    let input = endpoint.input_field();
    if endpoint == Endpoint::ChatCompletions {
        // Known roles: `messages` is a non-empty array of objects with string roles, so
        // its text is not even looked up.
        let check = match roles_known {
            true => Some(MessagesCheck::Ok),
            false => field(input).map(MessagesCheck::of),
        };
        match check {
            None | Some(MessagesCheck::NotArray("null")) => {
                return Err(InvalidRequest::new(
                    format!("Missing required parameter: '{input}'."),
                    Some(input),
                ))
            }
            Some(check) => validate_messages(check)?,
        }
    } else {
        match kind(input) {
            None | Some(Json::Null) => {
                return Err(InvalidRequest::new(
                    format!("Missing required parameter: '{input}'."),
                    Some(input),
                ))
            }
            Some(Json::String(_)) | Some(Json::Array) => {}
            Some(other) => {
                return Err(InvalidRequest::new(
                    format!(
                        "Invalid type for '{input}': expected a string or an array, but got {}.",
                        other.type_name()
                    ),
                    Some(input),
                ))
            }
        }
    }
    let stream = match kind("stream") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => b,
        Some(other) => {
            return Err(InvalidRequest::new(
                format!(
                    "Invalid type for 'stream': expected a boolean, but got {}.",
                    other.type_name()
                ),
                Some("stream"),
            ))
        }
    };
    if stream && matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens) {
        return Err(InvalidRequest::new(
            if endpoint == Endpoint::Embeddings {
                "Embeddings cannot be streamed."
            } else {
                "Token counts cannot be streamed."
            },
            Some("stream"),
        ));
    }
    let options: Option<Value> = field("stream_options").and_then(|o| serde_json::from_str(o).ok());
    let client_wants_usage = match options {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InvalidRequest::new(
                    format!(
                        "Invalid type for 'stream_options.include_usage': expected a boolean, but got {}.",
                        type_name(other)
                    ),
                    Some("stream_options.include_usage"),
                ))
            }
        },
        Some(other) => {
            return Err(InvalidRequest::new(
                format!("Invalid type for 'stream_options': expected an object, but got {}.", type_name(&other)),
                Some("stream_options"),
            ))
        }
    };
    Ok(ParsedRequest {
        endpoint,
        summary: RequestSummary {
            model,
            stream,
            client_wants_usage: stream && client_wants_usage,
        },
        raw,
        fields,
        roles_known,
        tree: OnceLock::new(),
    })
}

fn validate_messages(check: MessagesCheck) -> Result<(), InvalidRequest> {
    match check {
        MessagesCheck::Ok => Ok(()),
        MessagesCheck::NotArray(kind) => Err(InvalidRequest::new(
            format!("Invalid type for 'messages': expected an array, but got {kind}."),
            Some("messages"),
        )),
        MessagesCheck::Empty => Err(InvalidRequest::new(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            Some("messages"),
        )),
        MessagesCheck::NotObject(i, kind) => Err(InvalidRequest::new(
            format!("Invalid type for 'messages[{i}]': expected an object, but got {kind}."),
            Some(&format!("messages[{i}]")),
        )),
        MessagesCheck::NoRole(i) => Err(InvalidRequest::new(
            format!("Missing required parameter: 'messages[{i}].role'."),
            Some(&format!("messages[{i}].role")),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`), when the
    /// provider reports them; rendered as `prompt_tokens_details.cached_tokens`.
    #[serde(skip)]
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (a subset of `prompt_tokens`; Anthropic's
    /// `cache_creation_input_tokens`), priced at the cache-write rate where one is published.
    #[serde(skip)]
    pub cache_write_tokens: u64,
    /// Of `cache_write_tokens`, those written with a one-hour lifetime (Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`), priced at the one-hour write rate.
    #[serde(skip)]
    pub cache_write_1h_tokens: u64,
    /// Completion tokens spent on reasoning (a subset of `completion_tokens`), when reported.
    #[serde(skip)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// Reads `usage` from an OpenAI-shaped JSON object, if present and well-formed.
    pub fn from_response(v: &Value) -> Option<Usage> {
        let u = v.get("usage")?;
        if u.is_null() {
            return None;
        }
        Usage::deserialize(u).ok()
    }
}

/// Renders the OpenAI error envelope `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Inner<'a>,
    }
    serde_json::to_vec(&Envelope {
        error: Inner {
            message,
            kind,
            param,
            code,
        },
    })
    .unwrap_or_else(|_| {
        br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
            .to_vec()
    })
}

/// Collects the text of a message's `content` (string, or text parts) into `out`.
pub fn content_text(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(t);
                }
            }
        }
        _ => {}
    }
}

/// OpenAI's `error.type` for an HTTP status, where a provider gave none.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// An upstream error body as the OpenAI envelope: kept as is when it already is one
/// (an object with `error.message`), wrapped with a status-derived type otherwise.
pub fn upstream_error_body(status: u16, body: &[u8], provider: &str) -> Vec<u8> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v.get("error")
            .and_then(|e| e.get("message"))
            .is_some_and(Value::is_string)
        {
            return body.to_vec();
        }
    }
    error_body(
        &format!("Provider `{provider}` returned HTTP {status}."),
        error_type_for_status(status),
        None,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_minimal_chat_request() {
        let p = parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(p.summary.model, "gpt-4");
        assert!(p.summary.stream && p.summary.client_wants_usage);
    }

    #[test]
    fn rejects_bad_bodies_with_the_param_named() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"{not json", None),
            (b"[1,2]", None),
            (
                br#"{"model":"m","messages":[{"role":"user"}],"t":1e400}"#,
                None,
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
                None,
            ),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (br#"{"model":5,"messages":[]}"#, Some("model")),
            (br#"{"model":"m"}"#, Some("messages")),
            (br#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (br#"{"model":"m","messages":[]}"#, Some("messages")),
            (
                br#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
            ),
        ];
        for (body, param) in cases {
            let err = parse_request(Endpoint::ChatCompletions, body).unwrap_err();
            assert_eq!(
                err.param.as_deref(),
                *param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_request(Endpoint::Embeddings, br#"{"model":"e","input":3}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
    }

    #[test]
    fn error_envelope_shape() {
        let v: Value =
            serde_json::from_slice(&error_body("m", "invalid_request_error", None, Some("c")))
                .unwrap();
        assert_eq!(v["error"]["message"], "m");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(v["error"]["code"], "c");
    }
}
