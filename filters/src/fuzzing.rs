//! Fuzz harnesses: one function per fuzz target of `tests/fuzz/` (cargo-fuzz), kept here so
//! the fuzz targets and a regression test replaying a crash input (none found so far, see
//! docs/RELIABILITY.md) run exactly the same code ([`by_name`]).
//!
//! Each harness takes the fuzzer's raw bytes, never panics on any input unless the code under
//! test breaks one of the invariants below, and checks more than "no panic":
//! - [`sse_decoder`]: framing is lossless (events + held-back bytes = input), independent of
//!   how the input is split, and the framer never holds back a complete event;
//! - [`eventstream_decoder`]: decoding is independent of the split, and every decoded message
//!   re-encodes to exactly its bytes on the wire;
//! - [`stream`]: a translator's output is independent of the split (the contract of
//!   [`StreamTranslator::feed`]); it is UTF-8 SSE whose events are each one `data:` line with
//!   a JSON object or `[DONE]`; it ends with exactly one terminal event — `[DONE]` when
//!   [`StreamEnd::Complete`], an error object otherwise — and nothing follows it;
//! - [`messages_stream`]: a `/v1/messages` relay's output is independent of the split; it is
//!   Anthropic SSE ending in exactly one `message_stop` (complete) or `error` event;
//! - [`messages`]: the `/v1/messages` splices change a JSON object's meaning only as
//!   documented (model replaced or removed, version added) and never panic;
//! - [`openai_stream`]: the OpenAI/Azure stream filter is split-independent, and forwards the
//!   input byte for byte when it is the identity;
//! - [`answers`]: answer parsers and error mapping never panic, what they accept renders as
//!   JSON, the OpenAI answer's model splice refuses exactly what `serde_json` refuses, and
//!   every mapped error is a 4xx/5xx OpenAI error envelope (OpenAI-shaped upstreams' own
//!   envelopes pass through as they are);
//! - [`request`]: a body's one-walk reading refuses exactly what `serde_json` refuses; every
//!   request the gateway accepts can be prepared for every dialect (or is refused with an
//!   [`crate::InvalidRequest`]), and prepared bodies are JSON;
//! - [`responses`]: the `/v1/responses` request side (checks, decoding, stored input items,
//!   history splicing, the echo) never panics; the echo always splices into a JSON object,
//!   stored items all have ids and decode like the input they came from, and what decodes
//!   prepares for every dialect (or is refused) with a JSON body.
//!
//! - [`usage`]: the passthrough usage meter reads every document exactly as its
//!   `serde_json` reading does (usage, model, text estimate), whatever it knew before;
//!
//! - [`cache_key`]: the response cache's canonical form is idempotent (the canonical form of
//!   its own output is itself) and blind to key order; finding and refreshing an answer's
//!   identity never panics, and refreshing it to itself changes nothing.
//!
//! Input layout shared by the stream harnesses: byte 0 holds flags, byte 1 (low 3 bits) the
//! number `n` of split points, the next `n` bytes the sizes of the first `n` pieces; the rest
//! is the provider's stream (the last piece is whatever remains).
//!
//! Not used by the gateway; public only for the fuzz targets and tests.

use crate::front::FrontDoor;
use serde_json::Value;

use crate::chat::embeddings::{self, EmbeddingsRequest, EncodingFormat};
use crate::chat::{response, ChatRequest, ResponseCtx};
use crate::eventstream::{self, Decoder, HeaderValue};
use crate::openai::{parse_request, Endpoint};
use crate::openai_upstream::StreamFilter;
use crate::providers::messages_native;
use crate::sse::{parse_event, SseFramer};
use crate::translate::{self, Answer, Dialect, ErrorHints, StreamEnd, Target};
use crate::usage::UsageMeter;

/// Every dialect, in a fixed order (the `answers` harness indexes it).
pub const DIALECTS: [Dialect; 11] = [
    Dialect::OpenAi,
    Dialect::Azure,
    Dialect::Anthropic,
    Dialect::BedrockConverse,
    Dialect::BedrockAnthropic,
    Dialect::BedrockEmbed,
    Dialect::VertexGemini,
    Dialect::VertexAnthropic,
    Dialect::Watsonx,
    Dialect::OciGeneric,
    Dialect::OciCohere,
];

/// A target as the gateway builds it from a valid configuration (every optional part set).
pub fn target(dialect: Dialect) -> Target<'static> {
    Target {
        dialect,
        upstream_model: match dialect {
            Dialect::BedrockConverse => "anthropic.claude-3-5-sonnet-20241022-v2:0",
            Dialect::BedrockEmbed => "amazon.titan-embed-text-v2:0",
            Dialect::OciCohere => "cohere.command-r-plus",
            _ => "up-model",
        },
        project: Some("proj"),
        location: Some("us-central1"),
        api_version: Some("2024-06-01"),
    }
}

/// Splits the fuzzer's input: (flags, pieces of the stream, the whole stream).
fn split_input(data: &[u8]) -> (u8, Vec<&[u8]>, &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let n = data.get(1).map_or(0, |b| (b & 7) as usize);
    let sizes_end = (2 + n).min(data.len());
    let sizes = data.get(2..sizes_end).unwrap_or(&[]);
    let stream = data.get(sizes_end..).unwrap_or(&[]);
    let mut pieces = Vec::with_capacity(n + 1);
    let mut rest = stream;
    for &s in sizes {
        let (a, b) = rest.split_at((s as usize).min(rest.len()));
        pieces.push(a);
        rest = b;
    }
    pieces.push(rest);
    (flags, pieces, stream)
}

/// With flag bit 7: the stream read as AWS event stream frames (each `total_len` from its
/// prelude) gets both checksums of every frame recomputed, so mutated payloads and headers
/// get past the CRCs and reach the translators. Returns the pieces of the repaired stream,
/// split at the same sizes.
fn repair_checksums<'a>(
    flags: u8,
    pieces: &[&[u8]],
    stream: &[u8],
    buf: &'a mut Vec<u8>,
) -> Option<(Vec<&'a [u8]>, &'a [u8])> {
    if flags & 0x80 == 0 {
        return None;
    }
    buf.extend_from_slice(stream);
    let mut at = 0;
    while buf.len() - at >= eventstream::OVERHEAD {
        let total = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if total < eventstream::OVERHEAD || total > buf.len() - at {
            break;
        }
        let crc = eventstream::crc32(&buf[at..at + 8]);
        buf[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
        let crc = eventstream::crc32(&buf[at..at + total - 4]);
        buf[at + total - 4..at + total].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
    let whole: &'a Vec<u8> = buf;
    let mut rest = &whole[..];
    let mut out = Vec::with_capacity(pieces.len());
    for p in &pieces[..pieces.len() - 1] {
        let (a, b) = rest.split_at(p.len());
        out.push(a);
        rest = b;
    }
    out.push(rest);
    Some((out, whole))
}

/// SSE framing ([`SseFramer`]).
pub fn sse_decoder(data: &[u8]) {
    let (_, pieces, stream) = split_input(data);
    let run = |pieces: &[&[u8]]| {
        let mut f = SseFramer::new();
        let mut events: Vec<Vec<u8>> = Vec::new();
        for p in pieces {
            f.feed(p, |e| events.push(e.to_vec()));
            // Never more than the current incomplete event is held back.
            let mut fresh = SseFramer::new();
            fresh.feed(f.pending(), |e| {
                panic!(
                    "framer held back a complete event: {:?}",
                    String::from_utf8_lossy(e)
                )
            });
        }
        let rest = f.take_rest();
        assert!(f.pending().is_empty(), "take_rest leaves nothing behind");
        (events, rest)
    };
    let (events, rest) = run(&pieces);
    assert_eq!(
        run(&[stream]),
        (events.clone(), rest.clone()),
        "split changes framing"
    );
    let mut joined: Vec<u8> = events.concat();
    joined.extend_from_slice(&rest);
    assert_eq!(joined, stream, "framing is lossless");
    for e in &events {
        assert!(
            e.ends_with(b"\n") || e.ends_with(b"\r"),
            "an event ends with a blank line"
        );
        let ev = parse_event(e);
        assert!(ev.has_data || ev.data.is_empty());
    }
}

/// AWS event stream decoding ([`Decoder`] and [`eventstream::decode_message`]).
pub fn eventstream_decoder(data: &[u8]) {
    let (flags, pieces, stream) = split_input(data);
    let mut repaired = Vec::new();
    let (pieces, stream) = match repair_checksums(flags, &pieces, stream, &mut repaired) {
        Some(repaired) => repaired,
        None => (pieces, stream),
    };
    if let Ok(m) = eventstream::decode_message(stream) {
        assert_eq!(
            reencode(&m),
            stream,
            "a decoded message re-encodes to its bytes"
        );
    }
    let run = |pieces: &[&[u8]]| {
        let mut d = Decoder::new();
        let mut messages: Vec<Vec<u8>> = Vec::new();
        let mut first_err = None;
        let mut meter = UsageMeter::default();
        for p in pieces {
            let r = d.feed(p, |m| {
                messages.push(reencode(m));
                eventstream::meter_bedrock_event(&mut meter, m);
                let _ = eventstream::chunk_bytes(m.payload);
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        (messages, first_err, d.finish())
    };
    let (messages, err, end) = run(&pieces);
    assert_eq!(
        run(&[stream]),
        (messages.clone(), err, end),
        "split changes decoding"
    );
    // The decoded messages are the input's leading frames, in order.
    let joined = messages.concat();
    assert!(
        stream.starts_with(&joined),
        "messages are the input's frames"
    );
    if end.is_ok() {
        assert_eq!(
            joined.len(),
            stream.len(),
            "a clean end consumed everything"
        );
    }
}

fn reencode(m: &eventstream::Message<'_>) -> Vec<u8> {
    let headers: Vec<(&str, HeaderValue<'_>)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.clone()))
        .collect();
    eventstream::encode_message(&headers, m.payload)
}

/// One translated stream ([`translate::chat_stream`]) for `dialect`. Flags: bit 0 legacy
/// completion, bit 1 the client asked for usage, bit 2 the client called `/v1/responses`
/// (Responses events instead of chunks), bit 3 record the answer's id, model and finish
/// reasons (a sampled trace; also split-independent), bit 7 repair event stream checksums
/// (Bedrock).
pub fn stream(dialect: Dialect, data: &[u8]) {
    let (flags, pieces, stream) = split_input(data);
    let mut repaired = Vec::new();
    let (pieces, stream) = match repair_checksums(flags, &pieces, stream, &mut repaired) {
        Some(repaired) => repaired,
        None => (pieces, stream),
    };
    let t = target(dialect);
    let ctx = ResponseCtx {
        client_model: "client-model",
        created: 1_700_000_000,
        fallback_id: "req-1",
        front: if flags & 4 != 0 {
            FrontDoor::Responses
        } else {
            FrontDoor::legacy(flags & 1 != 0)
        },
        include_usage: flags & 2 != 0,
        echo: "",
    };
    let run = |pieces: &[&[u8]]| {
        let mut tr = translate::chat_stream(&t, &ctx);
        if let Some(a) = tr.answer() {
            a.record = flags & 8 != 0;
        }
        let mut out = Vec::new();
        for p in pieces {
            tr.feed(p, &mut out);
        }
        let end = tr.finish(&mut out);
        let stored = tr.final_response().map(<[u8]>::to_vec);
        let answer = tr.answer().map(|a| a.clone());
        (out, end, tr.usage(), stored, answer)
    };
    let (out, end, usage, stored, answer) = run(&pieces);
    if let Some(a) = &answer {
        assert!(
            a.record || *a == translate::StreamAnswer::default(),
            "nothing noted unless recording"
        );
        assert!(a.finish_reasons.len() <= 1, "one choice, one finish reason");
    }
    assert_eq!(
        run(&[stream]),
        (out.clone(), end.clone(), usage, stored.clone(), answer),
        "split changes the client stream"
    );
    if ctx.front == FrontDoor::Responses {
        check_responses_stream(&out, &end, stored.as_deref());
    } else {
        assert!(stored.is_none(), "only Responses streams keep a response");
        check_client_stream(&out, &end);
    }
}

/// A Responses stream: `event:` + `data:` pairs whose data names the event's type, numbered
/// from 0, starting with `response.created` and ending with exactly one terminal event —
/// `response.completed` / `response.incomplete` on a complete stream (whose response is the
/// one kept for storage), `response.failed` otherwise.
pub fn check_responses_stream(out: &[u8], end: &StreamEnd, stored: Option<&[u8]>) {
    let text = std::str::from_utf8(out).expect("the client stream is UTF-8");
    assert!(text.ends_with("\n\n"), "the stream ends with a whole event");
    let events: Vec<&str> = text
        .strip_suffix("\n\n")
        .unwrap_or("")
        .split("\n\n")
        .collect();
    let last = events.len() - 1;
    for (i, e) in events.iter().enumerate() {
        let (name, data) = e
            .strip_prefix("event: ")
            .and_then(|e| e.split_once("\ndata: "))
            .unwrap_or_else(|| panic!("event {i} is not an event and a data line: {e:?}"));
        assert!(!data.contains('\n'), "event {i} is one data line: {e:?}");
        let v: Value = serde_json::from_str(data)
            .unwrap_or_else(|err| panic!("event {i} is not JSON ({err}): {data:?}"));
        assert_eq!(v["type"], name, "event {i} names its type");
        assert_eq!(v["sequence_number"], i as u64, "event {i} is numbered");
        if i == 0 {
            assert_eq!(name, "response.created");
        }
        let terminal = matches!(
            name,
            "response.completed" | "response.incomplete" | "response.failed"
        );
        assert_eq!(
            terminal,
            i == last,
            "exactly one terminal event, last: {text:?}"
        );
        if terminal {
            assert_eq!(
                name != "response.failed",
                *end == StreamEnd::Complete,
                "failed exactly when incomplete"
            );
            match stored {
                Some(stored) => {
                    let stored: Value = serde_json::from_slice(stored).expect("stored JSON");
                    assert_eq!(stored, v["response"], "the stored response is the last one");
                }
                None => assert_eq!(name, "response.failed", "a completed stream is kept"),
            }
        }
    }
}

/// The client stream is SSE of JSON objects ending in exactly one `[DONE]` or error event.
pub fn check_client_stream(out: &[u8], end: &StreamEnd) {
    let text = std::str::from_utf8(out).expect("the client stream is UTF-8");
    assert!(text.ends_with("\n\n"), "the stream ends with a whole event");
    let events: Vec<&str> = text
        .strip_suffix("\n\n")
        .unwrap_or("")
        .split("\n\n")
        .collect();
    let last = events.len() - 1;
    for (i, e) in events.iter().enumerate() {
        let payload = e
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event {i} is not one data line: {e:?}"));
        assert!(!payload.contains('\n'), "event {i} is one line: {e:?}");
        let terminal = if payload == "[DONE]" {
            assert_eq!(
                *end,
                StreamEnd::Complete,
                "[DONE] only on a complete stream"
            );
            true
        } else {
            let v: Value = serde_json::from_str(payload)
                .unwrap_or_else(|err| panic!("event {i} is not JSON ({err}): {payload:?}"));
            assert!(v.is_object(), "event {i} is an object");
            match v.get("error") {
                Some(err) => {
                    assert!(err["message"].is_string(), "error events have a message");
                    assert_ne!(
                        *end,
                        StreamEnd::Complete,
                        "no error event on a complete stream"
                    );
                    true
                }
                None => false,
            }
        };
        assert_eq!(
            terminal,
            i == last,
            "exactly one terminal event, last: {text:?}"
        );
    }
}

/// One `/v1/messages` stream relay ([`messages_native::stream`]) for `dialect` (Anthropic,
/// Bedrock or Vertex). Flags: bit 7 repair event stream checksums (Bedrock).
pub fn messages_stream(dialect: Dialect, data: &[u8]) {
    let (flags, pieces, stream) = split_input(data);
    let mut repaired = Vec::new();
    let (pieces, stream) = match repair_checksums(flags, &pieces, stream, &mut repaired) {
        Some(repaired) => repaired,
        None => (pieces, stream),
    };
    let t = target(dialect);
    let run = |pieces: &[&[u8]]| {
        let mut tr = messages_native::stream(&t, "client-model");
        let mut out = Vec::new();
        for p in pieces {
            tr.feed(p, &mut out);
        }
        let end = tr.finish(&mut out);
        assert!(tr.ended(), "a finished relay has ended");
        (out, end, tr.usage())
    };
    let (out, end, usage) = run(&pieces);
    assert_eq!(
        run(&[stream]),
        (out.clone(), end.clone(), usage),
        "split changes the client stream"
    );
    check_messages_stream(&out, &end);
}

/// The client stream is Anthropic SSE (`event: <name>\ndata: <one line>\n\n` each) ending in
/// exactly one terminal event: `message_stop` when [`StreamEnd::Complete`], else an `error`
/// event whose data is JSON with an `error` object. Relayed events' data is the host's and is
/// not checked to be JSON; a relayed `message_start` names the client's model.
pub fn check_messages_stream(out: &[u8], end: &StreamEnd) {
    assert!(out.ends_with(b"\n\n"), "the stream ends with a whole event");
    let mut rest = out;
    let mut terminal = None;
    while !rest.is_empty() {
        assert!(terminal.is_none(), "nothing follows the terminal event");
        let ev = rest.strip_prefix(b"event: ").unwrap_or_else(|| {
            panic!(
                "an event starts with its name: {:?}",
                String::from_utf8_lossy(rest)
            )
        });
        let nl = memchr::memchr(b'\n', ev).expect("the name line ends");
        let name = &ev[..nl];
        let ev = ev[nl + 1..]
            .strip_prefix(b"data: ")
            .expect("the name is followed by one data line");
        let nl = memchr::memchr(b'\n', ev).expect("the data line ends");
        let data = &ev[..nl];
        assert_eq!(ev.get(nl + 1), Some(&b'\n'), "a blank line ends the event");
        assert!(
            !name.contains(&b'\r') && !data.contains(&b'\r'),
            "no CR in an event"
        );
        rest = &ev[nl + 2..];
        match name {
            b"message_stop" => terminal = Some(true),
            b"error" => {
                let v: Value = serde_json::from_slice(data).expect("an error event is JSON");
                assert!(
                    v["error"].is_object(),
                    "an error event has an error object: {v}"
                );
                terminal = Some(false);
            }
            b"message_start" => {
                let text = String::from_utf8_lossy(data);
                assert!(
                    text.contains("\"client-model\""),
                    "message_start names the client's model: {text}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        terminal,
        Some(*end == StreamEnd::Complete),
        "message_stop ends a complete stream, an error event any other"
    );
}

/// The `/v1/messages` request and answer splices ([`messages_native`]): byte 0 selects the
/// host (Anthropic, Bedrock, Vertex) and whether the rest is a request or an answer. For a
/// body that is a JSON object, the spliced body means exactly what the edits say: the same
/// object with `model` replaced (Anthropic; Vertex count_tokens) or removed (Bedrock with
/// `stream`, Vertex), `anthropic_version` added unless present; an answer gets the client's
/// model. Nothing panics on any input.
pub fn messages(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let dialect = [
        Dialect::Anthropic,
        Dialect::BedrockAnthropic,
        Dialect::VertexAnthropic,
    ][sel as usize % 3];
    let t = target(dialect);
    let original = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        });
    let _ = messages_native::error(body);
    let _ = messages_native::parse_count_tokens(&t, body);
    if sel & 0x80 != 0 {
        let answer = messages_native::answer(body, "client-model");
        if let Some(mut want) = original {
            let (out, _) = answer.expect("a JSON object is an answer");
            let got: Value = serde_json::from_slice(&out).expect("the answer stays JSON");
            want.insert("model".into(), Value::from("client-model"));
            assert_eq!(got, Value::Object(want), "only the model changes");
        }
        return;
    }
    let count = sel & 0x40 != 0;
    let up = if count {
        messages_native::prepare_count_tokens(&t, body, Some("b1,b2"))
    } else {
        messages_native::prepare(&t, body, sel & 0x20 != 0, None)
    };
    let Some(mut want) = original else {
        return;
    };
    let up = up.expect("a JSON object prepares for a Messages host");
    assert!(up.dropped.is_empty());
    let mut got: Value = serde_json::from_slice(&up.body).expect("the host body is JSON");
    if count && dialect == Dialect::BedrockAnthropic {
        use base64::Engine as _;
        let b64 = got["input"]["invokeModel"]["body"]
            .as_str()
            .expect("CountTokens wraps the InvokeModel body");
        let inner = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("as base64");
        got = serde_json::from_slice(&inner).expect("of a JSON body");
        want.entry("max_tokens").or_insert(Value::from(1));
        want.entry("anthropic_beta")
            .or_insert(serde_json::json!(["b1", "b2"]));
    }
    match dialect {
        Dialect::Anthropic => {
            if want.contains_key("model") {
                want.insert("model".into(), Value::from(t.upstream_model));
            }
        }
        Dialect::BedrockAnthropic => {
            want.remove("model");
            want.remove("stream");
            want.entry("anthropic_version")
                .or_insert(Value::from("bedrock-2023-05-31"));
        }
        _ => {
            if count {
                if want.contains_key("model") {
                    want.insert("model".into(), Value::from(t.upstream_model));
                }
            } else {
                want.remove("model");
            }
            want.entry("anthropic_version")
                .or_insert(Value::from("vertex-2023-10-16"));
        }
    }
    assert_eq!(got, Value::Object(want), "only the documented edits");
}

/// The OpenAI/Azure stream filter ([`StreamFilter`]). Flags: bit 0 client wants usage, bit 1
/// Azure, bit 2 the upstream model differs from the client's, bit 3 record the answer's id,
/// model and finish reasons (split-independent too).
pub fn openai_stream(data: &[u8]) {
    let (flags, pieces, stream) = split_input(data);
    let wants_usage = flags & 1 != 0;
    let make = || {
        if flags & 2 != 0 {
            StreamFilter::azure("client-model", wants_usage)
        } else if flags & 4 != 0 {
            StreamFilter::new("gpt-4o-2024-08-06", "client-model", wants_usage)
        } else {
            StreamFilter::new("client-model", "client-model", wants_usage)
        }
    };
    let run = |pieces: &[&[u8]]| {
        let mut f = make();
        f.answer().record = flags & 8 != 0;
        let mut forwarded = Vec::new();
        for p in pieces {
            let mut out = Vec::new();
            if f.feed(p, &mut out) {
                assert!(out.is_empty(), "an identity chunk writes nothing");
                forwarded.extend_from_slice(p);
            } else {
                forwarded.extend_from_slice(&out);
            }
        }
        f.finish(&mut forwarded);
        let model = f.model().map(str::to_owned);
        let answer = f.answer().clone();
        (
            forwarded,
            f.usage(),
            model,
            f.saw_done(),
            f.is_identity(),
            answer,
        )
    };
    let whole = run(&[stream]);
    assert_eq!(run(&pieces), whole, "split changes the filtered stream");
    if whole.4 {
        assert_eq!(whole.0, stream, "the identity filter forwards every byte");
    }
}

/// Non-stream answers: byte 0 selects the dialect, byte 1 what to parse (chat answer,
/// embeddings answers separated by 0xFF bytes, or an error with status from byte 2), byte 3
/// flags (legacy completion; Bedrock's input-token header).
pub fn answers(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let dialect = DIALECTS[data[0] as usize % DIALECTS.len()];
    let t = target(dialect);
    let body = &data[4..];
    let flags = data[3];
    let header = (flags & 2 != 0).then_some(7);
    match data[1] % 3 {
        0 => {
            let answer = Answer {
                body,
                input_tokens_header: header,
            };
            if let Ok(c) = translate::parse_chat(&t, &answer) {
                let ctx = ResponseCtx {
                    client_model: "client-model",
                    created: 1,
                    fallback_id: "req-1",
                    front: FrontDoor::legacy(flags & 1 != 0),
                    include_usage: false,
                    echo: "",
                };
                let out = response::render(&c, &ctx);
                let v: Value = serde_json::from_slice(&out).expect("a rendered answer is JSON");
                assert!(v.is_object());
            }
            // An OpenAI-shaped answer with the model renamed: refused exactly when it is not
            // JSON, and JSON with the client's model when rewritten.
            let renamed = crate::openai_upstream::translate_response(body, "client-model");
            let tree = serde_json::from_slice::<Value>(body);
            assert_eq!(
                renamed.is_some(),
                tree.is_ok(),
                "translate_response and serde_json"
            );
            if let Some((Some(out), _)) = renamed {
                let v: Value = serde_json::from_slice(&out).expect("a renamed answer is JSON");
                assert_eq!(v["model"], "client-model");
            }
        }
        1 => {
            let answers: Vec<Answer<'_>> = body
                .split(|b| *b == 0xFF)
                .map(|body| Answer {
                    body,
                    input_tokens_header: header,
                })
                .collect();
            if let Ok(e) = translate::parse_embeddings(&t, &answers) {
                for format in [EncodingFormat::Float, EncodingFormat::Base64] {
                    let out = embeddings::render(&e, "client-model", format);
                    let _: Value =
                        serde_json::from_slice(&out).expect("rendered embeddings are JSON");
                }
                let _ = embeddings::usage(&e);
            }
        }
        _ => {
            const STATUSES: [u16; 12] =
                [400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 529];
            let b = data[2];
            let status = if b & 0x80 != 0 {
                STATUSES[(b & 0x7F) as usize % STATUSES.len()]
            } else {
                400 + u16::from(b) * 2 % 200
            };
            let aws = std::str::from_utf8(body)
                .ok()
                .filter(|_| flags & 4 != 0)
                .and_then(|s| s.split('\n').next());
            let hints = ErrorHints {
                aws_error_type: aws,
            };
            let reply = translate::translate_error(&t, status, body, &hints);
            assert!(
                (400..600).contains(&reply.status),
                "an error stays an error: {}",
                reply.status
            );
            let v: Value = serde_json::from_slice(&reply.body).expect("the error body is JSON");
            // OpenAI-shaped upstreams' own envelopes (`error.message`) pass through as they
            // are (openai::upstream_error_body); every translated error has all the fields.
            let openai_shaped = matches!(dialect, Dialect::OpenAi | Dialect::Azure);
            assert!(
                v["error"]["message"].is_string()
                    && (openai_shaped || v["error"]["type"].is_string()),
                "an OpenAI error envelope: {v}"
            );
        }
    }
}

/// Request translation: byte 0 selects the endpoint, the rest is the client's body. Whatever
/// the gateway accepts must prepare (or be refused) for every dialect, with a JSON body.
pub fn request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let endpoint = match sel % 4 {
        0 => Endpoint::ChatCompletions,
        1 => Endpoint::Completions,
        2 => Endpoint::Embeddings,
        _ => Endpoint::Messages,
    };
    // The one-walk reading of a body refuses exactly what serde_json refuses.
    assert_eq!(
        crate::json_shape::Fields::parse(body).is_ok(),
        serde_json::from_slice::<Value>(body).is_ok(),
        "Fields::parse and serde_json"
    );
    let Ok(parsed) = parse_request(endpoint, body) else {
        return;
    };
    if endpoint == Endpoint::Messages {
        // The Messages front door: checks, then decoding into the neutral model for every
        // provider dialect (Claude hosts take the body itself: the `messages` target).
        let _ = crate::front::messages::request::validate(&parsed, sel & 0x10 != 0);
        if let Ok(req) = ChatRequest::from_parsed(&parsed) {
            for d in DIALECTS {
                if let Ok(up) = translate::prepare_chat(&target(d), &req) {
                    let _: Value = serde_json::from_slice(&up.body).expect("chat bodies are JSON");
                }
            }
        }
        return;
    }
    let up = crate::openai_upstream::prepare_request(&parsed, "up-model");
    let _: Value = serde_json::from_slice(&up).expect("an OpenAI upstream body is JSON");
    if endpoint == Endpoint::Embeddings {
        let Ok(req) = parsed.body().and_then(EmbeddingsRequest::from_body) else {
            return;
        };
        for d in DIALECTS {
            if let Ok(call) = translate::prepare_embeddings(&target(d), &req) {
                assert!(call.path.starts_with('/'), "{d:?}: path {}", call.path);
                assert!(!call.bodies.is_empty(), "{d:?}: at least one call");
                for b in &call.bodies {
                    let _: Value = serde_json::from_slice(b).expect("embeddings bodies are JSON");
                }
            }
        }
    } else {
        let Ok(req) = ChatRequest::from_parsed(&parsed) else {
            return;
        };
        for d in DIALECTS {
            if let Ok(up) = translate::prepare_chat(&target(d), &req) {
                assert!(up.path.starts_with('/'), "{d:?}: path {}", up.path);
                let _: Value = serde_json::from_slice(&up.body).expect("chat bodies are JSON");
            }
        }
    }
}

/// The Responses front door's request side: bit 0 of byte 0 gives a `previous_response_id`
/// to echo, bit 1 splices the body's own items in again as history; the rest is the body.
pub fn responses(data: &[u8]) {
    use crate::front::responses::{answer, request as rq};
    let Some((&sel, raw)) = data.split_first() else {
        return;
    };
    // The embeddings endpoint requires `input` too: a stand-in for the Responses route.
    if let Ok(parsed) = parse_request(Endpoint::Embeddings, raw) {
        let _ = rq::validate(&parsed);
    }
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(raw) else {
        return;
    };
    let echo = rq::echo(&body, (sel & 1 != 0).then_some("resp_prev"));
    let _: Value = serde_json::from_str(&format!("{{{echo}}}")).expect("echo is object members");
    let decoded = rq::decode(&body);
    if let Ok(items) = rq::input_items(&body, "seed") {
        assert!(
            items.iter().all(|i| i["id"].is_string()),
            "every item has an id"
        );
        // Stored items read back as the same conversation.
        let mut stored = body.clone();
        stored.insert("input".into(), Value::Array(items.clone()));
        if let (Ok(a), Ok(b)) = (&decoded, rq::decode(&stored)) {
            assert_eq!(
                a.messages, b.messages,
                "stored items decode as the input did"
            );
        }
        if sel & 2 != 0 {
            rq::prepend_history(&mut body, items).expect("input was a string or a list");
            assert!(body.get("previous_response_id").is_none());
            let _ = rq::decode(&body);
        }
    }
    let Ok(req) = decoded else {
        return;
    };
    assert_eq!(req.front, FrontDoor::Responses);
    for d in DIALECTS {
        if let Ok(up) = translate::prepare_chat(&target(d), &req) {
            let _: Value = serde_json::from_slice(&up.body).expect("chat bodies are JSON");
        }
    }
    let ctx = ResponseCtx {
        client_model: "client-model",
        created: 1,
        fallback_id: "fz",
        front: FrontDoor::Responses,
        include_usage: true,
        echo: &echo,
    };
    let c = crate::chat::Completion {
        id: None,
        choices: vec![crate::chat::Choice {
            content: req.messages.last().map(crate::chat::Message::text),
            ..Default::default()
        }],
        usage: None,
    };
    let rendered = response::render(&c, &ctx);
    let v: Value = serde_json::from_slice(&rendered).expect("a response object is JSON");
    assert_eq!(v["object"], "response");
    assert_eq!(
        answer::output_items(&rendered).len(),
        v["output"].as_array().map_or(0, Vec::len)
    );
}

/// The harness of a stream target by name (`stream_<dialect>`), for the regression test.
pub fn by_name(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "sse_decoder" => sse_decoder,
        "eventstream_decoder" => eventstream_decoder,
        "stream_openai" => openai_stream,
        "stream_anthropic" => |d| stream(Dialect::Anthropic, d),
        "stream_bedrock_converse" => |d| stream(Dialect::BedrockConverse, d),
        "stream_bedrock_anthropic" => |d| stream(Dialect::BedrockAnthropic, d),
        "stream_vertex_gemini" => |d| stream(Dialect::VertexGemini, d),
        "stream_vertex_anthropic" => |d| stream(Dialect::VertexAnthropic, d),
        "stream_watsonx" => |d| stream(Dialect::Watsonx, d),
        "stream_oci_generic" => |d| stream(Dialect::OciGeneric, d),
        "stream_oci_cohere" => |d| stream(Dialect::OciCohere, d),
        "stream_openai_chat" => |d| stream(Dialect::OpenAi, d),
        "messages_stream_anthropic" => |d| messages_stream(Dialect::Anthropic, d),
        "messages_stream_bedrock" => |d| messages_stream(Dialect::BedrockAnthropic, d),
        "messages_stream_vertex" => |d| messages_stream(Dialect::VertexAnthropic, d),
        "messages" => messages,
        "answers" => answers,
        "request" => request,
        "responses" => responses,
        "cache_key" => cache_key,
        "usage" => usage,
        _ => return None,
    })
}

/// Fuzz target `cache_key`: see the module docs.
pub fn cache_key(data: &[u8]) {
    use crate::cache_key::{canonical, refresh, Identity};
    let ident = Identity::find(data);
    let mut out = Vec::new();
    let same_id = ident.id.clone().unwrap_or_default();
    refresh(data, &ident, &same_id, ident.created.unwrap_or(0), &mut out);
    if ident.id.is_some() && ident.created.is_some() {
        assert_eq!(
            out, data,
            "refreshing an identity to itself changed the bytes"
        );
    }
    out.clear();
    refresh(data, &ident, "x", 1, &mut out);
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut first = Vec::new();
    canonical(&body, &mut first);
    let Ok(Value::Object(again)) = serde_json::from_slice::<Value>(&first) else {
        panic!("the canonical form is not a JSON object: {first:?}");
    };
    let mut second = Vec::new();
    canonical(&again, &mut second);
    assert_eq!(first, second, "the canonical form is not idempotent");
    let reversed: serde_json::Map<String, Value> = body
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut third = Vec::new();
    canonical(&reversed, &mut third);
    assert_eq!(first, third, "key order changed the canonical form");
}

/// Fuzz target `usage`: see the module docs. Byte 0 primes the meters (bit 0: a model is
/// already known, bit 1: counts are already known); the rest is one document.
pub fn usage(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let doc = data.get(1..).unwrap_or(&[]);
    let mut scanned = UsageMeter::new();
    if flags & 1 != 0 {
        scanned.observe_json(br#"{"model":"before","usage":null}"#);
    }
    if flags & 2 != 0 {
        scanned.observe_counts(Some(100), None);
    }
    let mut reference = scanned.clone();
    scanned.observe_json(doc);
    reference.observe_json_serde(doc);
    assert_eq!(
        scanned,
        reference,
        "the scanned usage reading differs from serde_json's on {:?}",
        String::from_utf8_lossy(doc)
    );
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    /// The stream harnesses with the answer recorded (flag bit 3), over real streams and
    /// byte-flipped copies of them: split-independent, never a panic.
    #[test]
    fn recorded_answers_survive_the_stream_harnesses() {
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let openai = b"data: {\"id\":\"c1\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (dialect, body) in [
            (Some(Dialect::Anthropic), &anthropic[..]),
            (Some(Dialect::OpenAi), &openai[..]),
            (None, &openai[..]),
        ] {
            for round in 0..300 {
                let mut data = vec![8 | (next() as u8 & 7), 3, 7, 40, 91];
                data.extend_from_slice(body);
                if round > 0 {
                    for _ in 0..(next() % 4) {
                        let i = 5 + (next() as usize) % body.len();
                        data[i] ^= next() as u8;
                    }
                }
                match dialect {
                    Some(d) => stream(d, &data),
                    None => openai_stream(&data),
                }
            }
        }
    }
}
