//! Requests to and responses from OpenAI-shaped upstreams (OpenAI itself; later Azure OpenAI
//! and other OpenAI-compatible services).
//!
//! The client's model name is swapped for the provider's on the way up and back on the way
//! down; streams always ask the upstream for the final usage chunk so every request can be
//! metered, and that chunk is removed again when the client did not ask for it.

use memchr::memmem;
use serde_json::{Map, Value};

use crate::openai::{ParsedRequest, Usage};
use crate::sse::SseFramer;
use crate::translate::StreamAnswer;

/// The upstream body: the client's, with the provider's model name, and
/// `stream_options.include_usage` forced on for streams. Spliced from the client's bytes
/// (every other field goes up as the client wrote it): no JSON tree is built, and the result
/// is about the size of the body.
pub fn prepare_request(parsed: &ParsedRequest, upstream_model: &str) -> Vec<u8> {
    let raw = parsed.raw();
    let mut out = Vec::with_capacity(raw.len() + upstream_model.len() + 48);
    out.push(b'{');
    let mut wrote_options = false;
    for (name, value) in parsed.fields().iter(raw) {
        if out.len() > 1 {
            out.push(b',');
        }
        write_json_str(&mut out, name);
        out.push(b':');
        match name {
            "model" => write_json_str(&mut out, upstream_model),
            "stream_options" if parsed.summary.stream => {
                write_stream_options(&mut out, Some(value));
                wrote_options = true;
            }
            "messages" | "tools"
                if memmem::find(value, b"\"cache_control\"").is_some()
                    || (name == "messages"
                        && (memmem::find(value, b"\"thinking_blocks\"").is_some()
                            || memmem::find(value, b"__ts_").is_some())) =>
            {
                write_without_extensions(&mut out, value)
            }
            _ => out.extend_from_slice(value),
        }
    }
    if parsed.summary.stream && !wrote_options {
        out.extend_from_slice(b",\"stream_options\":");
        write_stream_options(&mut out, None);
    }
    out.push(b'}');
    out
}

/// `messages` or `tools` without the Anthropic-style `cache_control` markers some clients add
/// (on a message, a content part, a tool or its `function`): OpenAI caches prompt prefixes by
/// itself and has no such field, and its APIs refuse unknown fields on content parts. Also
/// without the `thinking_blocks` of assistant messages (Claude's signed reasoning, which the
/// gateway hands out for Claude hosts only: after a fallback it means nothing here), and with
/// Gemini's thought signatures taken out of tool call ids
/// ([`crate::providers::gemini::host_tool_id`]: OpenAI refuses ids over 40 characters). Only
/// bodies that contain the names pay for the JSON tree; an unreadable value goes up unchanged.
fn write_without_extensions(out: &mut Vec<u8>, value: &[u8]) {
    let Ok(mut v) = serde_json::from_slice::<Value>(value) else {
        out.extend_from_slice(value);
        return;
    };
    let strip = |o: &mut Value| {
        if let Some(o) = o.as_object_mut() {
            o.remove("cache_control");
        }
    };
    for item in v.as_array_mut().into_iter().flatten() {
        strip(item);
        if let Some(o) = item.as_object_mut() {
            o.remove("thinking_blocks");
            short_id(o.get_mut("tool_call_id"));
            for call in o
                .get_mut("tool_calls")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                short_id(call.get_mut("id"));
            }
        }
        if let Some(f) = item.get_mut("function") {
            strip(f);
        }
        if let Some(Value::Array(parts)) = item.get_mut("content") {
            parts.iter_mut().for_each(strip);
        }
    }
    serde_json::to_writer(out, &v).expect("a JSON value always serializes");
}

/// A tool call id without a Gemini thought signature in it.
fn short_id(id: Option<&mut Value>) {
    if let Some(Value::String(s)) = id {
        if let std::borrow::Cow::Owned(short) = crate::providers::gemini::host_tool_id(s) {
            *s = short;
        }
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serializes");
}

/// The client's `stream_options` (an object, or none) with `include_usage: true`.
fn write_stream_options(out: &mut Vec<u8>, client: Option<&[u8]>) {
    let mut opts = client
        .and_then(|v| serde_json::from_slice::<Map<String, Value>>(v).ok())
        .unwrap_or_default();
    opts.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_writer(out, &opts).expect("a JSON map always serializes");
}

/// Rewrites a buffered (non-stream) upstream response for the client: the client's model name
/// restored. Returns the body to send (None: the upstream's, unchanged) and the usage it
/// reports; None when the body is not JSON at all (an unusable answer).
///
/// The answer goes back as the upstream wrote it (its field order, spacing and numbers),
/// only the `model` value replaced. One checking walk finds `model` and `usage`
/// ([`splice_model`]); what it cannot vouch for is read into a JSON tree.
pub fn translate_response(
    body: &[u8],
    client_model: &str,
) -> Option<(Option<Vec<u8>>, Option<Usage>)> {
    if let Some(answer) = splice_model(body, client_model) {
        return Some(answer);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let usage = Usage::from_response(&v);
    Some(match v.get_mut("model") {
        Some(m) if m.is_string() && m.as_str() != Some(client_model) => {
            *m = Value::String(client_model.to_owned());
            (
                Some(serde_json::to_vec(&v).expect("a JSON value serializes")),
                usage,
            )
        }
        _ => (None, usage),
    })
}

/// [`translate_response`] without a tree: the body checked as `serde_json` would read it
/// and its top-level `model` and `usage` located in one walk, the client's model spliced in.
/// None: no verdict (not an object, a repeated or escaped name, an escaped model, a usage
/// that does not read as one...): the tree decides.
fn splice_model(body: &[u8], client_model: &str) -> Option<(Option<Vec<u8>>, Option<Usage>)> {
    let (mut model, mut usage, mut plain) = (None, None, true);
    crate::json_shape::scan_object(body, |key, escaped, value| {
        let slot = match &body[key] {
            _ if escaped => {
                plain = false;
                return;
            }
            b"model" => &mut model,
            b"usage" => &mut usage,
            _ => return,
        };
        plain &= slot.replace(value).is_none();
    })?;
    if !plain {
        return None;
    }
    let usage = match usage.map(|r| &body[r]) {
        None | Some(b"null") => None,
        Some(u) => Some(serde_json::from_slice::<Usage>(u).ok()?),
    };
    let Some(model) = model else {
        return Some((None, usage));
    };
    let name = match body[model.clone()].strip_prefix(b"\"") {
        Some(quoted) => &quoted[..quoted.len() - 1],
        None => return Some((None, usage)), // not a string: left as it is
    };
    if name.contains(&b'\\') {
        return None;
    }
    if name == client_model.as_bytes() {
        return Some((None, usage));
    }
    let mut out = Vec::with_capacity(body.len() + client_model.len() + 2);
    out.extend_from_slice(&body[..model.start]);
    write_json_str(&mut out, client_model);
    out.extend_from_slice(&body[model.end..]);
    Some((Some(out), usage))
}

/// The `usage` and `model` an OpenAI-shaped JSON object reports.
fn reported(body: &[u8]) -> Option<(Usage, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Reported {
        usage: Option<Usage>,
        model: Option<String>,
    }
    let r = serde_json::from_slice::<Reported>(body).ok()?;
    Some((r.usage?, r.model))
}

/// Filters an OpenAI SSE stream for the client, chunk by chunk.
pub struct StreamFilter {
    framer: SseFramer,
    /// `"model":"<upstream>"` as it appears in upstream chunks, when it must be rewritten.
    model_from: Option<Vec<u8>>,
    model_to: Vec<u8>,
    strip_usage: bool,
    usage: Option<Usage>,
    model: Option<String>,
    saw_done: bool,
    /// Complete events seen that are not comments (keep-alives): the stream's progress.
    events: u64,
    /// Azure OpenAI: rewrite whatever model each chunk names (the underlying model, not the
    /// deployment) and drop the content-filter chunks that have no choices and no usage.
    azure: bool,
    /// The answer's id, model and finish reasons, for the gateway's trace (only read
    /// when `answer.record`).
    answer: StreamAnswer,
    /// The first JSON event has been read for the answer's id and model.
    head_read: bool,
}

impl StreamFilter {
    /// For Azure OpenAI streams (see the `azure` field).
    pub fn azure(client_model: &str, client_wants_usage: bool) -> Self {
        let mut f = Self::new("", client_model, client_wants_usage);
        f.model_from = None;
        f.azure = true;
        f
    }

    pub fn new(upstream_model: &str, client_model: &str, client_wants_usage: bool) -> Self {
        let quoted = |m: &str| {
            let mut v = b"\"model\":".to_vec();
            v.extend_from_slice(&serde_json::to_vec(m).expect("string serializes"));
            v
        };
        Self {
            framer: SseFramer::new(),
            model_from: (upstream_model != client_model).then(|| quoted(upstream_model)),
            model_to: quoted(client_model),
            strip_usage: !client_wants_usage,
            usage: None,
            model: None,
            saw_done: false,
            events: 0,
            azure: false,
            answer: StreamAnswer::default(),
            head_read: false,
        }
    }

    /// True when the client's stream is byte-identical to the upstream's, so chunks can be
    /// forwarded without copying.
    pub fn is_identity(&self) -> bool {
        self.model_from.is_none() && !self.strip_usage && !self.azure
    }

    /// Feeds one upstream chunk. Returns true when the chunk itself should be forwarded
    /// unchanged; otherwise the bytes to forward were appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        let identity = self.is_identity();
        let Self {
            framer,
            model_from,
            model_to,
            strip_usage,
            usage,
            model,
            saw_done,
            events,
            azure,
            answer,
            head_read,
        } = self;
        framer.feed(chunk, |event| {
            if event.first() != Some(&b':') {
                *events += 1;
            }
            let data = event_data(event);
            if data == b"[DONE]" {
                *saw_done = true;
            }
            if answer.record {
                note_answer(answer, head_read, data);
            }
            let has_usage = memmem::find(data, b"\"usage\":{").is_some();
            if has_usage {
                if let Some((u, m)) = reported(data) {
                    *usage = Some(u);
                    *model = m;
                }
            }
            if identity {
                return;
            }
            let no_choices = memmem::find(data, b"\"choices\":[]").is_some();
            if *strip_usage && has_usage && no_choices {
                return; // the usage-only chunk the gateway asked for, not the client
            }
            if *azure && no_choices && !has_usage {
                return; // Azure's prompt content-filter annotations
            }
            if *azure {
                if let Some((from, to)) = model_value(event) {
                    out.extend_from_slice(&event[..from]);
                    out.extend_from_slice(model_to);
                    let rest = &event[to..];
                    strip_null_usage(rest, *strip_usage, out);
                    return;
                }
            }
            let mut start = 0;
            if let Some(from) = model_from.as_deref() {
                if let Some(pos) = memmem::find(event, from) {
                    out.extend_from_slice(&event[..pos]);
                    out.extend_from_slice(model_to);
                    start = pos + from.len();
                }
            }
            strip_null_usage(&event[start..], *strip_usage, out);
        });
        identity
    }

    /// End of the upstream stream: flushes any unterminated trailing bytes.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let rest = self.framer.take_rest();
        if !self.is_identity() {
            out.extend_from_slice(&rest);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The model named by the chunk that carried the usage.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The answer's id, model and finish reasons: set `record` before the first `feed`
    /// (for a sampled trace), read at the end.
    pub fn answer(&mut self) -> &mut StreamAnswer {
        &mut self.answer
    }

    /// Complete events seen so far, comments (keep-alives) not counted.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Whether the upstream ended its stream properly with `data: [DONE]`.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }
}

/// Notes what a chunk's `data` says about the answer: the top-level `id` and `model` of the
/// first JSON chunk (parsed once per stream), and every choice's non-null `finish_reason`
/// (found by its key: a scan, no parse).
fn note_answer(answer: &mut StreamAnswer, head_read: &mut bool, data: &[u8]) {
    if !*head_read && data.first() == Some(&b'{') {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(default, borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            model: Option<std::borrow::Cow<'a, str>>,
        }
        *head_read = true;
        if let Ok(h) = serde_json::from_slice::<Head<'_>>(data) {
            answer.note_id(h.id.as_deref().unwrap_or_default());
            answer.note_model(h.model.as_deref().unwrap_or_default());
        }
    }
    const KEY: &[u8] = b"\"finish_reason\":";
    for at in memmem::find_iter(data, KEY) {
        let rest = &data[at + KEY.len()..];
        let rest = &rest[rest.len() - rest.trim_ascii_start().len()..];
        let Some(value) = rest.strip_prefix(b"\"") else {
            continue; // null
        };
        // Finish reasons are plain words: one with an escape is not worth decoding.
        let Some(end) = memchr::memchr2(b'"', b'\\', value) else {
            continue;
        };
        if value[end] == b'"' {
            if let Ok(reason) = std::str::from_utf8(&value[..end]) {
                answer.note_finish(reason);
            }
        }
    }
}

/// Appends `rest`, without its `,"usage":null` when `strip`.
fn strip_null_usage(rest: &[u8], strip: bool, out: &mut Vec<u8>) {
    if strip {
        if let Some(pos) = memmem::find(rest, b",\"usage\":null") {
            out.extend_from_slice(&rest[..pos]);
            out.extend_from_slice(&rest[pos + 13..]);
            return;
        }
    }
    out.extend_from_slice(rest);
}

/// The byte range of the first `"model":"…"` member (from its key to the closing quote).
fn model_value(event: &[u8]) -> Option<(usize, usize)> {
    let key = memmem::find(event, b"\"model\":\"")?;
    let value = key + 9;
    let mut i = value;
    while i < event.len() {
        match event[i] {
            b'\\' => i += 2,
            b'"' => return Some((key, i + 1)),
            _ => i += 1,
        }
    }
    None
}

/// The payload of a single-line `data:` event (the OpenAI format), or the empty slice.
fn event_data(event: &[u8]) -> &[u8] {
    let line_end = memchr::memchr2(b'\n', b'\r', event).unwrap_or(event.len());
    let line = &event[..line_end];
    match line.strip_prefix(b"data:") {
        Some(d) => d.strip_prefix(b" ").unwrap_or(d),
        None => b"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse_request, Endpoint};

    const STREAM: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4-0125-preview\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4-0125-preview\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \xc3\xa9\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4-0125-preview\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4-0125-preview\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

    fn run(filter: &mut StreamFilter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            let mut o = Vec::new();
            if filter.feed(c, &mut o) {
                out.extend_from_slice(c);
            } else {
                out.extend_from_slice(&o);
            }
        }
        let mut o = Vec::new();
        filter.finish(&mut o);
        out.extend_from_slice(&o);
        out
    }

    /// A recording filter notes the first chunk's id and model and each choice's finish
    /// reason (at every split, also with spaces after the colon, as Python servers write);
    /// one that does not record keeps nothing.
    #[test]
    fn a_recording_filter_notes_the_answers_id_model_and_finish_reasons() {
        let two_choices = b"data: {\"id\": \"c2\", \"model\": \"m-x\", \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"length\"}, {\"index\": 1, \"delta\": {}, \"finish_reason\": null}]}\n\n\
data: {\"id\": \"c2\", \"model\": \"m-y\", \"choices\": [{\"index\": 1, \"delta\": {}, \"finish_reason\": \"stop\"}]}\n\ndata: [DONE]\n\n";
        for (stream, id, model, reasons) in [
            (STREAM, "c1", "gpt-4-0125-preview", &["stop"][..]),
            (&two_choices[..], "c2", "m-x", &["length", "stop"][..]),
        ] {
            for split in 0..=stream.len() {
                let (a, b) = stream.split_at(split);
                let mut f = StreamFilter::new("gpt-4-0125-preview", "gpt-4", false);
                f.answer().record = true;
                run(&mut f, &[a, b]);
                let got = f.answer().clone();
                assert_eq!(got.id.as_deref(), Some(id), "split {split}");
                assert_eq!(got.model.as_deref(), Some(model), "split {split}");
                assert_eq!(got.finish_reasons, reasons, "split {split}");
            }
        }
        let mut f = StreamFilter::new("gpt-4-0125-preview", "gpt-4", false);
        run(&mut f, &[STREAM]);
        assert_eq!(*f.answer(), StreamAnswer::default());
        // Odd values: escaped, unterminated, not a string: skipped, never a panic.
        let mut f = StreamFilter::new("m", "m", true);
        f.answer().record = true;
        run(
            &mut f,
            &[b"data: {\"finish_reason\":\"a\\u0041\"}\n\ndata: {\"finish_reason\":7}\n\ndata: {\"finish_reason\":\"st"],
        );
        assert!(f.answer().finish_reasons.is_empty());
        assert_eq!(f.answer().id, None);
    }

    #[test]
    fn prepare_sets_model_and_forces_usage() {
        let p = parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"gpt-4","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&prepare_request(&p, "gpt-4-0125-preview")).unwrap();
        assert_eq!(v["model"], "gpt-4-0125-preview");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn prepare_strips_cache_control_markers() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"system","content":[{"type":"text","text":"Rules","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"Hi","cache_control":{"type":"ephemeral"}}],"tools":[{"type":"function","cache_control":{"type":"ephemeral"},"function":{"name":"f","parameters":{},"cache_control":{"type":"ephemeral"}}}]}"#;
        let p = parse_request(Endpoint::ChatCompletions, body).unwrap();
        let out = prepare_request(&p, "gpt-4o");
        assert!(memmem::find(&out, b"cache_control").is_none());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["messages"][0]["content"][0],
            serde_json::json!({"type":"text","text":"Rules"})
        );
        assert_eq!(
            v["messages"][1],
            serde_json::json!({"role":"user","content":"Hi"})
        );
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        // Without markers the client's bytes go up as they are.
        let plain = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#;
        let p = parse_request(Endpoint::ChatCompletions, plain).unwrap();
        let out = prepare_request(&p, "gpt-4o");
        assert!(memmem::find(&out, br#""messages":[{"role":"user","content":"x"}]"#).is_some());
    }

    /// Claude's signed reasoning blocks never reach an OpenAI host (a fallback from Claude).
    #[test]
    fn prepare_strips_thinking_blocks() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"thinking_blocks":[{"type":"thinking","thinking":"t","signature":"s"}],"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"toolu_1","content":"ok"}]}"#;
        let p = parse_request(Endpoint::ChatCompletions, body).unwrap();
        let out = prepare_request(&p, "gpt-4o");
        assert!(memmem::find(&out, b"thinking_blocks").is_none());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][1]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        // A Gemini thought signature in a tool call id (fallback from Gemini): a short id, the
        // call and its result alike; an id that only looks signed stays.
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_0__ts_CiQB-_-_ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3hXmRIWY","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"x__ts_","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_0__ts_CiQB-_-_ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3hXmRIWY","content":"ok"},{"role":"tool","tool_call_id":"x__ts_","content":"ok"}]}"#;
        let p = parse_request(Endpoint::ChatCompletions, body).unwrap();
        let v: Value = serde_json::from_slice(&prepare_request(&p, "gpt-4o")).unwrap();
        let id = v["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
        assert!(id.starts_with("call_0_") && id.len() <= 40, "{id}");
        assert_eq!(v["messages"][2]["tool_call_id"], id);
        assert_eq!(v["messages"][1]["tool_calls"][1]["id"], "x__ts_");
    }

    #[test]
    fn stream_rewrites_model_and_strips_usage_at_every_split() {
        let mut whole = StreamFilter::new("gpt-4-0125-preview", "gpt-4", false);
        let expected = run(&mut whole, &[STREAM]);
        let text = String::from_utf8(expected.clone()).unwrap();
        assert!(!text.contains("gpt-4-0125-preview"));
        assert_eq!(text.matches("\"model\":\"gpt-4\"").count(), 3);
        assert!(!text.contains("\"usage\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(whole.usage(), Some(Usage::new(9, 2)));
        for split in 0..STREAM.len() {
            let mut f = StreamFilter::new("gpt-4-0125-preview", "gpt-4", false);
            assert_eq!(
                run(&mut f, &[&STREAM[..split], &STREAM[split..]]),
                expected,
                "split {split}"
            );
            assert_eq!(f.usage(), Some(Usage::new(9, 2)));
        }
    }

    #[test]
    fn identity_stream_is_forwarded_untouched_and_metered() {
        let mut f = StreamFilter::new("gpt-4-0125-preview", "gpt-4-0125-preview", true);
        assert!(f.is_identity());
        let mut out = Vec::new();
        assert!(f.feed(&STREAM[..100], &mut out));
        assert!(f.feed(&STREAM[100..], &mut out));
        assert!(out.is_empty());
        assert_eq!(f.usage(), Some(Usage::new(9, 2)));
        assert!(f.saw_done());
    }

    #[test]
    fn azure_streams_lose_filter_chunks_and_name_the_client_model_at_every_split() {
        const AZURE: &[u8] = b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n\
data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n\
data: {\"choices\":[],\"created\":1,\"id\":\"c\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
data: [DONE]\n\n";
        let mut whole = StreamFilter::azure("gpt-4", false);
        let expected = run(&mut whole, &[AZURE]);
        let text = String::from_utf8(expected.clone()).unwrap();
        assert!(!text.contains("prompt_filter_results"), "{text}");
        assert!(!text.contains("gpt-4o-2024"), "{text}");
        assert!(!text.contains("usage"), "{text}");
        assert!(text.contains("\"model\":\"gpt-4\"") && text.ends_with("data: [DONE]\n\n"));
        assert_eq!(whole.usage(), Some(Usage::new(3, 1)));
        for split in 0..AZURE.len() {
            let mut f = StreamFilter::azure("gpt-4", false);
            assert_eq!(run(&mut f, &[&AZURE[..split], &AZURE[split..]]), expected);
        }
        let mut keep = StreamFilter::azure("gpt-4", true);
        let text = String::from_utf8(run(&mut keep, &[AZURE])).unwrap();
        assert!(
            text.contains("\"total_tokens\":4") && !text.contains("gpt-4o-2024"),
            "{text}"
        );
    }

    #[test]
    fn keep_alive_comments_are_relayed_but_not_counted_as_events() {
        let mut f = StreamFilter::new("gpt-4-0125-preview", "gpt-4", true);
        let mut out = Vec::new();
        f.feed(b": keep-alive\n\n: ping\n\n", &mut out);
        assert_eq!(f.events(), 0);
        assert_eq!(out, b": keep-alive\n\n: ping\n\n");
        f.feed(
            b"data: {\"model\":\"gpt-4-0125-preview\"}\n\ndata: [DO",
            &mut out,
        );
        assert_eq!(f.events(), 1);
        f.feed(b"NE]\n\n", &mut out);
        assert_eq!(f.events(), 2);
        assert!(f.saw_done());
    }

    #[test]
    fn response_model_is_restored() {
        let body = br#"{"id":"x","object":"chat.completion","model":"gpt-4-0125-preview","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let (out, usage) = translate_response(body, "gpt-4").unwrap();
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v["model"], "gpt-4");
        assert_eq!(usage, Some(Usage::new(3, 4)));
        assert!(translate_response(b"<html>", "gpt-4").is_none());
        let (out, usage) = translate_response(br#"{"model":"gpt-4"}"#, "gpt-4").unwrap();
        assert_eq!((out, usage), (None, None));
    }

    /// The answer keeps the upstream's bytes but for the model; the walk reads what the
    /// tree reads (usage, whether the body is JSON), and leaves odd bodies to the tree.
    #[test]
    fn response_is_spliced_and_reads_as_the_tree_does() {
        let body = br#"{"id":"x", "model": "gpt-4-0125-preview","choices":[{"index":0,"message":{"role":"assistant","content":"\u00e9","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp","x":1.50}"#;
        let (out, usage) = translate_response(body, "gpt-\"4\"").unwrap();
        let expected = String::from_utf8_lossy(body).replace(
            r#""model": "gpt-4-0125-preview""#,
            r#""model": "gpt-\"4\"""#,
        );
        assert_eq!(String::from_utf8(out.unwrap()).unwrap(), expected);
        assert_eq!(usage, Some(Usage::new(3, 4)));
        // The tree's answer, for bodies the walk reads and bodies it leaves to the tree.
        let tree = |body: &[u8], model: &str| {
            let mut v = serde_json::from_slice::<Value>(body).ok()?;
            let usage = Usage::from_response(&v);
            Some(match v.get_mut("model") {
                Some(m) if m.is_string() && m.as_str() != Some(model) => {
                    *m = Value::String(model.to_owned());
                    (Some(v), usage)
                }
                _ => (None, usage),
            })
        };
        for body in [
            &body[..],
            br#"{"model":"m","usage":null}"#,
            br#"{"model":7,"usage":{"prompt_tokens":1}}"#,
            br#"{"usage":{"prompt_tokens":1.5}}"#,
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            br#"{"usage":[1,2,3]}"#,
            br#"{"model":"a","model":"b"}"#,
            br#"{"mod\u0065l":"a"}"#,
            br#"{"model":"gpt-\u0034"}"#,
            br#"{"model":"gpt-4","x":1e400}"#,
            br#"{"model":"other"} x"#,
            br#"["model"]"#,
            br#"{"model":"other","n":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        ] {
            let got = translate_response(body, "gpt-4").map(|(out, usage)| {
                (out.map(|o| serde_json::from_slice::<Value>(&o).unwrap()), usage)
            });
            assert_eq!(got, tree(body, "gpt-4"), "{}", String::from_utf8_lossy(body));
        }
    }
}
