//! The built-in `mock` provider: deterministic answers with no network, for demos, smoke
//! tests and load tests.
//!
//! Tokens are whitespace-separated words. A chat reply is
//! `This is a mock response from Switchyard. You said: <last user message>`, cut to
//! `max_tokens` words (finish_reason `length`). Streams send one chunk per word. Embeddings are
//! unit vectors derived from a hash of each input. A model named `mock-error-<status>` answers
//! that HTTP status with an OpenAI error body.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::openai::{content_text, error_body, Endpoint, ParsedRequest, Usage};
use crate::sse::write_data_event;

const PREFIX: &str = "This is a mock response from Switchyard. You said:";
const DEFAULT_DIMENSIONS: usize = 16;
const MAX_DIMENSIONS: u64 = 8192;

/// Everything the gateway needs to answer a request as the mock provider.
#[derive(Debug, Clone, PartialEq)]
pub struct MockReply {
    pub status: u16,
    pub retry_after: Option<u32>,
    pub content_type: &'static str,
    /// Body pieces; a stream sends each as its own write.
    pub chunks: Vec<Vec<u8>>,
    pub usage: Option<Usage>,
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
        chunks: vec![error_body(
            &format!("The mock provider was asked to fail with HTTP {status}."),
            kind,
            None,
            code,
        )],
        usage: None,
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The prompt text of a chat or completions request, and the text the reply echoes.
fn prompt_and_echo(req: &ParsedRequest) -> (u64, String) {
    match req.endpoint {
        Endpoint::ChatCompletions => {
            let msgs = req.body.get("messages").and_then(Value::as_array);
            let mut prompt_words = 0;
            let mut last_user = String::new();
            for m in msgs.into_iter().flatten() {
                let mut text = String::new();
                if let Some(c) = m.get("content") {
                    content_text(c, &mut text);
                }
                prompt_words += words(&text);
                if m.get("role").and_then(Value::as_str) == Some("user") {
                    last_user = text;
                }
            }
            (prompt_words, last_user)
        }
        _ => {
            let mut text = String::new();
            match req.body.get("prompt") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(items)) => {
                    for s in items.iter().filter_map(Value::as_str) {
                        if !text.is_empty() {
                            text.push(' ');
                        }
                        text.push_str(s);
                    }
                }
                _ => {}
            }
            (words(&text), text)
        }
    }
}

fn max_tokens(req: &ParsedRequest) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.body.get(*k).and_then(Value::as_u64))
}

/// A short deterministic id derived from the request, so identical requests get identical ids.
fn mock_id(req: &ParsedRequest) -> String {
    let bytes = serde_json::to_vec(&req.body).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn text_reply(req: &ParsedRequest, created: u64) -> MockReply {
    let (prompt_tokens, echo) = prompt_and_echo(req);
    let reply = format!("{PREFIX} {echo}");
    let all: Vec<&str> = reply.split_whitespace().collect();
    let limit = max_tokens(req).map_or(all.len(), |n| n.min(all.len() as u64) as usize);
    let emitted = &all[..limit];
    let finish = if limit < all.len() { "length" } else { "stop" };
    let usage = Usage::new(prompt_tokens, emitted.len() as u64);
    let chat = req.endpoint == Endpoint::ChatCompletions;
    let model = req.summary.model.as_str();
    let id = if chat {
        format!("chatcmpl-mock-{}", mock_id(req))
    } else {
        format!("cmpl-mock-{}", mock_id(req))
    };

    if !req.summary.stream {
        let text = emitted.join(" ");
        let body = if chat {
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                             "logprobs": null, "finish_reason": finish}],
                "usage": usage, "system_fingerprint": "fp_switchyard_mock",
            })
        } else {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            })
        };
        return MockReply {
            status: 200,
            retry_after: None,
            content_type: "application/json",
            chunks: vec![body.to_string().into_bytes()],
            usage: Some(usage),
        };
    }

    let with_usage = req.summary.client_wants_usage;
    let chunk = |choices: Value, usage_field: Option<Value>| -> Vec<u8> {
        let mut c = if chat {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": "fp_switchyard_mock", "choices": choices})
        } else {
            json!({"id": id, "object": "text_completion", "created": created, "model": model,
                   "choices": choices})
        };
        if with_usage {
            c["usage"] = usage_field.unwrap_or(Value::Null);
        }
        let mut out = Vec::new();
        write_data_event(&mut out, c.to_string().as_bytes());
        out
    };
    let piece = |delta: Value, text: &str, finish: Option<&str>| -> Value {
        if chat {
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
        } else {
            json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
        }
    };
    let mut chunks = Vec::with_capacity(emitted.len() + 4);
    if chat {
        chunks.push(chunk(
            piece(json!({"role": "assistant", "content": ""}), "", None),
            None,
        ));
    }
    for (i, w) in emitted.iter().enumerate() {
        let text = if i == 0 {
            (*w).to_owned()
        } else {
            format!(" {w}")
        };
        chunks.push(chunk(piece(json!({ "content": text }), &text, None), None));
    }
    chunks.push(chunk(piece(json!({}), "", Some(finish)), None));
    if with_usage {
        chunks.push(chunk(json!([]), Some(json!(usage))));
    }
    chunks.push(b"data: [DONE]\n\n".to_vec());
    MockReply {
        status: 200,
        retry_after: None,
        content_type: "text/event-stream",
        chunks,
        usage: Some(usage),
    }
}

fn embeddings(req: &ParsedRequest) -> MockReply {
    let inputs: Vec<String> = match req.body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let dims = match req.body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_u64() {
            Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => d as usize,
            _ => {
                return MockReply {
                    status: 400,
                    retry_after: None,
                    content_type: "application/json",
                    chunks: vec![error_body(
                        &format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}."),
                        "invalid_request_error",
                        Some("dimensions"),
                        None,
                    )],
                    usage: None,
                }
            }
        },
    };
    let base64 = match req.body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return MockReply {
                status: 400,
                retry_after: None,
                content_type: "application/json",
                chunks: vec![error_body(
                    &format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                    "invalid_request_error",
                    Some("encoding_format"),
                    None,
                )],
                usage: None,
            }
        }
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
        chunks: vec![body.to_string().into_bytes()],
        usage: Some(usage),
    }
}

/// A deterministic unit vector: splitmix64 seeded with the input's FNV-1a hash.
fn unit_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes());
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

    #[test]
    fn chat_echoes_and_counts_words() {
        let r = chat(
            r#"{"model":"mock-1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}]}"#,
        );
        let v: Value = serde_json::from_slice(&r.chunks[0]).unwrap();
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
        let v: Value = serde_json::from_slice(&r.chunks[0]).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "This is a");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(r.usage.unwrap().completion_tokens, 3);
    }

    #[test]
    fn stream_concatenates_to_the_same_text() {
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}"#;
        let r = chat(body);
        let mut text = String::new();
        let mut usage_chunks = 0;
        for c in &r.chunks {
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
        assert_eq!(r.chunks.last().unwrap(), b"data: [DONE]\n\n");
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
        let v: Value = serde_json::from_slice(&r.chunks[0]).unwrap();
        let e: Vec<f64> = serde_json::from_value(v["data"][1]["embedding"].clone()).unwrap();
        assert_eq!(e.len(), 8);
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
        let b64 = parse_request(
            Endpoint::Embeddings,
            br#"{"model":"e","input":"a","encoding_format":"base64"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&respond(&b64, "e", 0).chunks[0]).unwrap();
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
}
