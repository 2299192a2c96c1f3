//! The same-dialect fast path for `POST /v1/messages`: an Anthropic Messages request sent to a
//! host that itself speaks Anthropic Messages (the Anthropic API, Claude on Bedrock InvokeModel,
//! Claude on Vertex `rawPredict`), changing only what the host needs, and its answers relayed as
//! the Anthropic API sends them with the client's model name.
//!
//! | dialect | request edits | path | answer |
//! |---|---|---|---|
//! | [`Dialect::Anthropic`] | `model` value replaced | `/v1/messages` | JSON / SSE |
//! | [`Dialect::BedrockAnthropic`] | `model`, `stream` removed; `anthropic_version` (and `anthropic_beta` from the header) added unless present | `/model/{id}/invoke`, `/invoke-with-response-stream` | JSON / eventstream `chunk`s |
//! | [`Dialect::VertexAnthropic`] | `model` removed; `anthropic_version` added unless present | `…/publishers/anthropic/models/{m}:rawPredict` / `:streamRawPredict` | JSON / SSE |
//!
//! Edits are splices on the client's bytes: a top-level member is removed or its value replaced
//! in place and new members are inserted right after the opening brace, so key order, number
//! formatting, `cache_control`, thinking signatures and unknown fields reach the host
//! byte-for-byte. `anthropic-beta` is a header for Anthropic and Vertex and the
//! `anthropic_beta` body array for Bedrock (as Claude Code's gateway requirements list them).
//!
//! Streams come back as Anthropic SSE (`event: <type>\ndata: <json>\n\n`): SSE events are
//! relayed without parsing except `message_start` (its `message.model` is rewritten),
//! `message_delta` (usage read) and `error`; Bedrock `chunk` frames are unwrapped into the same
//! events (the `amazon-bedrock-invocationMetrics` key of the last one removed) and exception
//! frames become Anthropic `error` events.
//!
//! count_tokens: Anthropic `/v1/messages/count_tokens`; Bedrock CountTokens
//! (`POST /model/{id}/count-tokens`, `{"input":{"invokeModel":{"body":"<base64>"}}}` →
//! `{"inputTokens":N}`, AWS Bedrock API reference); Vertex
//! `…/publishers/anthropic/models/count-tokens:rawPredict` with `model` kept in the body (as the
//! Anthropic Vertex SDKs send it) → `{"input_tokens":N}`.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use crate::eventstream::{decode_chunk, Decoder, Message as Frame};
use crate::openai::{InvalidRequest, Usage};
use crate::providers::anthropic::{
    bedrock_exception_status, encode_segment, opt_cow, Tokens, UsageIn, ANTHROPIC_VERSION,
    BEDROCK_VERSION, VERTEX_VERSION,
};
use crate::sse::{parse_event, SseFramer};
use crate::translate::{
    AnswerFormat, BadAnswer, Dialect, StreamEnd, StreamTranslator, Target, UpstreamRequest,
};

const TRUNCATED: &str = "The provider's stream ended before the answer was complete.";
const CORRUPT: &str = "The provider's stream was corrupt.";
const UNREADABLE: &str = "The provider sent a stream event that could not be read.";

// ---------------------------------------------------------------------------------------------
// Top-level JSON members as byte ranges
// ---------------------------------------------------------------------------------------------

/// One member of a JSON object: its (decoded) name, where its key starts and its value's range.
struct Member<'a> {
    key: Cow<'a, str>,
    start: usize,
    value: Range<usize>,
}

/// A JSON object's members as ranges of its text.
struct Object<'a> {
    open: usize,
    members: Vec<Member<'a>>,
}

impl Object<'_> {
    fn has(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.key == name)
    }

    /// The value range of the last member called `name` (the one a JSON map keeps).
    fn get(&self, name: &str) -> Option<Range<usize>> {
        self.members
            .iter()
            .rev()
            .find(|m| m.key == name)
            .map(|m| m.value.clone())
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string whose opening quote is at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let p = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[p] == b'"' {
            return Some(p + 1);
        }
        j = p + 2;
    }
}

/// The end (exclusive) of the JSON value starting at `i`. Containers are skipped by counting
/// only their own kind of bracket outside strings (enough for well-formed JSON).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let (open, close) = match *b.get(i)? {
        b'"' => return string_end(b, i),
        b'{' => (b'{', b'}'),
        b'[' => (b'[', b']'),
        _ => {
            let len = b[i..]
                .iter()
                .take_while(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            return (len > 0).then_some(i + len);
        }
    };
    let mut depth = 0usize;
    let mut j = i;
    loop {
        let p = j + memchr::memchr3(b'"', open, close, b.get(j..)?)?;
        match b[p] {
            b'"' => j = string_end(b, p)?,
            c if c == open => {
                depth += 1;
                j = p + 1;
            }
            _ => {
                depth = depth.checked_sub(1)?;
                j = p + 1;
                if depth == 0 {
                    return Some(j);
                }
            }
        }
    }
}

/// Reads the members of the JSON object that `b` holds (whitespace around it allowed).
fn scan_object(b: &[u8]) -> Option<Object<'_>> {
    let open = skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    let close = if b.get(i) == Some(&b'}') {
        i
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(b, i)?;
            let raw = &b[i + 1..key_end - 1];
            let key = if raw.contains(&b'\\') {
                Cow::Owned(serde_json::from_slice::<String>(&b[i..key_end]).ok()?)
            } else {
                Cow::Borrowed(std::str::from_utf8(raw).ok()?)
            };
            let colon = skip_ws(b, key_end);
            if b.get(colon) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, colon + 1);
            let end = value_end(b, start)?;
            members.push(Member {
                key,
                start: i,
                value: start..end,
            });
            let next = skip_ws(b, end);
            match b.get(next) {
                Some(b',') => i = skip_ws(b, next + 1),
                Some(b'}') => break next,
                _ => return None,
            }
        }
    };
    (skip_ws(b, close + 1) == b.len()).then_some(Object { open, members })
}

/// Writes `body` (the text `obj` was read from) to `out` with the members named in `drop`
/// left out, every `model` value replaced by `model` when given, and `add` (members text,
/// comma-separated) inserted first. Every other byte is copied as it is.
fn splice(
    body: &[u8],
    obj: &Object<'_>,
    add: &[u8],
    drop: &[&str],
    model: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    out.reserve(body.len() + add.len() + model.map_or(0, <[u8]>::len));
    out.extend_from_slice(&body[..=obj.open]);
    out.extend_from_slice(add);
    let mut any = !add.is_empty();
    let mut prev_end = obj.open + 1;
    for m in &obj.members {
        // Whitespace before the first member; `ws , ws` before the others.
        let sep = &body[prev_end..m.start];
        prev_end = m.value.end;
        if drop.iter().any(|d| m.key == *d) {
            continue;
        }
        let comma = memchr::memchr(b',', sep);
        match (any, comma) {
            (true, Some(_)) => out.extend_from_slice(sep),
            (true, None) => {
                out.push(b',');
                out.extend_from_slice(sep);
            }
            (false, Some(c)) => out.extend_from_slice(&sep[c + 1..]),
            (false, None) => out.extend_from_slice(sep),
        }
        any = true;
        match model {
            Some(v) if m.key == "model" => {
                out.extend_from_slice(&body[m.start..m.value.start]);
                out.extend_from_slice(v);
            }
            _ => out.extend_from_slice(&body[m.start..m.value.end]),
        }
    }
    out.extend_from_slice(&body[prev_end..]);
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn not_an_object() -> InvalidRequest {
    InvalidRequest::new("The request body must be a JSON object.", None)
}

/// The `anthropic-beta` header's values (comma-separated, trimmed, empty ones left out).
fn beta_values(beta: Option<&str>) -> Vec<&str> {
    beta.map(|b| {
        b.split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn anthropic_headers(t: &Target<'_>, beta: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![(
        "anthropic-version",
        t.api_version
            .filter(|v| !v.is_empty())
            .unwrap_or(ANTHROPIC_VERSION)
            .to_owned(),
    )];
    if let Some(b) = beta.filter(|b| !b.trim().is_empty()) {
        headers.push(("anthropic-beta", b.to_owned()));
    }
    headers
}

/// The `anthropic-beta` header alone (Vertex takes the version in the body).
fn beta_header(beta: Option<&str>) -> Vec<(&'static str, String)> {
    beta.filter(|b| !b.trim().is_empty())
        .map(|b| vec![("anthropic-beta", b.to_owned())])
        .unwrap_or_default()
}

/// `/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:{method}`.
fn vertex_path(t: &Target<'_>, model: &str, method: &str) -> Result<String, InvalidRequest> {
    let project = t.project.filter(|p| !p.is_empty());
    let location = t.location.filter(|l| !l.is_empty());
    match (project, location) {
        (Some(p), Some(l)) => Ok(format!(
            "/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:{method}"
        )),
        (p, l) => {
            let missing = match (p, l) {
                (None, None) => "`project` and `location`",
                (None, _) => "`project`",
                _ => "`location`",
            };
            Err(InvalidRequest::new(
                format!("Gateway configuration error: this Claude-on-Vertex upstream needs a Vertex {missing}."),
                None,
            ))
        }
    }
}

/// The InvokeModel body: `model` and `stream` removed, `anthropic_version` and
/// `anthropic_beta` added unless the caller sent them.
fn bedrock_body(body: &[u8], obj: &Object<'_>, beta: Option<&str>, extra: &[u8]) -> Vec<u8> {
    let mut add = Vec::with_capacity(64);
    if !obj.has("anthropic_version") {
        add.extend_from_slice(br#""anthropic_version":"#);
        add.extend_from_slice(&json_string(BEDROCK_VERSION));
    }
    let betas = beta_values(beta);
    if !betas.is_empty() && !obj.has("anthropic_beta") {
        if !add.is_empty() {
            add.push(b',');
        }
        add.extend_from_slice(br#""anthropic_beta":"#);
        add.extend_from_slice(&serde_json::to_vec(&betas).unwrap_or_else(|_| b"[]".to_vec()));
    }
    if !extra.is_empty() {
        if !add.is_empty() {
            add.push(b',');
        }
        add.extend_from_slice(extra);
    }
    let mut out = Vec::new();
    splice(body, obj, &add, &["model", "stream"], None, &mut out);
    out
}

/// The Vertex body: `model` removed, or replaced by `model` when given (count-tokens),
/// `anthropic_version` added unless present.
fn vertex_body(body: &[u8], obj: &Object<'_>, model: Option<&str>) -> Vec<u8> {
    let mut add = Vec::new();
    if !obj.has("anthropic_version") {
        add.extend_from_slice(br#""anthropic_version":"#);
        add.extend_from_slice(&json_string(VERTEX_VERSION));
    }
    let mut out = Vec::new();
    match model {
        Some(m) => splice(body, obj, &add, &[], Some(&json_string(m)), &mut out),
        None => splice(body, obj, &add, &["model"], None, &mut out),
    }
    out
}

/// Builds the host request for a client's Messages body (`stream`: the client asked for a
/// stream; `beta`: its `anthropic-beta` header). Only [`Dialect::Anthropic`],
/// [`Dialect::BedrockAnthropic`] and [`Dialect::VertexAnthropic`] speak Messages.
pub fn prepare(
    t: &Target<'_>,
    body: &[u8],
    stream: bool,
    beta: Option<&str>,
) -> Result<UpstreamRequest, InvalidRequest> {
    let obj = scan_object(body).ok_or_else(not_an_object)?;
    let (path, body, headers, answer) = match t.dialect {
        Dialect::Anthropic => {
            let mut out = Vec::new();
            splice(
                body,
                &obj,
                b"",
                &[],
                Some(&json_string(t.upstream_model)),
                &mut out,
            );
            let answer = if stream {
                AnswerFormat::Sse
            } else {
                AnswerFormat::Json
            };
            (
                "/v1/messages".to_owned(),
                out,
                anthropic_headers(t, beta),
                answer,
            )
        }
        Dialect::BedrockAnthropic => {
            let (op, answer) = if stream {
                ("invoke-with-response-stream", AnswerFormat::EventStream)
            } else {
                ("invoke", AnswerFormat::Json)
            };
            (
                format!("/model/{}/{op}", encode_segment(t.upstream_model)),
                bedrock_body(body, &obj, beta, b""),
                Vec::new(),
                answer,
            )
        }
        Dialect::VertexAnthropic => {
            let (op, answer) = if stream {
                ("streamRawPredict", AnswerFormat::Sse)
            } else {
                ("rawPredict", AnswerFormat::Json)
            };
            (
                vertex_path(t, t.upstream_model, op)?,
                vertex_body(body, &obj, None),
                beta_header(beta),
                answer,
            )
        }
        other => return Err(not_messages(other, "the Messages API")),
    };
    Ok(UpstreamRequest {
        path,
        body,
        headers,
        answer,
        dropped: Vec::new(),
    })
}

fn not_messages(dialect: Dialect, what: &str) -> InvalidRequest {
    InvalidRequest::new(
        format!(
            "This model's provider API ({}) does not support {what}.",
            dialect.as_str()
        ),
        None,
    )
}

/// Builds the host request for `POST /v1/messages/count_tokens`. Hosts without a
/// count-tokens call get Err (the gateway estimates instead).
pub fn prepare_count_tokens(
    t: &Target<'_>,
    body: &[u8],
    beta: Option<&str>,
) -> Result<UpstreamRequest, InvalidRequest> {
    let obj = scan_object(body).ok_or_else(not_an_object)?;
    let (path, body, headers) = match t.dialect {
        Dialect::Anthropic => {
            let mut out = Vec::new();
            splice(
                body,
                &obj,
                b"",
                &[],
                Some(&json_string(t.upstream_model)),
                &mut out,
            );
            (
                "/v1/messages/count_tokens".to_owned(),
                out,
                anthropic_headers(t, beta),
            )
        }
        Dialect::BedrockAnthropic => {
            // The body is counted as InvokeModel would take it, and InvokeModel requires
            // `max_tokens` (count_tokens bodies have none; it does not change the count).
            let extra: &[u8] = if obj.has("max_tokens") {
                b""
            } else {
                br#""max_tokens":1"#
            };
            let invoke = bedrock_body(body, &obj, beta, extra);
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&invoke);
            let mut out = Vec::with_capacity(b64.len() + 40);
            out.extend_from_slice(br#"{"input":{"invokeModel":{"body":""#);
            out.extend_from_slice(b64.as_bytes());
            out.extend_from_slice(br#""}}}"#);
            (
                format!("/model/{}/count-tokens", encode_segment(t.upstream_model)),
                out,
                Vec::new(),
            )
        }
        Dialect::VertexAnthropic => (
            vertex_path(t, "count-tokens", "rawPredict")?,
            vertex_body(body, &obj, Some(t.upstream_model)),
            beta_header(beta),
        ),
        other => return Err(not_messages(other, "token counting")),
    };
    Ok(UpstreamRequest {
        path,
        body,
        headers,
        answer: AnswerFormat::Json,
        dropped: Vec::new(),
    })
}

/// Reads a count-tokens answer: `{"input_tokens":N}` (Anthropic, Vertex) or
/// `{"inputTokens":N}` (Bedrock CountTokens).
pub fn parse_count_tokens(t: &Target<'_>, body: &[u8]) -> Result<u64, BadAnswer> {
    #[derive(Deserialize)]
    struct Count {
        #[serde(default)]
        input_tokens: Option<u64>,
        #[serde(default, rename = "inputTokens")]
        bedrock: Option<u64>,
    }
    let c: Count = serde_json::from_slice(body)
        .map_err(|e| BadAnswer(format!("unreadable count_tokens answer: {e}")))?;
    let n = match t.dialect {
        Dialect::Anthropic | Dialect::VertexAnthropic => c.input_tokens,
        Dialect::BedrockAnthropic => c.bedrock,
        other => {
            return Err(BadAnswer(format!(
                "{} has no count_tokens answer",
                other.as_str()
            )))
        }
    };
    n.ok_or_else(|| BadAnswer("the count_tokens answer has no token count".into()))
}

// ---------------------------------------------------------------------------------------------
// Answers and errors
// ---------------------------------------------------------------------------------------------

/// A complete Messages answer for the client: every `model` value replaced by `client_model`
/// (added when the host left it out), every other byte unchanged; and its usage.
pub fn answer(body: &[u8], client_model: &str) -> Result<(Vec<u8>, Option<Usage>), BadAnswer> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| BadAnswer(format!("unreadable Messages answer: {e}")))?;
    let obj =
        scan_object(body).ok_or_else(|| BadAnswer("the answer is not a JSON object".into()))?;
    let model = json_string(client_model);
    let mut add = Vec::new();
    if !obj.has("model") {
        add.extend_from_slice(br#""model":"#);
        add.extend_from_slice(&model);
    }
    let mut out = Vec::new();
    splice(body, &obj, &add, &[], Some(&model), &mut out);
    let usage = obj
        .get("usage")
        .and_then(|r| serde_json::from_slice::<UsageIn>(&body[r]).ok())
        .and_then(|u| {
            let mut tokens = Tokens::default();
            tokens.absorb(&u);
            tokens.usage()
        });
    Ok((out, usage))
}

/// The host's error body when it already is an Anthropic error envelope
/// (`{"type":"error","error":{"type":…,"message":…}}`), unchanged; None otherwise.
pub fn error(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(rename = "error", borrow)]
        _error: Inner<'a>,
    }
    /// Both fields must be strings; their values are not needed.
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(rename = "type", borrow)]
        _kind: Cow<'a, str>,
        #[serde(rename = "message", borrow)]
        _message: Cow<'a, str>,
    }
    let e: Envelope<'_> = serde_json::from_slice(body).ok()?;
    (e.kind == "error").then(|| body.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// Appends `event: <name>\ndata: <data>\n\n`.
fn write_event(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
    out.reserve(name.len() + data.len() + 17);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Appends an Anthropic `error` event.
fn write_error(out: &mut Vec<u8>, kind: &str, message: &str) {
    out.extend_from_slice(
        br#"event: error
data: {"type":"error","error":{"type":"#,
    );
    out.extend_from_slice(&json_string(kind));
    out.extend_from_slice(br#","message":"#);
    out.extend_from_slice(&json_string(message));
    out.extend_from_slice(b"}}\n\n");
}

/// `data` as one SSE line: line breaks become spaces (in JSON they can only be whitespace
/// between tokens; a raw line break inside a string is not JSON).
fn one_line(data: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'\n', b'\r', data).is_none() {
        return Cow::Borrowed(data);
    }
    Cow::Owned(
        data.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect(),
    )
}

/// The `type` of an event's JSON: read from the compact prefix Anthropic writes, else parsed.
fn event_type(json: &[u8]) -> Option<Cow<'_, [u8]>> {
    if let Some(rest) = json.strip_prefix(br#"{"type":""#) {
        if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
            if rest[end] == b'"' {
                return Some(Cow::Borrowed(&rest[..end]));
            }
        }
    }
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let t: Typed<'_> = serde_json::from_slice(json).ok()?;
    Some(match t.kind {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    })
}

/// The Anthropic error type for a Bedrock stream exception.
fn anthropic_type_for_exception(kind: &str) -> &'static str {
    match bedrock_exception_status(kind) {
        400 => "invalid_request_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The event relay behind both framings: what the client has been sent and the usage seen.
struct Relay {
    /// The client's model name as a JSON string.
    model: Vec<u8>,
    tokens: Tokens,
    end: Option<StreamEnd>,
}

impl Relay {
    fn new(client_model: &str) -> Self {
        Relay {
            model: json_string(client_model),
            tokens: Tokens::default(),
            end: None,
        }
    }

    /// One Anthropic event (`name` from the SSE `event:` line or the JSON's `type`).
    fn on_event(&mut self, name: &[u8], data: &[u8], bedrock: bool, out: &mut Vec<u8>) {
        if self.end.is_some() {
            return;
        }
        let data = one_line(data);
        let name = one_line(name);
        match &*name {
            b"message_start" => self.message_start(&data, out),
            b"message_delta" => {
                #[derive(Deserialize)]
                struct MessageDelta {
                    #[serde(default)]
                    usage: Option<UsageIn>,
                }
                if let Ok(MessageDelta { usage: Some(u) }) = serde_json::from_slice(&data) {
                    self.tokens.absorb(&u);
                }
                write_event(out, &name, &data);
            }
            b"message_stop" => {
                if bedrock {
                    self.bedrock_stop(&data, out);
                } else {
                    write_event(out, &name, &data);
                }
                self.end = Some(StreamEnd::Complete);
            }
            b"error" => self.error_event(&data, out),
            _ => write_event(out, &name, &data),
        }
    }

    /// `message_start`: `message.model` becomes the client's model; usage read.
    fn message_start(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(top) = scan_object(data) else {
            return self.unreadable(out);
        };
        let Some(r) = top.get("message") else {
            return self.unreadable(out);
        };
        let inner = &data[r.clone()];
        let Some(message) = scan_object(inner) else {
            return self.unreadable(out);
        };
        if let Some(u) = message
            .get("usage")
            .and_then(|u| serde_json::from_slice::<UsageIn>(&inner[u]).ok())
        {
            self.tokens.absorb(&u);
        }
        let mut add = Vec::new();
        if !message.has("model") {
            add.extend_from_slice(br#""model":"#);
            add.extend_from_slice(&self.model);
        }
        out.extend_from_slice(b"event: message_start\ndata: ");
        out.extend_from_slice(&data[..r.start]);
        splice(inner, &message, &add, &[], Some(&self.model), out);
        out.extend_from_slice(&data[r.end..]);
        out.extend_from_slice(b"\n\n");
    }

    /// Bedrock's last event: its `amazon-bedrock-invocationMetrics` key is not Anthropic's
    /// (its counts fill in usage the events did not report).
    fn bedrock_stop(&mut self, data: &[u8], out: &mut Vec<u8>) {
        const METRICS: &str = "amazon-bedrock-invocationMetrics";
        let Some(obj) = scan_object(data) else {
            return write_event(out, b"message_stop", data);
        };
        #[derive(Deserialize)]
        struct Metrics {
            #[serde(rename = "inputTokenCount", default)]
            input: Option<u64>,
            #[serde(rename = "outputTokenCount", default)]
            output: Option<u64>,
        }
        if let Some(m) = obj
            .get(METRICS)
            .and_then(|r| serde_json::from_slice::<Metrics>(&data[r]).ok())
        {
            self.tokens.input = self.tokens.input.or(m.input);
            self.tokens.output = self.tokens.output.or(m.output);
        }
        out.extend_from_slice(b"event: message_stop\ndata: ");
        splice(data, &obj, b"", &[METRICS], None, out);
        out.extend_from_slice(b"\n\n");
    }

    /// An `error` event from the host: relayed when it is an Anthropic error, else replaced
    /// by one (`api_error` with the host's text).
    fn error_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // Error events are rare: a full parse checks the envelope is an object holding an
        // `error` object.
        let parsed = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data);
        let error = parsed
            .as_ref()
            .ok()
            .and_then(|top| top.get("error"))
            .and_then(|e| e.as_object());
        match error {
            Some(e) => {
                write_event(out, b"error", data);
                let message = e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("The provider reported an error mid-stream.");
                self.end = Some(StreamEnd::ProviderError(message.to_owned()));
            }
            None => {
                let message = String::from_utf8_lossy(data).into_owned();
                write_error(out, "api_error", &message);
                self.end = Some(StreamEnd::ProviderError(message));
            }
        }
    }

    /// A platform error (Bedrock exception frame) as an Anthropic `error` event.
    fn platform_error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.end.is_none() {
            write_error(out, anthropic_type_for_exception(kind), message);
            self.end = Some(StreamEnd::ProviderError(message.to_owned()));
        }
    }

    fn unreadable(&mut self, out: &mut Vec<u8>) {
        self.truncate(out, UNREADABLE);
    }

    fn truncate(&mut self, out: &mut Vec<u8>, message: &str) {
        if self.end.is_none() {
            write_error(out, "api_error", message);
            self.end = Some(StreamEnd::Truncated);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        self.truncate(out, TRUNCATED);
        self.end.clone().unwrap_or(StreamEnd::Truncated)
    }
}

/// A complete event at the start of `buf` framed exactly as the client gets it
/// (`event: <name>\ndata: <data>\n\n`, LF only, name and data not blank): its length and name.
/// None for any other framing, or when `buf` ends first.
fn canonical_event(buf: &[u8]) -> Option<(usize, &[u8])> {
    let rest = buf.strip_prefix(b"event: ")?;
    let first = memchr::memchr2(b'\n', b'\r', rest)?;
    let data = rest[first..].strip_prefix(b"\ndata: ")?;
    let second = memchr::memchr2(b'\n', b'\r', data)?;
    let name = &rest[..first];
    let blank = data.get(second..second + 2)? == b"\n\n";
    let len = 7 + first + 7 + second + 2;
    (blank && !name.is_empty() && !data[..second].iter().all(u8::is_ascii_whitespace))
        .then_some((len, name))
}

/// Anthropic and Vertex: SSE in, SSE out.
struct SseRelay {
    framer: SseFramer,
    relay: Relay,
}

impl SseRelay {
    /// Nearly every event is framed as the client gets it: forwarded as it is unless its
    /// name is one the relay reads (returns false then).
    fn on_canonical(raw: &[u8], name: &[u8], out: &mut Vec<u8>) -> bool {
        if matches!(
            name,
            b"message_start" | b"message_delta" | b"message_stop" | b"error"
        ) {
            return false;
        }
        out.extend_from_slice(raw);
        true
    }

    fn on_raw(relay: &mut Relay, raw: &[u8], out: &mut Vec<u8>) {
        if relay.end.is_some() {
            return;
        }
        if let Some((len, name)) = canonical_event(raw) {
            if len == raw.len() && Self::on_canonical(raw, name, out) {
                return;
            }
        }
        let ev = parse_event(raw);
        if !ev.has_data || ev.data.iter().all(u8::is_ascii_whitespace) {
            return; // comments, keep-alives
        }
        match ev.event {
            Some(name) if !name.is_empty() => relay.on_event(name, &ev.data, false, out),
            // No `event:` line: named by the JSON's type; anonymous unreadable data is
            // dropped, as the Anthropic SDKs drop it.
            _ => {
                if let Some(kind) = event_type(&ev.data) {
                    relay.on_event(&kind, &ev.data, false, out);
                }
            }
        }
    }
}

impl StreamTranslator for SseRelay {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.relay.end.is_some() {
            return;
        }
        let mut chunk = chunk;
        if self.framer.pending().is_empty() {
            // Canonical events straight from the chunk, without the framer's buffer; the
            // framer takes over from the first other or incomplete one (same boundaries).
            while let Some((len, name)) = canonical_event(chunk) {
                if self.relay.end.is_some() {
                    return;
                }
                let raw = &chunk[..len];
                if !Self::on_canonical(raw, name, out) {
                    Self::on_raw(&mut self.relay, raw, out);
                }
                chunk = &chunk[len..];
            }
            if chunk.is_empty() || self.relay.end.is_some() {
                return;
            }
        }
        let relay = &mut self.relay;
        self.framer.feed(chunk, |raw| Self::on_raw(relay, raw, out));
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        let rest = self.framer.take_rest();
        if !rest.is_empty() {
            // A last event without its blank line.
            Self::on_raw(&mut self.relay, &rest, out);
        }
        self.relay.finish(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.relay.tokens.usage()
    }

    fn ended(&self) -> bool {
        self.relay.end.is_some()
    }
}

/// Bedrock InvokeModelWithResponseStream: eventstream `chunk` frames around Anthropic events.
struct BedrockRelay {
    decoder: Decoder,
    relay: Relay,
    /// Decoded chunk bytes, reused from event to event.
    scratch: Vec<u8>,
}

impl BedrockRelay {
    fn on_frame(relay: &mut Relay, scratch: &mut Vec<u8>, frame: &Frame<'_>, out: &mut Vec<u8>) {
        if relay.end.is_some() {
            return;
        }
        match frame.message_type() {
            Some("event") => {
                if frame.event_type() != Some("chunk") {
                    return;
                }
                let Some(json) = decode_chunk(frame.payload, scratch) else {
                    return relay.unreadable(out);
                };
                let json: &[u8] = &json;
                match event_type(json) {
                    Some(kind) => relay.on_event(&kind, json, true, out),
                    None => relay.unreadable(out),
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
                    .unwrap_or(kind);
                relay.platform_error(kind, message, out);
            }
            Some("error") => {
                let code = frame.str_header(":error-code").unwrap_or("error");
                let message = frame
                    .str_header(":error-message")
                    .unwrap_or("The provider reported an error mid-stream.");
                relay.platform_error(code, message, out);
            }
            _ => {}
        }
    }
}

impl StreamTranslator for BedrockRelay {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.relay.end.is_some() {
            return;
        }
        let (relay, scratch) = (&mut self.relay, &mut self.scratch);
        let decoded = self
            .decoder
            .feed(chunk, |frame| Self::on_frame(relay, scratch, frame, out));
        if decoded.is_err() {
            // A bad checksum or length: nothing after it can be trusted.
            self.relay.truncate(out, CORRUPT);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        self.relay.finish(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.relay.tokens.usage()
    }

    fn ended(&self) -> bool {
        self.relay.end.is_some()
    }
}

/// The relay of a Messages stream from `t`'s host to the client, as Anthropic SSE.
pub fn stream(t: &Target<'_>, client_model: &str) -> Box<dyn StreamTranslator> {
    match t.dialect {
        Dialect::BedrockAnthropic => Box::new(BedrockRelay {
            decoder: Decoder::new(),
            relay: Relay::new(client_model),
            scratch: Vec::new(),
        }),
        _ => Box::new(SseRelay {
            framer: SseFramer::new(),
            relay: Relay::new(client_model),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{encode_event, encode_message, HeaderValue};
    use crate::translate::testing::every_split;
    use serde_json::{json, Value};

    fn target(dialect: Dialect, model: &'static str) -> Target<'static> {
        Target {
            dialect,
            upstream_model: model,
            project: Some("proj-1"),
            location: Some("us-east5"),
            api_version: None,
        }
    }

    /// A coding agent's request: long system blocks with cache_control, 32 tools with nested
    /// schemas, thinking, metadata, unknown fields, odd spacing and number formatting, and
    /// `model` / `stream` in the middle.
    fn agent_body() -> String {
        let mut tools = Vec::new();
        for i in 0..32 {
            tools.push(format!(
                r#"{{"name":"tool_{i}","description":"Does thing {i} \u00e9\n","input_schema":{{"type":"object","properties":{{"path":{{"type":"string","description":"a \"quoted\" path {{not a brace}}"}},"opts":{{"type":"object","properties":{{"depth":{{"type":"integer","minimum":0,"maximum":1E+3}},"ratio":{{"type":"number","default":1.50}}}},"required":["depth"]}},"list":{{"type":"array","items":{{"type":"array","items":[{{"const":"]"}}]}}}}}},"required":["path"],"additionalProperties":false}}{}}}"#,
                if i % 8 == 7 { r#","cache_control":{"type":"ephemeral"}"# } else { "" }
            ));
        }
        format!(
            concat!(
                "{{\n  \"max_tokens\" : 32000,\n",
                "  \"system\": [ {{\"type\":\"text\",\"text\":\"{sys}\",\"cache_control\":{{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}}} ],\n",
                "  \"model\" : \"my-claude\",\n",
                "  \"messages\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"text\",\"text\":\"fix {{the}} bug\"}}]}},",
                "{{\"role\":\"assistant\",\"content\":[{{\"type\":\"thinking\",\"thinking\":\"hmm\",\"signature\":\"EqQBCkYIBxgCKkD+/==\"}},",
                "{{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"tool_3\",\"input\":{{\"path\":\"a\\\\b\"}}}}]}}],\n",
                "  \"tools\": [{tools}],\n",
                "  \"thinking\": {{\"type\":\"enabled\",\"budget_tokens\":1.6e4}},\n",
                "  \"stream\":true,\n",
                "  \"temperature\": -0.0, \"top_k\": 12345678901234567890123,\n",
                "  \"metadata\":{{\"user_id\":\"user_abc\"}},\n",
                "  \"x-future-field\": {{\"nested\": [1, 2.000, null, false]}}\n}}\n"
            ),
            sys = "You are a coding agent. ".repeat(400),
            tools = tools.join(",\n    ")
        )
    }

    fn prepared(dialect: Dialect, body: &str, stream: bool, beta: Option<&str>) -> UpstreamRequest {
        prepare(
            &target(dialect, "claude-up@2025"),
            body.as_bytes(),
            stream,
            beta,
        )
        .unwrap()
    }

    #[test]
    fn agent_body_reaches_each_host_byte_for_byte() {
        let body = agent_body();
        let original: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body.matches("\"my-claude\"").count(), 1);

        // Anthropic: only the model's value changes.
        let up = prepared(Dialect::Anthropic, &body, true, None);
        assert_eq!(
            String::from_utf8(up.body).unwrap(),
            body.replace("\"my-claude\"", "\"claude-up@2025\"")
        );
        assert_eq!(up.path, "/v1/messages");
        assert_eq!(up.answer, AnswerFormat::Sse);
        assert_eq!(
            up.headers,
            vec![("anthropic-version", "2023-06-01".to_owned())]
        );
        assert!(up.dropped.is_empty());

        // Bedrock: model and stream gone, version first, nothing else touched.
        let up = prepared(Dialect::BedrockAnthropic, &body, true, None);
        let expected = format!(
            "{{\"anthropic_version\":\"bedrock-2023-05-31\",{}",
            &body[1..]
        )
        .replace(",\n  \"model\" : \"my-claude\"", "")
        .replace(",\n  \"stream\":true", "");
        assert_eq!(String::from_utf8(up.body.clone()).unwrap(), expected);
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        let mut want = original.clone();
        want.as_object_mut().unwrap().remove("model");
        want.as_object_mut().unwrap().remove("stream");
        want["anthropic_version"] = json!("bedrock-2023-05-31");
        assert_eq!(v, want);
        assert_eq!(up.answer, AnswerFormat::EventStream);
        assert!(up.headers.is_empty());

        // Vertex: model gone, stream kept, version first.
        let up = prepared(Dialect::VertexAnthropic, &body, false, None);
        let expected = format!(
            "{{\"anthropic_version\":\"vertex-2023-10-16\",{}",
            &body[1..]
        )
        .replace(",\n  \"model\" : \"my-claude\"", "");
        assert_eq!(String::from_utf8(up.body).unwrap(), expected);
        assert_eq!(up.answer, AnswerFormat::Json);
        assert_eq!(
            up.path,
            "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-up@2025:rawPredict"
        );
    }

    #[test]
    fn members_at_either_end_and_escaped_keys() {
        let cases = [
            (
                r#"{"model":"m","a":1,"stream":false}"#,
                r#"{"anthropic_version":"bedrock-2023-05-31","a":1}"#,
            ),
            (
                r#" { "model" : "m" , "stream" : true } "#,
                r#" {"anthropic_version":"bedrock-2023-05-31" } "#,
            ),
            (r#"{}"#, r#"{"anthropic_version":"bedrock-2023-05-31"}"#),
            (
                r#"{"mod\u0065l":"m","b":[],"model":"n"}"#,
                r#"{"anthropic_version":"bedrock-2023-05-31","b":[]}"#,
            ),
            (
                r#"{"anthropic_version":"bedrock-2099","model":"m","c":"}"}"#,
                r#"{"anthropic_version":"bedrock-2099","c":"}"}"#,
            ),
        ];
        for (body, want) in cases {
            let up = prepared(Dialect::BedrockAnthropic, body, false, None);
            assert_eq!(String::from_utf8(up.body.clone()).unwrap(), want, "{body}");
            assert_eq!(up.answer, AnswerFormat::Json);
            serde_json::from_slice::<Value>(&up.body).unwrap();
        }
        // Every `model` value is replaced for Anthropic (a JSON map keeps the last one).
        let up = prepared(
            Dialect::Anthropic,
            r#"{"model":"a","model" :"b"}"#,
            false,
            None,
        );
        assert_eq!(
            up.body,
            br#"{"model":"claude-up@2025","model" :"claude-up@2025"}"#
        );
        for bad in ["[1]", "", "{\"a\":1", "{\"a\" 1}", "{\"a\":1}x"] {
            assert!(prepare(
                &target(Dialect::Anthropic, "m"),
                bad.as_bytes(),
                false,
                None
            )
            .is_err());
        }
        for d in [
            Dialect::OpenAi,
            Dialect::BedrockConverse,
            Dialect::VertexGemini,
        ] {
            assert!(prepare(&target(d, "m"), b"{}", false, None).is_err());
        }
    }

    #[test]
    fn beta_header_and_body() {
        let body = r#"{"model":"m","max_tokens":5}"#;
        let up = prepare(
            &Target {
                api_version: Some("2024-01-01"),
                ..target(Dialect::Anthropic, "up")
            },
            body.as_bytes(),
            false,
            Some("interleaved-thinking-2025-05-14, context-1m-2025-08-07"),
        )
        .unwrap();
        assert_eq!(
            up.headers,
            vec![
                ("anthropic-version", "2024-01-01".to_owned()),
                (
                    "anthropic-beta",
                    "interleaved-thinking-2025-05-14, context-1m-2025-08-07".to_owned()
                )
            ]
        );
        let up = prepared(Dialect::BedrockAnthropic, body, true, Some(" a ,b,,"));
        assert_eq!(
            up.body,
            br#"{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a","b"],"max_tokens":5}"#
        );
        assert!(up.headers.is_empty());
        // The caller's own array wins; an empty header adds nothing.
        let up = prepared(
            Dialect::BedrockAnthropic,
            r#"{"anthropic_beta":["x"],"model":"m"}"#,
            true,
            Some("a"),
        );
        assert_eq!(
            up.body,
            br#"{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["x"]}"#
        );
        let up = prepared(Dialect::BedrockAnthropic, body, true, Some(" , "));
        assert!(!String::from_utf8(up.body)
            .unwrap()
            .contains("anthropic_beta"));
        let up = prepared(Dialect::VertexAnthropic, body, true, Some("a,b"));
        assert_eq!(up.headers, vec![("anthropic-beta", "a,b".to_owned())]);
        assert_eq!(
            up.body,
            br#"{"anthropic_version":"vertex-2023-10-16","max_tokens":5}"#
        );
    }

    #[test]
    fn bedrock_and_vertex_paths() {
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0";
        let t = target(Dialect::BedrockAnthropic, arn);
        let enc = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-20250514-v1%3A0";
        assert_eq!(
            prepare(&t, b"{}", false, None).unwrap().path,
            format!("/model/{enc}/invoke")
        );
        assert_eq!(
            prepare(&t, b"{}", true, None).unwrap().path,
            format!("/model/{enc}/invoke-with-response-stream")
        );
        let t = target(Dialect::VertexAnthropic, "claude-opus-4@20250514");
        let up = prepare(&t, b"{\"stream\":true}", true, None).unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-opus-4@20250514:streamRawPredict"
        );
        assert_eq!(up.answer, AnswerFormat::Sse);
        assert_eq!(
            up.body,
            br#"{"anthropic_version":"vertex-2023-10-16","stream":true}"#
        );
        for (project, location, named) in [
            (None, Some("l"), "`project`"),
            (Some("p"), Some(""), "`location`"),
            (None, None, "`project` and `location`"),
        ] {
            let t = Target {
                project,
                location,
                ..target(Dialect::VertexAnthropic, "m")
            };
            let e = prepare(&t, b"{}", false, None).unwrap_err();
            assert!(e.message.ends_with(&format!("{named}.")), "{}", e.message);
            assert!(prepare_count_tokens(&t, b"{}", None).is_err());
        }
    }

    #[test]
    fn answers_get_the_client_model_and_usage() {
        let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"thinking","thinking":"x","signature":"c2ln"},{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"output_tokens":7,"service_tier":"standard"}}"#;
        let (out, usage) = answer(body, "my-claude").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8_lossy(body).replace("claude-sonnet-4-20250514", "my-claude")
        );
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3210, 7, 3217)
        );
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (3000, 200));

        // No model from the host: added; no usage: None.
        let (out, usage) = answer(b" {\"content\":[]} ", "m\"x").unwrap();
        assert_eq!(out, br#" {"model":"m\"x","content":[]} "#);
        assert_eq!(usage, None);
        for bad in [&b"nope"[..], b"[]", b"{\"a\":}", b""] {
            assert!(answer(bad, "m").is_err());
        }
    }

    #[test]
    fn anthropic_error_envelopes_pass_through() {
        let e = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
        assert_eq!(error(e).as_deref(), Some(&e[..]));
        for other in [
            &br#"{"message":"The security token included in the request is invalid."}"#[..],
            br#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}"#,
            br#"{"type":"error","error":{"type":"x"}}"#,
            br#"{"type":"message","error":{"type":"x","message":"m"}}"#,
            b"<html>",
        ] {
            assert_eq!(error(other), None);
        }
    }

    #[test]
    fn count_tokens_shapes() {
        let body =
            br#"{"model":"my-claude","messages":[{"role":"user","content":"hi"}],"system":"s"}"#;
        let up = prepare_count_tokens(&target(Dialect::Anthropic, "up"), body, Some("b1")).unwrap();
        assert_eq!(up.path, "/v1/messages/count_tokens");
        assert_eq!(
            up.body,
            br#"{"model":"up","messages":[{"role":"user","content":"hi"}],"system":"s"}"#
        );
        assert_eq!(up.headers[1], ("anthropic-beta", "b1".to_owned()));

        let up = prepare_count_tokens(
            &target(
                Dialect::BedrockAnthropic,
                "anthropic.claude-haiku-4-5-20251001-v1:0",
            ),
            body,
            Some("b1,b2"),
        )
        .unwrap();
        assert_eq!(
            up.path,
            "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/count-tokens"
        );
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        let b64 = v["input"]["invokeModel"]["body"].as_str().unwrap();
        use base64::Engine as _;
        let inner = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(
            String::from_utf8(inner).unwrap(),
            r#"{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["b1","b2"],"max_tokens":1,"messages":[{"role":"user","content":"hi"}],"system":"s"}"#
        );
        assert_eq!(v.as_object().unwrap().len(), 1);

        let up = prepare_count_tokens(
            &target(Dialect::VertexAnthropic, "claude-haiku-4-5@20251001"),
            body,
            None,
        )
        .unwrap();
        assert_eq!(
            up.path,
            "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
        );
        assert_eq!(
            up.body,
            br#"{"anthropic_version":"vertex-2023-10-16","model":"claude-haiku-4-5@20251001","messages":[{"role":"user","content":"hi"}],"system":"s"}"#
        );
        assert!(up.headers.is_empty());
        assert!(prepare_count_tokens(&target(Dialect::Watsonx, "m"), body, None).is_err());

        let t = |d| target(d, "m");
        assert_eq!(
            parse_count_tokens(&t(Dialect::Anthropic), br#"{"input_tokens":42}"#),
            Ok(42)
        );
        assert_eq!(
            parse_count_tokens(&t(Dialect::VertexAnthropic), br#"{"input_tokens":7}"#),
            Ok(7)
        );
        assert_eq!(
            parse_count_tokens(&t(Dialect::BedrockAnthropic), br#"{"inputTokens":9}"#),
            Ok(9)
        );
        assert!(
            parse_count_tokens(&t(Dialect::BedrockAnthropic), br#"{"input_tokens":9}"#).is_err()
        );
        assert!(parse_count_tokens(&t(Dialect::Anthropic), b"{}").is_err());
        assert!(parse_count_tokens(&t(Dialect::Anthropic), b"x").is_err());
        assert!(parse_count_tokens(&t(Dialect::Watsonx), br#"{"input_tokens":1}"#).is_err());
    }

    // ---- streams ----------------------------------------------------------------------------

    /// A thinking answer with two parallel tool calls, as the Anthropic API streams it.
    const EVENTS: [&str; 17] = [
        r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
        r#"{"type": "ping"}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two files \u00e9 \"x\"."}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds=="}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"read","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"path\": \"a.rs\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"read","input":{}}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"path\""}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":": \"b.rs\"}"}}"#,
        r#"{"type":"content_block_stop","index":2}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":87}}"#,
        r#"{"type":"message_stop"}"#,
        // After the end: ignored.
        r#"{"type":"content_block_delta","index":9,"delta":{"type":"text_delta","text":"late"}}"#,
    ];

    fn name_of(json: &str) -> String {
        serde_json::from_str::<Value>(json).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn sse(events: &[&str], line_end: &str) -> Vec<u8> {
        let mut out = String::new();
        for e in events {
            out.push_str(&format!(
                "event: {}{line_end}data: {e}{line_end}{line_end}",
                name_of(e)
            ));
        }
        out.into_bytes()
    }

    /// What the client must get for `events`: the same SSE with the client's model.
    fn expected(events: &[&str]) -> Vec<u8> {
        let out = String::from_utf8(sse(events, "\n")).unwrap();
        out.replacen("claude-sonnet-4-20250514", "my-claude", 1)
            .into_bytes()
    }

    fn full_usage() -> Usage {
        let mut u = Usage::new(2112, 87);
        u.cached_tokens = 2000;
        u.cache_write_tokens = 100;
        u
    }

    #[test]
    fn sse_is_relayed_with_only_the_model_changed() {
        for d in [Dialect::Anthropic, Dialect::VertexAnthropic] {
            let t = target(d, "up");
            let mut input = b": keep-alive\n\n".to_vec();
            input.extend(sse(&EVENTS, "\n"));
            let (out, end, usage) = every_split(|| stream(&t, "my-claude"), &input);
            assert_eq!(end, StreamEnd::Complete);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected(&EVENTS[..16])).unwrap()
            );
            assert_eq!(usage, Some(full_usage()));
        }
        // CRLF framing, multi-line data and events without a name come out canonical.
        let t = target(Dialect::VertexAnthropic, "up");
        let mut input = sse(&EVENTS[..2], "\r\n");
        input.extend(b"data: {\"type\":\"content_block_start\",\"index\":0,\ndata: \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        input.extend(b"data: {\"type\":\"message_stop\"}");
        let (out, end, _) = every_split(|| stream(&t, "my-claude"), &input);
        assert_eq!(end, StreamEnd::Complete);
        let mut want = expected(&EVENTS[..2]);
        want.extend(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0, \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        want.extend(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn sse_errors_and_truncation() {
        let t = target(Dialect::Anthropic, "up");
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let mut input = sse(&EVENTS[..4], "\n");
        input.extend(sse(&[err], "\n"));
        input.extend(sse(&EVENTS[4..], "\n"));
        let (out, end, usage) = every_split(|| stream(&t, "my-claude"), &input);
        assert_eq!(end, StreamEnd::ProviderError("Overloaded".into()));
        let mut want = expected(&EVENTS[..4]);
        want.extend(sse(&[err], "\n"));
        assert_eq!(out, want);
        assert_eq!(usage.map(|u| u.prompt_tokens), Some(2112));

        // A non-JSON error event becomes an Anthropic api_error.
        let (out, end, _) = every_split(
            || stream(&t, "m"),
            b"event: error\ndata: upstream fell over\n\n",
        );
        assert_eq!(end, StreamEnd::ProviderError("upstream fell over".into()));
        assert_eq!(
            out,
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream fell over\"}}\n\n"
        );

        // EOF before message_stop (between events and inside one).
        let input = sse(&EVENTS[..15], "\n");
        for cut in [input.len(), input.len() - 7] {
            let (out, end, _) = every_split(|| stream(&t, "my-claude"), &input[..cut]);
            assert_eq!(end, StreamEnd::Truncated);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The provider's stream ended before the answer was complete.\"}}\n\n"
            ), "{text}");
        }
        // An unreadable message_start cannot be relayed with the client's model.
        let (out, end, _) = every_split(
            || stream(&t, "m"),
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":\n\n",
        );
        assert_eq!(end, StreamEnd::Truncated);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("could not be read"));
    }

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

    const BEDROCK_STOP: &str = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":87,"invocationLatency":300,"firstByteLatency":100}}"#;

    #[test]
    fn bedrock_eventstream_becomes_anthropic_sse() {
        let t = target(
            Dialect::BedrockAnthropic,
            "anthropic.claude-sonnet-4-20250514-v1:0",
        );
        let mut events: Vec<&str> = EVENTS[..15].to_vec();
        events.push(BEDROCK_STOP);
        let mut input = bedrock(&events);
        input.extend(encode_event("unknown", b"{}"));
        let (out, end, usage) = every_split(|| stream(&t, "my-claude"), &input);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(expected(&EVENTS[..16])).unwrap()
        );
        assert_eq!(usage, Some(full_usage()));

        // Usage from the invocation metrics when the events carry none.
        let input = bedrock(&[
            r#"{"type":"message_start","message":{"id":"m","content":[]}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":5,"outputTokenCount":6}, "x":1}"#,
        ]);
        let (out, end, usage) = every_split(|| stream(&t, "my-claude"), &input);
        assert_eq!((end, usage), (StreamEnd::Complete, Some(Usage::new(5, 6))));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"my-claude\",\"id\":\"m\",\"content\":[]}}\n\n"), "{text}");
        assert!(
            text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\", \"x\":1}\n\n"),
            "{text}"
        );
    }

    #[test]
    fn bedrock_exceptions_truncation_and_corruption() {
        let t = target(Dialect::BedrockAnthropic, "m");
        for (kind, anthropic_type) in [
            ("throttlingException", "rate_limit_error"),
            ("modelStreamErrorException", "api_error"),
            ("validationException", "invalid_request_error"),
            ("internalServerException", "api_error"),
            ("serviceUnavailableException", "overloaded_error"),
            ("modelTimeoutException", "timeout_error"),
        ] {
            let mut input = bedrock(&EVENTS[..4]);
            input.extend(exception(
                kind,
                br#"{"message":"Something \"went\" wrong"}"#,
            ));
            input.extend(bedrock(&EVENTS[4..]));
            let (out, end, _) = every_split(|| stream(&t, "my-claude"), &input);
            assert_eq!(
                end,
                StreamEnd::ProviderError("Something \"went\" wrong".into())
            );
            let mut want = expected(&EVENTS[..4]);
            want.extend(format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{anthropic_type}\",\"message\":\"Something \\\"went\\\" wrong\"}}}}\n\n").as_bytes());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap(),
                "{kind}"
            );
        }
        // EOF between frames and inside a frame.
        let input = bedrock(&EVENTS[..15]);
        for cut in [input.len(), input.len() - 3] {
            let (out, end, _) = every_split(|| stream(&t, "my-claude"), &input[..cut]);
            assert_eq!(end, StreamEnd::Truncated);
            assert!(String::from_utf8(out)
                .unwrap()
                .ends_with("complete.\"}}\n\n"));
        }
        // A bad checksum.
        let mut input = bedrock(&EVENTS[..3]);
        let second = bedrock(&EVENTS[..1]).len() + 20;
        input[second] ^= 0x40;
        let (out, end, _) = every_split(|| stream(&t, "my-claude"), &input);
        assert_eq!(end, StreamEnd::Truncated);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\n"));
        assert!(
            text.ends_with("\"message\":\"The provider's stream was corrupt.\"}}\n\n"),
            "{text}"
        );
        // Undecodable chunk bytes.
        let (_, end, _) = every_split(
            || stream(&t, "m"),
            &encode_event("chunk", br#"{"bytes":"%%%"}"#),
        );
        assert_eq!(end, StreamEnd::Truncated);
    }

    #[test]
    fn ended_after_stop_or_error() {
        let t = target(Dialect::Anthropic, "up");
        let mut s = stream(&t, "m");
        let mut out = Vec::new();
        s.feed(&sse(&EVENTS[..15], "\n"), &mut out);
        assert!(!s.ended());
        s.feed(&sse(&EVENTS[15..16], "\n"), &mut out);
        assert!(s.ended());
        let len = out.len();
        s.feed(&sse(&EVENTS[16..], "\n"), &mut out);
        assert_eq!(out.len(), len);
        assert_eq!(s.finish(&mut out), StreamEnd::Complete);
        assert_eq!(out.len(), len);
    }

    /// The fuzz harness on the test streams, whole and with the damage a simple
    /// deterministic mutator does (truncation, bit flips, spliced garbage, removed bytes).
    #[test]
    fn fuzz_harness_on_mutated_streams() {
        let mut sse_input = sse(&EVENTS, "\n");
        sse_input.extend(sse(
            &[r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#],
            "\n",
        ));
        let mut events: Vec<&str> = EVENTS[..15].to_vec();
        events.push(BEDROCK_STOP);
        let mut bedrock_input = bedrock(&events);
        bedrock_input.extend(exception("throttlingException", b"{}"));
        let cases = [
            (Dialect::Anthropic, sse_input.clone()),
            (Dialect::VertexAnthropic, sse_input),
            (Dialect::BedrockAnthropic, bedrock_input),
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (dialect, input) in cases {
            let mut data = vec![0u8, 0u8];
            data.extend(&input);
            crate::fuzzing::messages_stream(dialect, &data);
            for _ in 0..300 {
                let mut m = input.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % m.len().max(1);
                    match next() % 4 {
                        0 => m.truncate(at),
                        1 if at < m.len() => m[at] ^= 1 << (next() % 8),
                        2 => {
                            m.splice(at..at, b"\"}{\n\n:".iter().copied());
                        }
                        _ if at < m.len() => {
                            m.remove(at);
                        }
                        _ => {}
                    }
                }
                // Random split points; checksums repaired (bit 7) half the time.
                let mut data = vec![(next() % 2 * 0x80) as u8, 3];
                data.extend((0..3).map(|_| (next() % 200) as u8));
                data.extend(&m);
                crate::fuzzing::messages_stream(dialect, &data);
            }
        }
    }

    /// The request/answer fuzz harness on the agent body and edge-case bodies, every selector.
    #[test]
    fn fuzz_harness_on_bodies() {
        let agent = agent_body();
        let bodies: [&[u8]; 9] = [
            agent.as_bytes(),
            b"{}",
            b" {\"model\":\"m\"} ",
            br#"{"stream":true,"model":"a","model":"b","anthropic_version":"x"}"#,
            br#"{"mod\u0065l":"m","a":{"model":"inner"},"b":["model"]}"#,
            br#"{"model":1e400}"#,
            b"[1,2]",
            b"{\"a\":",
            b"",
        ];
        for body in bodies {
            for sel in [0u8, 1, 2, 0x20, 0x21, 0x22, 0x40, 0x41, 0x42, 0x80, 0x81] {
                let mut data = vec![sel];
                data.extend_from_slice(body);
                crate::fuzzing::messages(&data);
            }
        }
    }
}
