//! A mock Anthropic Messages API that checks credentials the way api.anthropic.com does:
//! `x-api-key` must be the configured key (401 `authentication_error` otherwise) and
//! `anthropic-version` must be present (400 otherwise). Bodies follow Anthropic's documented
//! wire format (Messages response, named SSE events, error envelope).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{MockUpstream, Recorded, Reply};

/// The key the gateway is configured with for the mock (never the caller's gateway key).
pub const ANTHROPIC_KEY: &str = "sk-ant-upstream-7f3a9c";
pub const MODEL: &str = "claude-3-5-sonnet-20241022";

/// What the mock decided about one request's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected(&'static str),
}

/// The mock and its verdicts (one per request, in arrival order).
pub struct MockAnthropic {
    pub upstream: MockUpstream,
    pub verdicts: Arc<Mutex<Vec<Verdict>>>,
}

/// Anthropic's error envelope.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap()
}

/// Checks `x-api-key` and `anthropic-version` like the real API.
pub fn verify(rec: &Recorded, key: &str) -> Result<(), Reply> {
    if rec.header("x-api-key") != Some(key) || rec.header("authorization").is_some() {
        return Err(Reply::Full(
            401,
            vec![("request-id".into(), "req_mock_401".into())],
            error_body("authentication_error", "invalid x-api-key"),
        ));
    }
    if rec.header("anthropic-version").is_none() {
        return Err(Reply::Full(
            400,
            vec![],
            error_body(
                "invalid_request_error",
                "anthropic-version: header is required",
            ),
        ));
    }
    Ok(())
}

impl MockAnthropic {
    /// Starts the mock; `reply` answers requests whose credential was accepted.
    pub fn start(reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> MockAnthropic {
        let verdicts: Arc<Mutex<Vec<Verdict>>> = Arc::default();
        let v = verdicts.clone();
        let upstream = MockUpstream::start(move |rec| match verify(rec, ANTHROPIC_KEY) {
            Ok(()) => {
                v.lock().unwrap().push(Verdict::Accepted);
                reply(rec)
            }
            Err(r) => {
                v.lock().unwrap().push(Verdict::Rejected(
                    if rec.header("x-api-key") != Some(ANTHROPIC_KEY) {
                        "x-api-key"
                    } else {
                        "anthropic-version"
                    },
                ));
                r
            }
        });
        MockAnthropic { upstream, verdicts }
    }

    pub fn verdicts(&self) -> Vec<Verdict> {
        self.verdicts.lock().unwrap().clone()
    }
}

/// A non-stream Messages response.
pub fn message(text: &str, input_tokens: u64, output_tokens: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }))
    .unwrap()
}

/// A Messages stream as Anthropic sends it: `event: <type>` + `data: <json>` per event,
/// message_start, content_block_start, ping, one content_block_delta per piece,
/// content_block_stop, message_delta (final usage), message_stop.
pub fn message_stream(pieces: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<u8> {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_01StreamMock", "type": "message",
            "role": "assistant", "model": MODEL, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for p in pieces {
        events.push(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": p}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}));
    events.push(json!({"type": "message_stop"}));
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(format!("event: {}\n", e["type"].as_str().unwrap()).as_bytes());
        out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
    }
    out
}

/// Splits `bytes` into pieces of `size` bytes (network-like boundaries, mid-event).
pub fn split(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// A stream reply sent in `size`-byte pieces with a short pause between them.
pub fn stream_reply(bytes: &[u8], size: usize) -> Reply {
    Reply::Stream(split(bytes, size), Duration::from_millis(2))
}
