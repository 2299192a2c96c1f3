//! The Responses API to OpenAI-dialect hosts (OpenAI, Azure OpenAI) natively: the caller's
//! request with the provider's model name, and the provider's answer (a `response` object, or
//! its stream of events) with the client's model name restored and the final `response`
//! object kept for the gateway's store (`previous_response_id`).
//!
//! On the way down only the lifecycle events that carry the `response` object
//! (`response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`, `.queued`)
//! are re-encoded; every other event is relayed as the bytes the provider sent.

use serde_json::{Map, Value};

use crate::openai::{ParsedRequest, Usage};
use crate::sse::{parse_event, SseFramer};
use crate::translate::{StreamEnd, StreamTranslator};

/// The upstream body: the caller's fields as written, with `model` replaced. (No
/// `stream_options.include_usage`: Responses streams always end with usage.)
pub fn prepare_request(parsed: &ParsedRequest, upstream_model: &str) -> Vec<u8> {
    let raw = parsed.raw();
    let mut out = Vec::with_capacity(raw.len() + upstream_model.len() + 16);
    out.push(b'{');
    for (name, value) in parsed.fields().iter(raw) {
        if out.len() > 1 {
            out.push(b',');
        }
        json_str(&mut out, name);
        out.push(b':');
        if name == "model" {
            json_str(&mut out, upstream_model);
        } else {
            out.extend_from_slice(value);
        }
    }
    out.push(b'}');
    out
}

/// Makes conversation history from the gateway's store acceptable to OpenAI: item ids are
/// removed (OpenAI looks ids up among the responses it stored itself, and these may come from
/// another provider) and `reasoning` items without `encrypted_content` are left out (they
/// can only be referenced by such an id).
pub fn history_for_openai(items: &mut Vec<Value>) {
    items.retain(|item| {
        item.get("type").and_then(Value::as_str) != Some("reasoning")
            || item.get("encrypted_content").is_some_and(Value::is_string)
    });
    for item in items.iter_mut() {
        if let Some(obj) = item.as_object_mut() {
            obj.remove("id");
            if obj.get("type").and_then(Value::as_str) == Some("reasoning") {
                obj.remove("status");
            }
        }
    }
}

/// Usage as a `response` object reports it (`input_tokens`, `output_tokens`, details).
pub fn usage_of(response: &Value) -> Option<Usage> {
    let u = response.get("usage")?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let mut usage = Usage::new(n(u.get("input_tokens")), n(u.get("output_tokens")));
    if let Some(total) = u.get("total_tokens").and_then(Value::as_u64) {
        usage.total_tokens = total;
    }
    usage.cached_tokens = n(u.pointer("/input_tokens_details/cached_tokens"));
    usage.reasoning_tokens = n(u.pointer("/output_tokens_details/reasoning_tokens"));
    Some(usage)
}

/// What the client's view of a native `response` object restores: its model name, and the
/// `previous_response_id` the gateway resolved itself (the provider never saw it).
#[derive(Debug, Clone, Copy)]
pub struct Restore<'a> {
    pub client_model: &'a str,
    pub previous_response_id: Option<&'a str>,
}

impl Restore<'_> {
    fn apply(&self, obj: &mut Map<String, Value>) {
        if obj.contains_key("model") {
            obj.insert("model".into(), Value::String(self.client_model.to_owned()));
        }
        if let Some(prev) = self.previous_response_id {
            obj.insert(
                "previous_response_id".into(),
                Value::String(prev.to_owned()),
            );
        }
    }
}

/// A complete (non-stream) answer: the body as the client sees it ([`Restore`]) and the
/// `response` object itself (for the store). None when the body is not a JSON object.
pub fn translate_response(body: &[u8], restore: Restore<'_>) -> Option<(Vec<u8>, Value)> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    restore.apply(v.as_object_mut()?);
    let out = serde_json::to_vec(&v).ok()?;
    Some((out, v))
}

/// Relays a provider's Responses stream (see the module doc).
#[derive(Debug)]
pub struct ResponsesRelay {
    client_model: String,
    previous_response_id: Option<String>,
    framer: SseFramer,
    /// The `response` object of `response.completed` / `.incomplete` / `.failed`, as sent.
    last: Option<Vec<u8>>,
    usage: Option<Usage>,
    /// Whether the stream reached a terminal event (`error` included).
    ended: bool,
    /// The provider's message when the stream ended with `error` or `response.failed`.
    failed: Option<String>,
}

const LIFECYCLE: &[&[u8]] = &[
    b"response.created",
    b"response.in_progress",
    b"response.queued",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
];

const TERMINAL: &[&[u8]] = &[
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
];

impl ResponsesRelay {
    pub fn new(restore: Restore<'_>) -> Self {
        ResponsesRelay {
            client_model: restore.client_model.to_owned(),
            previous_response_id: restore.previous_response_id.map(str::to_owned),
            framer: SseFramer::new(),
            last: None,
            usage: None,
            ended: false,
            failed: None,
        }
    }

    /// Feeds a chunk of the provider's stream; writes what the client gets to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let restore = Restore {
            client_model: &self.client_model,
            previous_response_id: self.previous_response_id.as_deref(),
        };
        let (last, usage, ended, failed) = (
            &mut self.last,
            &mut self.usage,
            &mut self.ended,
            &mut self.failed,
        );
        self.framer.feed(chunk, |raw| {
            let ev = parse_event(raw);
            let kind = ev.event.unwrap_or_default();
            if !LIFECYCLE.contains(&kind) {
                if kind == b"error" {
                    *ended = true;
                    *failed = Some(error_message(&ev.data));
                }
                out.extend_from_slice(raw);
                return;
            }
            let Ok(mut data) = serde_json::from_slice::<Map<String, Value>>(&ev.data) else {
                out.extend_from_slice(raw);
                return;
            };
            if let Some(Value::Object(r)) = data.get_mut("response") {
                restore.apply(r);
            }
            if TERMINAL.contains(&kind) {
                *ended = true;
                if let Some(r) = data.get("response") {
                    *usage = usage_of(r);
                    *last = serde_json::to_vec(r).ok();
                    if kind == b"response.failed" {
                        *failed = Some(error_message(&serde_json::to_vec(r).unwrap_or_default()));
                    }
                }
            }
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(kind);
            out.extend_from_slice(b"\ndata: ");
            serde_json::to_writer(&mut *out, &data).expect("writing to a Vec cannot fail");
            out.extend_from_slice(b"\n\n");
        });
    }
}

/// The `message` of a Responses `error` event or a failed `response` (its `error.message`).
fn error_message(data: &[u8]) -> String {
    let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    v.get("message")
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or("the provider reported an error")
        .chars()
        .take(300)
        .collect()
}

impl StreamTranslator for ResponsesRelay {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        ResponsesRelay::feed(self, chunk, out)
    }

    /// Nothing is owed: OpenAI's own events are the client's. A stream that stopped before a
    /// terminal event is `Truncated` (the gateway then ends it with an error).
    fn finish(&mut self, _out: &mut Vec<u8>) -> StreamEnd {
        match (&self.failed, self.ended) {
            (Some(msg), _) => StreamEnd::ProviderError(msg.clone()),
            (None, true) => StreamEnd::Complete,
            (None, false) => StreamEnd::Truncated,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// A terminal event (`response.completed`, `.incomplete`, `.failed`, `error`) has been
    /// relayed.
    fn ended(&self) -> bool {
        self.ended
    }

    fn final_response(&self) -> Option<&[u8]> {
        self.last.as_deref()
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse_request_bytes, Endpoint};

    #[test]
    fn the_model_is_replaced_and_nothing_else() {
        let body = br#"{"model":"fast","input":"hi","stream_options":{"include_obfuscation":false},"tools":[{"type":"web_search"}]}"#;
        let p = parse_request_bytes(Endpoint::Responses, bytes::Bytes::from_static(body)).unwrap();
        let out: Value = serde_json::from_slice(&prepare_request(&p, "gpt-5")).unwrap();
        let want: Value = serde_json::from_str(
            r#"{"model":"gpt-5","input":"hi","stream_options":{"include_obfuscation":false},"tools":[{"type":"web_search"}]}"#,
        )
        .unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn history_loses_ids_and_unreferencable_reasoning() {
        let mut items: Vec<Value> = serde_json::from_str(
            r#"[{"type":"message","id":"msg_1","role":"user","content":"hi"},
                {"type":"reasoning","id":"rs_1","summary":[]},
                {"type":"reasoning","id":"rs_2","summary":[],"encrypted_content":"abc","status":"completed"},
                {"type":"function_call","id":"fc_1","call_id":"call_1","name":"f","arguments":"{}"}]"#,
        )
        .unwrap();
        history_for_openai(&mut items);
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|i| i.get("id").is_none()));
        assert_eq!(items[1]["encrypted_content"], "abc");
        assert_eq!(items[2]["call_id"], "call_1");
    }

    const FAST: Restore<'static> = Restore {
        client_model: "fast",
        previous_response_id: Some("resp_0"),
    };

    const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"model\":\"gpt-5-2025\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"model\":\"gpt-5-2025\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":5,\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":1,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":6}}}\n\n",
    );

    #[test]
    fn a_stream_split_anywhere_comes_out_the_same() {
        let mut whole = Vec::new();
        let mut r = ResponsesRelay::new(FAST);
        r.feed(STREAM.as_bytes(), &mut whole);
        assert!(r.ended());
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(!text.contains("gpt-5-2025"), "{text}");
        assert_eq!(text.matches("\"model\":\"fast\"").count(), 2);
        assert_eq!(
            text.matches("\"previous_response_id\":\"resp_0\"").count(),
            2
        );
        assert!(text.contains("\"delta\":\"Hi\""));
        let usage = r.usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens
            ),
            (5, 1, 2)
        );
        let last: Value = serde_json::from_slice(r.final_response().unwrap()).unwrap();
        assert_eq!(last["output"][0]["id"], "msg_1");
        assert_eq!(r.finish(&mut Vec::new()), StreamEnd::Complete);
        for split in 1..STREAM.len() {
            let mut out = Vec::new();
            let mut r = ResponsesRelay::new(FAST);
            r.feed(&STREAM.as_bytes()[..split], &mut out);
            r.feed(&STREAM.as_bytes()[split..], &mut out);
            assert_eq!(out, whole, "split at {split}");
        }
    }

    #[test]
    fn a_cut_stream_has_no_final_response() {
        let mut out = Vec::new();
        let mut r = ResponsesRelay::new(FAST);
        r.feed(&STREAM.as_bytes()[..STREAM.len() - 10], &mut out);
        assert!(!r.ended());
        assert!(r.final_response().is_none());
        assert_eq!(r.finish(&mut out), StreamEnd::Truncated);
    }

    #[test]
    fn an_error_event_ends_the_stream_as_a_provider_error() {
        let mut out = Vec::new();
        let mut r = ResponsesRelay::new(FAST);
        r.feed(b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"sequence_number\":3}\n\n", &mut out);
        assert!(r.ended());
        assert_eq!(r.finish(&mut out), StreamEnd::ProviderError("boom".into()));
    }
}
