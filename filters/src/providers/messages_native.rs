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

use crate::eventstream::{chunk_bytes, Decoder, Message as Frame};
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
fn bedrock_body(
    body: &[u8],
    obj: &Object<'_>,
    beta: Option<&str>,
    extra: &[u8],
) -> Vec<u8> {
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

/// The Vertex body: `model` removed unless `keep_model` (then replaced), `anthropic_version`
/// added unless present.
fn vertex_body(body: &[u8], obj: &Object<'_>, model: Option<&str>) -> Vec<u8> {
    let add: &[u8] = if obj.has("anthropic_version") {
        b""
    } else {
        br#""anthropic_version":"vertex-2023-10-16""#
    };
    debug_assert_eq!(VERTEX_VERSION, "vertex-2023-10-16");
    let mut out = Vec::new();
    match model {
        Some(m) => splice(body, obj, add, &[], Some(&json_string(m)), &mut out),
        None => splice(body, obj, add, &["model"], None, &mut out),
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
            ("/v1/messages".to_owned(), out, anthropic_headers(t, beta), answer)
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
    let obj = scan_object(body).ok_or_else(|| BadAnswer("the answer is not a JSON object".into()))?;
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
    out.extend_from_slice(br#"event: error
data: {"type":"error","error":{"type":"#);
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
        #[derive(Deserialize)]
        struct ErrorEvent<'a> {
            #[serde(borrow)]
            error: ErrorBody<'a>,
        }
        #[derive(Deserialize)]
        struct ErrorBody<'a> {
            #[serde(default, borrow, deserialize_with = "opt_cow")]
            message: Option<Cow<'a, str>>,
        }
        match serde_json::from_slice::<ErrorEvent<'_>>(data) {
            Ok(e) => {
                write_event(out, b"error", data);
                let message = e
                    .error
                    .message
                    .as_deref()
                    .unwrap_or("The provider reported an error mid-stream.");
                self.end = Some(StreamEnd::ProviderError(message.to_owned()));
            }
            Err(_) => {
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

/// Anthropic and Vertex: SSE in, SSE out.
struct SseRelay {
    framer: SseFramer,
    relay: Relay,
}

impl SseRelay {
    fn on_raw(relay: &mut Relay, raw: &[u8], out: &mut Vec<u8>) {
        if relay.end.is_some() {
            return;
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
                use base64::Engine as _;
                let b64 = frame
                    .payload
                    .strip_prefix(br#"{"bytes":""#)
                    .and_then(|p| p.strip_suffix(br#""}"#));
                scratch.clear();
                let fast = b64.is_some_and(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode_vec(b, scratch)
                        .is_ok()
                });
                let owned;
                let json: &[u8] = if fast {
                    scratch
                } else {
                    match chunk_bytes(frame.payload) {
                        Some(j) => {
                            owned = j;
                            &owned
                        }
                        None => return relay.unreadable(out),
                    }
                };
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
