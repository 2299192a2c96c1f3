//! The built-in `mock` provider: deterministic answers with no network, for demos, smoke
//! tests and load tests.
//!
//! Tokens are whitespace-separated words. A chat reply is
//! `This is a mock response from Switchyard. You said: <last user message>`, cut to
//! `max_tokens` words (finish_reason `length`). Streams send one chunk per word. Embeddings are
//! unit vectors derived from a hash of each input. A model named `mock-error-<status>` answers
//! that HTTP status with an OpenAI error body.
//!
//! Chat completions with `tools` answer with a tool call (arguments generated from the tool's
//! JSON schema by [`schema::instance`]) unless the last message is a tool result or
//! `tool_choice` is `"none"`; `response_format` `json_schema` / `json_object` answers a JSON
//! document; `n` gives that many choices. All deterministic.
//!
//! One request never costs more than a bounded answer: at most [`DEFAULT_MAX_TOKENS`] words
//! unless the request asks for another `max_tokens` (at most [`MAX_TOKENS`]), an echo of at most
//! [`MAX_ECHO_BYTES`] of the prompt (a longer one is cut: `finish_reason: length`), at most
//! [`MAX_EMBEDDING_FLOATS`] numbers of embeddings. A stream is a [`MockStream`] that renders
//! each event when it is sent, so no whole stream is ever held in memory. Reading the prompt
//! (counting its words) is one pass over it without copies.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::json_shape::Json;
use crate::openai::{error_body, Endpoint, ParsedRequest, Usage};
use crate::sse::write_data_event;

mod prompt;
pub mod schema;

const PREFIX: &str = "This is a mock response from Switchyard. You said:";
const DEFAULT_DIMENSIONS: usize = 16;
const MAX_DIMENSIONS: u64 = 8192;
/// Words in an answer when the request sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 256;
/// The most words an answer has, whatever `max_tokens` asks for.
pub const MAX_TOKENS: u64 = 4096;
/// The longest part of the prompt an answer repeats, in bytes.
pub const MAX_ECHO_BYTES: usize = 16 * 1024;
/// The most numbers one embeddings answer holds (inputs × dimensions; about 12 MB of JSON).
pub const MAX_EMBEDDING_FLOATS: usize = 1 << 20;
/// OpenAI's limit on `n`, the choices of one answer.
pub const MAX_CHOICES: u64 = 128;
/// Bytes of JSON content or tool-call arguments per stream event.
const FRAGMENT_BYTES: usize = 16;
/// OpenAI's limit on the inputs of one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// Everything the gateway needs to answer a request as the mock provider.
#[derive(Debug, Clone, PartialEq)]
pub struct MockReply {
    pub status: u16,
    pub retry_after: Option<u32>,
    pub content_type: &'static str,
    pub body: MockBody,
    pub usage: Option<Usage>,
}

/// A mock answer's body.
#[derive(Debug, Clone, PartialEq)]
pub enum MockBody {
    /// One JSON document.
    Full(Vec<u8>),
    /// SSE events, rendered one at a time.
    Stream(Box<MockStream>),
}

impl MockBody {
    /// The whole body at once (tests; a stream is rendered to the end).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            MockBody::Full(b) => b,
            MockBody::Stream(s) => s.flatten().collect(),
        }
    }
}

/// Answers `req` as the mock provider would, serving it as `upstream_model` (which decides
/// `mock-error-*` failures; the reply names the client's model). `created` is the Unix time
/// to stamp responses with.
pub fn respond(req: &ParsedRequest, upstream_model: &str, created: u64) -> MockReply {
    if let Some(status) = error_status(upstream_model) {
        return error_reply(status);
    }
    match req.endpoint {
        Endpoint::Embeddings => embeddings(req),
        Endpoint::ChatCompletions | Endpoint::Completions => text_reply(req, created),
        // Messages and Responses requests reach the mock in their OpenAI form (the gateway
        // encodes them with the OpenAI dialect and decodes the mock's answer the same way).
        Endpoint::Messages | Endpoint::CountTokens | Endpoint::Responses => error_reply(400),
    }
}

fn error_status(model: &str) -> Option<u16> {
    let status: u16 = model.strip_prefix("mock-error-")?.parse().ok()?;
    (400..=599).contains(&status).then_some(status)
}

fn error_reply(status: u16) -> MockReply {
    let (kind, code) = match status {
        401 => ("authentication_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    MockReply {
        status,
        retry_after: matches!(status, 429 | 503).then_some(1),
        content_type: "application/json",
        body: MockBody::Full(error_body(
            &format!("The mock provider was asked to fail with HTTP {status}."),
            kind,
            None,
            code,
        )),
        usage: None,
    }
}

fn bad_request(message: &str, param: &str) -> MockReply {
    MockReply {
        status: 400,
        retry_after: None,
        content_type: "application/json",
        body: MockBody::Full(error_body(
            message,
            "invalid_request_error",
            Some(param),
            None,
        )),
        usage: None,
    }
}

/// The number of whitespace-separated words of `text` (as `split_whitespace().count()`, in
/// one pass over the bytes: prompts may be megabytes).
fn words(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let (mut n, mut in_word, mut i) = (0, false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        let space = if b < 0x80 {
            i += 1;
            matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
        } else {
            let c = text[i..].chars().next().unwrap_or_default();
            i += c.len_utf8().max(1);
            c.is_whitespace()
        };
        if !space && !in_word {
            n += 1;
        }
        in_word = !space;
    }
    n
}

/// Text pieces joined by single spaces, kept up to `max` bytes (cut at a character boundary).
struct Echo {
    text: String,
    cut: bool,
}

impl Echo {
    fn new() -> Echo {
        Echo {
            text: String::new(),
            cut: false,
        }
    }

    /// Appends `piece`, after a space when there is text already (as `content_text` joins).
    fn push(&mut self, piece: &str) {
        if !self.text.is_empty() {
            self.push_str(" ");
        }
        self.push_str(piece);
    }

    fn push_str(&mut self, s: &str) {
        let room = MAX_ECHO_BYTES - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return;
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.cut = true;
    }
}

/// The prompt's word count, and the (bounded) text the reply echoes: the last user message
/// of a chat, the prompt of a completion. Read from the body one message at a time.
fn prompt_and_echo(req: &ParsedRequest) -> prompt::Tally {
    let mut tally = prompt::Tally::new();
    match req.endpoint {
        Endpoint::ChatCompletions => {
            if let Some(messages) = req.field("messages") {
                prompt::chat(messages, &mut tally);
            }
        }
        _ => {
            if let Some(p) = req.field("prompt") {
                prompt::completion(p, &mut tally);
            }
        }
    }
    tally
}

/// Field `name` as an unsigned integer, when it is one.
fn field_u64(req: &ParsedRequest, name: &str) -> Option<u64> {
    req.field(name).and_then(|v| serde_json::from_str(v).ok())
}

/// The answer's word limit: the request's `max_completion_tokens` or `max_tokens`, else
/// [`DEFAULT_MAX_TOKENS`]; never more than [`MAX_TOKENS`].
fn max_tokens(req: &ParsedRequest) -> u64 {
    field_u64(req, "max_completion_tokens")
        .or_else(|| field_u64(req, "max_tokens"))
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .min(MAX_TOKENS)
}

/// A short deterministic id derived from the request (its model, endpoint, limits, prompt
/// size and echo), so identical requests get identical ids; bounded work whatever the body.
fn mock_id(req: &ParsedRequest, prompt_words: u64, limit: u64, echo: &str) -> String {
    let mut h = fnv1a(0xcbf2_9ce4_8422_2325, req.summary.model.as_bytes());
    h = fnv1a(h, req.endpoint.as_str().as_bytes());
    for n in [prompt_words, limit, req.raw().len() as u64] {
        h = fnv1a(h, &n.to_le_bytes());
    }
    format!("{:016x}", fnv1a(h, echo.as_bytes()))
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a chat answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The echo, sent word by word.
    Words,
    /// A JSON document (`response_format`), sent in fragments.
    Json,
    /// A call of tool `name` (its arguments are the text), sent in fragments.
    Tool { call_id: String, name: String },
}

/// Field `name` parsed as a JSON value (tools, tool_choice, response_format are small).
fn field_value(req: &ParsedRequest, name: &str) -> Option<Value> {
    req.field(name)
        .and_then(|v| serde_json::from_str::<Value>(v).ok())
}

/// The tool to call, with its arguments, when `tools` and `tool_choice` ask for a call:
/// a named function, or `required`, or (`auto`) a last message from the user.
fn tool_call(req: &ParsedRequest, tally: &prompt::Tally) -> Option<(String, String)> {
    let tools = field_value(req, "tools")?;
    let tools = tools.as_array().filter(|t| !t.is_empty())?;
    let choice = field_value(req, "tool_choice").unwrap_or(Value::Null);
    let named = choice
        .pointer("/function/name")
        .or_else(|| choice.get("name"))
        .and_then(Value::as_str);
    let function = |t: &Value| t.get("function").cloned().unwrap_or(Value::Null);
    let chosen = match (named, choice.as_str()) {
        (_, Some("none")) => return None,
        (Some(name), _) => tools
            .iter()
            .map(function)
            .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| json!({ "name": name })),
        (None, Some("required")) => function(&tools[0]),
        _ if tally.last_is_user && !tally.last_is_tool => function(&tools[0]),
        _ => return None,
    };
    let name = chosen.get("name").and_then(Value::as_str)?.to_owned();
    let args = match chosen.get("parameters") {
        Some(p) => match schema::instance(p) {
            v @ Value::Object(_) => v,
            _ => json!({}),
        },
        None => json!({}),
    };
    Some((name, args.to_string()))
}

/// The JSON document `response_format` asks for, if it asks for one.
fn structured_content(req: &ParsedRequest, reply: &str) -> Option<String> {
    let format = field_value(req, "response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let schema = format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            Some(schema::instance(&schema).to_string())
        }
        "json_object" => {
            // A summary of the echo: its first few words.
            let answer = reply
                .split_whitespace()
                .take(32)
                .collect::<Vec<_>>()
                .join(" ");
            Some(json!({ "answer": answer }).to_string())
        }
        _ => None,
    }
}

fn text_reply(req: &ParsedRequest, created: u64) -> MockReply {
    let tally = prompt_and_echo(req);
    let (prompt_tokens, echo) = (tally.words, &tally.echo);
    let limit = max_tokens(req);
    let n = match req.field("n") {
        None | Some("null") => 1,
        Some(v) => match serde_json::from_str::<u64>(v) {
            Ok(n) if (1..=MAX_CHOICES).contains(&n) => n,
            _ => {
                return bad_request(
                    &format!("'n' must be an integer from 1 to {MAX_CHOICES}."),
                    "n",
                )
            }
        },
    };
    let chat = req.endpoint == Endpoint::ChatCompletions;
    let mut reply = format!("{PREFIX} {}", echo.text);
    let id = mock_id(req, prompt_tokens, limit, &echo.text);
    let mut kind = Kind::Words;
    if chat {
        if let Some((name, args)) = tool_call(req, &tally) {
            let call_id = format!(
                "call_{:016x}",
                fnv1a(fnv1a(0xcbf2_9ce4_8422_2325, id.as_bytes()), name.as_bytes())
            );
            kind = Kind::Tool { call_id, name };
            reply = args;
        } else if let Some(doc) = structured_content(req, &reply) {
            kind = Kind::Json;
            reply = doc;
        }
    }
    let all = words(&reply);
    let (emitted, finish) = match kind {
        Kind::Words => {
            let emitted = all.min(limit);
            let finish = if emitted < all || echo.cut {
                "length"
            } else {
                "stop"
            };
            (emitted, finish)
        }
        // JSON is never cut (it is bounded by the schema generator).
        Kind::Json => (all, "stop"),
        Kind::Tool { .. } => (all, "tool_calls"),
    };
    let usage = Usage::new(prompt_tokens, emitted * n);
    let model = req.summary.model.as_str();
    let id = if chat {
        format!("chatcmpl-mock-{id}")
    } else {
        format!("cmpl-mock-{id}")
    };

    if !req.summary.stream {
        let text = match kind {
            Kind::Words => reply
                .split_whitespace()
                .take(emitted as usize)
                .collect::<Vec<_>>()
                .join(" "),
            _ => reply,
        };
        let choices: Vec<Value> = (0..n)
            .map(|index| {
                if !chat {
                    return json!({"text": text, "index": index, "logprobs": null, "finish_reason": finish});
                }
                let message = match &kind {
                    Kind::Tool { call_id, name } => json!({
                        "role": "assistant", "content": null, "refusal": null,
                        "tool_calls": [{"id": call_id, "type": "function",
                                        "function": {"name": name, "arguments": text}}],
                    }),
                    _ => json!({"role": "assistant", "content": text, "refusal": null}),
                };
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
            })
            .collect();
        let body = if chat {
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": choices,
                "usage": usage, "system_fingerprint": "fp_switchyard_mock",
            })
        } else {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": choices,
                "usage": usage,
            })
        };
        return MockReply {
            status: 200,
            retry_after: None,
            content_type: "application/json",
            body: MockBody::Full(body.to_string().into_bytes()),
            usage: Some(usage),
        };
    }
    MockReply {
        status: 200,
        retry_after: None,
        content_type: "text/event-stream",
        body: MockBody::Stream(Box::new(MockStream {
            chat,
            id,
            created,
            model: model.to_owned(),
            with_usage: req.summary.client_wants_usage,
            text: reply,
            kind,
            n,
            choice: 0,
            pos: 0,
            emitted,
            left: emitted,
            first: true,
            finish,
            usage,
            next: Step::Role,
        })),
        usage: Some(usage),
    }
}

/// What a [`MockStream`] sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Words,
    Finish,
    Usage,
    Done,
    End,
}

/// A mock SSE answer, one event per [`Iterator::next`]: the role (chat), one event per word,
/// the finish reason, the usage (when asked for), `[DONE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MockStream {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    with_usage: bool,
    /// The whole (bounded) reply text (or JSON document, or tool-call arguments); words (or
    /// fragments) are cut from it as they are sent.
    text: String,
    kind: Kind,
    /// Choices to send (`n`), one after the other.
    n: u64,
    /// The index of the choice being sent.
    choice: u64,
    /// Words in each choice.
    emitted: u64,
    /// Byte offset in `text` of what is not sent yet.
    pos: usize,
    /// Words still to send.
    left: u64,
    first: bool,
    finish: &'static str,
    usage: Usage,
    next: Step,
}

impl MockStream {
    fn event(&self, choices: Value, usage: Option<&Usage>) -> Vec<u8> {
        let mut c = if self.chat {
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model, "system_fingerprint": "fp_switchyard_mock", "choices": choices})
        } else {
            json!({"id": self.id, "object": "text_completion", "created": self.created,
                   "model": self.model, "choices": choices})
        };
        if self.with_usage {
            c["usage"] = usage.map_or(Value::Null, |u| json!(u));
        }
        let mut out = Vec::new();
        write_data_event(&mut out, c.to_string().as_bytes());
        out
    }

    fn piece(&self, delta: Value, text: &str, finish: Option<&str>) -> Value {
        if self.chat {
            json!([{"index": self.choice, "delta": delta, "logprobs": null, "finish_reason": finish}])
        } else {
            json!([{"text": text, "index": self.choice, "logprobs": null, "finish_reason": finish}])
        }
    }

    /// The next fragment of at most [`FRAGMENT_BYTES`] (cut at a character boundary) of a
    /// JSON reply, advancing past it.
    fn next_fragment(&mut self) -> Option<String> {
        let rest = &self.text[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let mut end = FRAGMENT_BYTES.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        self.pos += end;
        Some(rest[..end].to_owned())
    }

    /// The next word of the reply, advancing past it.
    fn next_word(&mut self) -> Option<&str> {
        let rest = &self.text[self.pos..];
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let word = &rest[start..];
        let len = word.find(char::is_whitespace).unwrap_or(word.len());
        let from = self.pos + start;
        self.pos = from + len;
        Some(&self.text[from..from + len])
    }
}

impl Iterator for MockStream {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.next {
                Step::Role => {
                    self.next = Step::Words;
                    if self.chat {
                        let delta = match &self.kind {
                            Kind::Tool { call_id, name } => json!({
                                "role": "assistant", "content": null, "refusal": null,
                                "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}],
                            }),
                            _ => json!({"role": "assistant", "content": ""}),
                        };
                        let p = self.piece(delta, "", None);
                        return Some(self.event(p, None));
                    }
                }
                Step::Words if self.kind != Kind::Words => {
                    let Some(frag) = self.next_fragment() else {
                        self.next = Step::Finish;
                        continue;
                    };
                    let delta = match self.kind {
                        Kind::Tool { .. } => {
                            json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
                        }
                        _ => json!({ "content": frag }),
                    };
                    let p = self.piece(delta, "", None);
                    return Some(self.event(p, None));
                }
                Step::Words => {
                    if self.left == 0 {
                        self.next = Step::Finish;
                        continue;
                    }
                    self.left -= 1;
                    let first = std::mem::replace(&mut self.first, false);
                    let Some(word) = self.next_word() else {
                        self.next = Step::Finish;
                        continue;
                    };
                    let text = if first {
                        word.to_owned()
                    } else {
                        format!(" {word}")
                    };
                    let p = self.piece(json!({ "content": text }), &text, None);
                    return Some(self.event(p, None));
                }
                Step::Finish => {
                    let p = self.piece(json!({}), "", Some(self.finish));
                    let event = self.event(p, None);
                    if self.choice + 1 < self.n {
                        // The next choice, from the start of the same text.
                        self.choice += 1;
                        self.pos = 0;
                        self.left = self.emitted;
                        self.first = true;
                        self.next = Step::Role;
                    } else {
                        self.next = Step::Usage;
                    }
                    return Some(event);
                }
                Step::Usage => {
                    self.next = Step::Done;
                    if self.with_usage {
                        return Some(self.event(json!([]), Some(&self.usage)));
                    }
                }
                Step::Done => {
                    self.next = Step::End;
                    return Some(b"data: [DONE]\n\n".to_vec());
                }
                Step::End => return None,
            }
        }
    }
}

fn embeddings(req: &ParsedRequest) -> MockReply {
    let Some(inputs) = req.field("input").map_or(Some(Vec::new()), |i| {
        prompt::inputs(i, MAX_EMBEDDING_INPUTS)
    }) else {
        return bad_request(
            &format!("'input' may hold at most {MAX_EMBEDDING_INPUTS} items."),
            "input",
        );
    };
    let dims = match req.field("dimensions") {
        None | Some("null") => DEFAULT_DIMENSIONS,
        Some(v) => match serde_json::from_str::<u64>(v) {
            Ok(d) if (1..=MAX_DIMENSIONS).contains(&d) => d as usize,
            _ => {
                return bad_request(
                    &format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}."),
                    "dimensions",
                )
            }
        },
    };
    if inputs.len() * dims > MAX_EMBEDDING_FLOATS {
        return bad_request(
            &format!(
                "The mock provider answers at most {MAX_EMBEDDING_FLOATS} numbers per request (inputs × dimensions)."
            ),
            "dimensions",
        );
    }
    let base64 = match req.field("encoding_format").map(Json::of) {
        Some(Json::String(f)) if f == "base64" => true,
        Some(Json::String(f)) if f != "float" => {
            let shown: String = f.chars().take(64).collect();
            return bad_request(
                &format!("'{shown}' is not one of ['float', 'base64'] - 'encoding_format'"),
                "encoding_format",
            );
        }
        _ => false,
    };
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            prompt_tokens += words(text);
            let v = unit_vector(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let usage = Usage::new(prompt_tokens, 0);
    let body = json!({
        "object": "list", "data": data, "model": req.summary.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    MockReply {
        status: 200,
        retry_after: None,
        content_type: "application/json",
        body: MockBody::Full(body.to_string().into_bytes()),
        usage: Some(usage),
    }
}

/// A deterministic unit vector: splitmix64 seeded with the input's FNV-1a hash.
fn unit_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state = fnv1a(0xcbf2_9ce4_8422_2325, text.as_bytes());
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::parse_request;

    fn chat(body: &str) -> MockReply {
        {
            let req = parse_request(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
            respond(&req, &req.summary.model, 1)
        }
    }

    fn events(r: MockReply) -> Vec<Vec<u8>> {
        match r.body {
            MockBody::Stream(s) => s.collect(),
            MockBody::Full(_) => panic!("not a stream"),
        }
    }

    #[test]
    fn chat_echoes_and_counts_words() {
        let r = chat(
            r#"{"model":"mock-1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}]}"#,
        );
        let v: Value = serde_json::from_slice(&r.body.into_bytes()).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "This is a mock response from Switchyard. You said: hello there"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(r.usage, Some(Usage::new(4, 11)));
        assert_eq!(v["model"], "mock-1");
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let r = chat(r#"{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#);
        let v: Value = serde_json::from_slice(&r.body.into_bytes()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "This is a");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(r.usage.unwrap().completion_tokens, 3);
    }

    #[test]
    fn stream_concatenates_to_the_same_text() {
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}"#;
        let chunks = events(chat(body));
        let mut text = String::new();
        let mut usage_chunks = 0;
        for c in &chunks {
            let s = std::str::from_utf8(c).unwrap();
            let data = s.strip_prefix("data: ").unwrap().trim_end();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if v["choices"].as_array().unwrap().is_empty() {
                usage_chunks += 1;
                assert_eq!(v["usage"]["completion_tokens"], 11);
            } else if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
        assert_eq!(
            text,
            "This is a mock response from Switchyard. You said: a b"
        );
        assert_eq!(usage_chunks, 1);
        assert_eq!(chunks.last().unwrap(), b"data: [DONE]\n\n");
    }

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let req = parse_request(
            Endpoint::Embeddings,
            br#"{"model":"e","input":["a","b"],"dimensions":8}"#,
        )
        .unwrap();
        let r = respond(&req, "e", 0);
        assert_eq!(r, respond(&req, "e", 0));
        let v: Value = serde_json::from_slice(&r.body.into_bytes()).unwrap();
        let e: Vec<f64> = serde_json::from_value(v["data"][1]["embedding"].clone()).unwrap();
        assert_eq!(e.len(), 8);
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
        let b64 = parse_request(
            Endpoint::Embeddings,
            br#"{"model":"e","input":"a","encoding_format":"base64"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&respond(&b64, "e", 0).body.into_bytes()).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), DEFAULT_DIMENSIONS * 4);
    }

    #[test]
    fn error_models_fail_on_purpose() {
        let r = chat(r#"{"model":"mock-error-429","messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!((r.status, r.retry_after), (429, Some(1)));
        let r = chat(r#"{"model":"mock-error-999","messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(r.status, 200);
    }

    fn stream_of(prompt: &str, extra: &str) -> MockReply {
        let body = format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":true}}{extra},"messages":[{{"role":"user","content":{}}}]}}"#,
            Value::from(prompt)
        );
        chat(&body)
    }

    #[test]
    fn a_huge_prompt_gets_a_bounded_answer() {
        // 8 MB of words: the answer holds the default number of words, not the prompt.
        let prompt = "w ".repeat(4 << 20);
        let r = stream_of(&prompt, "");
        let usage = r.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 4 << 20);
        assert_eq!(usage.completion_tokens, DEFAULT_MAX_TOKENS);
        let chunks = events(r);
        // role, one per word, finish, usage, [DONE]
        assert_eq!(chunks.len() as u64, DEFAULT_MAX_TOKENS + 4);
        let total: usize = chunks.iter().map(Vec::len).sum();
        assert!(total < 100 * 1024, "{total} bytes");
        assert!(std::str::from_utf8(&chunks[chunks.len() - 3])
            .unwrap()
            .contains(r#""finish_reason":"length""#));

        // One 8 MB word: only a bounded prefix is echoed.
        let r = stream_of(&"C".repeat(8 << 20), ",\"max_tokens\":100000");
        assert_eq!(r.usage.unwrap().completion_tokens, 10); // 9 prefix words and the cut one
        let total: usize = events(r).iter().map(Vec::len).sum();
        assert!(total < MAX_ECHO_BYTES + 8 * 1024, "{total} bytes");

        // Non-stream: the same bounds.
        let body = format!(
            r#"{{"model":"m","max_tokens":100000,"messages":[{{"role":"user","content":{}}}]}}"#,
            Value::from(prompt.as_str())
        );
        let r = chat(&body);
        assert_eq!(r.usage.unwrap().completion_tokens, MAX_TOKENS);
        let v: Value = serde_json::from_slice(&r.body.into_bytes()).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.len() <= PREFIX.len() + 1 + MAX_ECHO_BYTES);
    }

    #[test]
    fn an_explicit_max_tokens_still_applies_and_the_stream_is_lazy() {
        let r = stream_of(&"w ".repeat(10_000), ",\"max_tokens\":5000");
        assert_eq!(r.usage.unwrap().completion_tokens, MAX_TOKENS.min(5000));
        let MockBody::Stream(mut s) = r.body else {
            panic!("not a stream")
        };
        // Nothing is rendered ahead: the stream holds only the bounded reply text.
        assert!(s.text.len() <= PREFIX.len() + 1 + MAX_ECHO_BYTES);
        assert!(s.next().is_some());
        assert_eq!(s.count() as u64, MAX_TOKENS + 3);
    }

    #[test]
    fn word_count_matches_split_whitespace() {
        for text in [
            "",
            "   ",
            "a",
            " a  b\tc\nd\u{b}e\u{c}f\rg ",
            "caf\u{e9} na\u{ef}ve\u{a0}nbsp\u{3000}ideo\u{85}nel \u{1f600}",
            "\u{2028}x\u{2029}y",
        ] {
            assert_eq!(
                words(text),
                text.split_whitespace().count() as u64,
                "{text:?}"
            );
        }
    }

    /// A stream reassembled as the non-stream answer's `choices` (content, tool calls,
    /// finish reasons), as the OpenAI SDK's stream accumulator does.
    fn reassemble(chunks: &[Vec<u8>]) -> Vec<Value> {
        let mut choices: Vec<Value> = Vec::new();
        for c in chunks {
            let data = std::str::from_utf8(c)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap()
                .trim_end();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            for ch in v["choices"].as_array().unwrap() {
                let i = ch["index"].as_u64().unwrap() as usize;
                if choices.len() <= i {
                    choices.resize(i + 1, json!({"index": i, "message": {"role": "assistant", "content": null, "refusal": null}, "logprobs": null, "finish_reason": null}));
                }
                let m = &mut choices[i]["message"];
                let d = &ch["delta"];
                if let Some(t) = d["content"].as_str() {
                    let old = m["content"].as_str().unwrap_or("").to_owned();
                    m["content"] = Value::from(old + t);
                }
                if let Some(calls) = d["tool_calls"].as_array() {
                    for call in calls {
                        assert_eq!(call["index"], 0);
                        if call.get("id").is_some() {
                            assert!(m.get("tool_calls").is_none());
                            m["tool_calls"] = json!([{"id": call["id"], "type": call["type"],
                                "function": {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}}]);
                        } else {
                            let f = &mut m["tool_calls"][0]["function"]["arguments"];
                            *f = Value::from(
                                f.as_str().unwrap().to_owned()
                                    + call["function"]["arguments"].as_str().unwrap(),
                            );
                        }
                    }
                }
                if !ch["finish_reason"].is_null() {
                    choices[i]["finish_reason"] = ch["finish_reason"].clone();
                }
            }
        }
        choices
    }

    /// The non-stream answer's choices, and the stream of the same request reassembled.
    fn both(body: &str) -> (Value, Vec<Value>) {
        let full: Value = serde_json::from_slice(&chat(body).into_bytes_checked()).unwrap();
        let mut v: Value = serde_json::from_str(body).unwrap();
        v["stream"] = Value::Bool(true);
        let streamed = reassemble(&events(chat(&v.to_string())));
        // Ids derive from the whole request (which differs in `stream`).
        let ids = |choices: &[Value]| -> Vec<Value> {
            let mut choices = choices.to_vec();
            for c in &mut choices {
                if let Some(id) = c.pointer_mut("/message/tool_calls/0/id") {
                    assert!(id.as_str().unwrap().starts_with("call_"));
                    *id = json!("call_");
                }
            }
            choices
        };
        assert_eq!(
            ids(full["choices"].as_array().unwrap()),
            ids(&streamed),
            "{body}"
        );
        (full, streamed)
    }

    impl MockReply {
        fn into_bytes_checked(self) -> Vec<u8> {
            assert_eq!(self.status, 200);
            self.body.into_bytes()
        }
    }

    const WEATHER: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]},"days":{"type":"integer","minimum":1}},"required":["city","unit","days"]}}},{"type":"function","function":{"name":"noop"}}]"#;

    #[test]
    fn tools_are_called_with_schema_valid_arguments() {
        let body = format!(
            r#"{{"model":"m","tools":{WEATHER},"messages":[{{"role":"user","content":"weather in Paris?"}}]}}"#
        );
        let (full, _) = both(&body);
        let c = &full["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert!(c["message"]["content"].is_null());
        let call = &c["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "mock", "unit": "c", "days": 1}));
        // Deterministic: the same request, the same answer.
        assert_eq!(chat(&body), chat(&body));

        // A named tool is called; so is the first one with "required" after an assistant turn.
        let named = format!(
            r#"{{"model":"m","tools":{WEATHER},"tool_choice":{{"type":"function","function":{{"name":"noop"}}}},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let (full, _) = both(&named);
        assert_eq!(
            full["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "noop"
        );
        assert_eq!(
            full["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        let required = format!(
            r#"{{"model":"m","tools":{WEATHER},"tool_choice":"required","messages":[{{"role":"assistant","content":"x"}}]}}"#
        );
        assert_eq!(
            both(&required).0["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn after_a_tool_result_or_with_tool_choice_none_the_answer_is_text() {
        for body in [
            format!(
                r#"{{"model":"m","tools":{WEATHER},"messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"call_1","content":"sunny"}}]}}"#
            ),
            format!(
                r#"{{"model":"m","tools":{WEATHER},"tool_choice":"none","messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ] {
            let (full, _) = both(&body);
            let c = &full["choices"][0];
            assert_eq!(c["finish_reason"], "stop", "{body}");
            assert_eq!(
                c["message"]["content"],
                "This is a mock response from Switchyard. You said: hi"
            );
            assert!(c["message"].get("tool_calls").is_none());
        }
    }

    #[test]
    fn response_format_json_schema_and_json_object() {
        let body = r##"{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"Team","strict":true,"schema":{"$defs":{"P":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}},"type":"object","properties":{"members":{"type":"array","items":{"$ref":"#/$defs/P"}},"lead":{"anyOf":[{"$ref":"#/$defs/P"},{"type":"null"}]}},"required":["members","lead"],"additionalProperties":false}}},"messages":[{"role":"user","content":"a team please"}]}"##;
        let (full, _) = both(body);
        let c = &full["choices"][0];
        assert_eq!(c["finish_reason"], "stop");
        let doc: Value = serde_json::from_str(c["message"]["content"].as_str().unwrap()).unwrap();
        let p = json!({"name": "mock", "age": 0});
        assert_eq!(doc, json!({"members": [p.clone()], "lead": p}));

        let body = r#"{"model":"m","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"answer in JSON"}]}"#;
        let (full, _) = both(body);
        let doc: Value =
            serde_json::from_str(full["choices"][0]["message"]["content"].as_str().unwrap())
                .unwrap();
        assert_eq!(
            doc,
            json!({"answer": "This is a mock response from Switchyard. You said: answer in JSON"})
        );
        // "text" is the plain echo.
        let body = r#"{"model":"m","response_format":{"type":"text"},"messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(
            both(body).0["choices"][0]["message"]["content"],
            "This is a mock response from Switchyard. You said: x"
        );
    }

    #[test]
    fn n_gives_that_many_choices() {
        let body = r#"{"model":"m","n":3,"messages":[{"role":"user","content":"a b"}]}"#;
        let (full, streamed) = both(body);
        assert_eq!(streamed.len(), 3);
        for (i, c) in full["choices"].as_array().unwrap().iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(
                c["message"]["content"],
                "This is a mock response from Switchyard. You said: a b"
            );
        }
        assert_eq!(chat(body).usage.unwrap().completion_tokens, 33);
        let body = format!(
            r#"{{"model":"m","n":2,"tools":{WEATHER},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let (full, _) = both(&body);
        assert_eq!(full["choices"][1]["finish_reason"], "tool_calls");
        for bad in ["0", "129", "-1", "\"2\""] {
            let body = format!(
                r#"{{"model":"m","n":{bad},"messages":[{{"role":"user","content":"x"}}]}}"#
            );
            assert_eq!(chat(&body).status, 400, "{bad}");
        }
    }

    #[test]
    fn hostile_tools_and_formats_do_not_break_the_mock() {
        for extra in [
            r#""tools":7"#,
            r#""tools":[]"#,
            r#""tools":[{"type":"function"}]"#,
            r##""tools":[{"type":"function","function":{"name":"f","parameters":{"$ref":"#"}}}]"##,
            r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"array","minItems":99999999999}}}]"#,
            r#""tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}"#,
            r#""tool_choice":"required""#,
            r#""response_format":{"type":"json_schema"}"#,
            r##""response_format":{"type":"json_schema","json_schema":{"schema":{"$defs":{"a":{"type":"array","minItems":100000,"items":{"$ref":"#/$defs/a"}}},"$ref":"#/$defs/a"}}}"##,
            r#""response_format":"json""#,
        ] {
            let body =
                format!(r#"{{"model":"m",{extra},"messages":[{{"role":"user","content":"x"}}]}}"#);
            let (full, _) = both(&body);
            assert!(full.to_string().len() < 128 * 1024, "{extra}");
        }
    }

    #[test]
    fn oversized_embeddings_are_refused() {
        let body = format!(
            r#"{{"model":"e","input":{},"dimensions":8192}}"#,
            serde_json::to_string(&vec!["x"; 200]).unwrap()
        );
        let req = parse_request(Endpoint::Embeddings, body.as_bytes()).unwrap();
        let r = respond(&req, "e", 0);
        assert_eq!(r.status, 400);
        let body = format!(
            r#"{{"model":"e","input":{}}}"#,
            serde_json::to_string(&vec!["x"; MAX_EMBEDDING_INPUTS + 1]).unwrap()
        );
        let req = parse_request(Endpoint::Embeddings, body.as_bytes()).unwrap();
        assert_eq!(respond(&req, "e", 0).status, 400);
    }
}
