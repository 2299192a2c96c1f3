//! Writes the client's Messages stream: `message_start`, `ping`, then per content block
//! `content_block_start` / `content_block_delta` (`text_delta`, `thinking_delta`,
//! `signature_delta`, `input_json_delta`) / `content_block_stop`, then `message_delta` with
//! the stop reason and cumulative usage, and `message_stop` — from the same calls the
//! provider stream translators make on [`crate::chat::ChunkWriter`], which delegates here when
//! the client called `/v1/messages`.
//!
//! Blocks are written one at a time, in order, as Anthropic does: a new kind of content (or a
//! new tool call) closes the open block. Usage is known only at the end on most providers, so
//! `message_start` carries zeros and `message_delta` the totals (the SDKs take both).

use super::answer::{stop_reason, usage_json};
use super::errors::type_for_openai;
use crate::chat::{FinishReason, ResponseCtx};
use crate::openai::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    /// A `redacted_thinking` block (complete when opened).
    Redacted,
    /// A tool_use block, for tool call number `.0` of the stream.
    Tool(usize),
}

#[derive(Debug)]
pub struct MessagesEvents {
    id: String,
    model: String,
    started: bool,
    /// Index of the next content block.
    next: usize,
    open: Open,
    /// Block index of each tool call, by the translator's tool index.
    tool_blocks: Vec<usize>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn index(out: &mut Vec<u8>, i: usize) {
    out.extend_from_slice(i.to_string().as_bytes());
}

impl MessagesEvents {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        MessagesEvents {
            id: ctx.response_id(None),
            model: ctx.client_model.to_owned(),
            started: false,
            next: 0,
            open: Open::None,
            tool_blocks: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// Uses the provider's response id (before the first event).
    pub fn set_id(&mut self, ctx: &ResponseCtx<'_>, provider_id: Option<&str>) {
        if !self.started {
            self.id = ctx.response_id(provider_id);
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// `message_start` and a `ping`. Idempotent.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        out.extend_from_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        json_str(out, &self.id);
        out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
        json_str(out, &self.model);
        out.extend_from_slice(
            b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
        );
        out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open == Open::None {
            return;
        }
        self.open = Open::None;
        out.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
        );
        index(out, self.next - 1);
        out.extend_from_slice(b"}\n\n");
    }

    /// Opens a block of `kind` unless one is open; `block` is its `content_block` JSON.
    fn open(&mut self, out: &mut Vec<u8>, kind: Open, block: &[u8]) {
        self.start(out);
        if self.open == kind {
            return;
        }
        self.close(out);
        self.open = kind;
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        index(out, self.next);
        out.extend_from_slice(b",\"content_block\":");
        out.extend_from_slice(block);
        out.extend_from_slice(b"}\n\n");
        self.next += 1;
    }

    fn delta_head(out: &mut Vec<u8>, block: usize) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        index(out, block);
        out.extend_from_slice(b",\"delta\":");
    }

    /// A piece of answer text given as a JSON string literal (with its quotes), copied as is.
    pub fn text_json(&mut self, out: &mut Vec<u8>, literal: &str) {
        if literal.len() <= 2 {
            return;
        }
        self.open(out, Open::Text, b"{\"type\":\"text\",\"text\":\"\"}");
        Self::delta_head(out, self.next - 1);
        out.extend_from_slice(b"{\"type\":\"text_delta\",\"text\":");
        out.extend_from_slice(literal.as_bytes());
        out.extend_from_slice(b"}}\n\n");
    }

    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.open(out, Open::Text, b"{\"type\":\"text\",\"text\":\"\"}");
        Self::delta_head(out, self.next - 1);
        out.extend_from_slice(b"{\"type\":\"text_delta\",\"text\":");
        json_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    pub fn thinking(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.open(
            out,
            Open::Thinking,
            b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
        );
        Self::delta_head(out, self.next - 1);
        out.extend_from_slice(b"{\"type\":\"thinking_delta\",\"thinking\":");
        json_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    /// The signature of the open thinking block (opens one when none is open).
    pub fn signature(&mut self, out: &mut Vec<u8>, signature: &str) {
        if signature.is_empty() {
            return;
        }
        self.open(
            out,
            Open::Thinking,
            b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
        );
        Self::delta_head(out, self.next - 1);
        out.extend_from_slice(b"{\"type\":\"signature_delta\",\"signature\":");
        json_str(out, signature);
        out.extend_from_slice(b"}}\n\n");
        // The signature ends its block (Anthropic sends it just before content_block_stop).
        self.close(out);
    }

    /// A `redacted_thinking` block, whole.
    pub fn redacted_thinking(&mut self, out: &mut Vec<u8>, data: &str) {
        if data.is_empty() {
            return;
        }
        self.close(out);
        let mut block = Vec::with_capacity(48 + data.len());
        block.extend_from_slice(b"{\"type\":\"redacted_thinking\",\"data\":");
        json_str(&mut block, data);
        block.push(b'}');
        self.open(out, Open::Redacted, &block);
        self.close(out);
    }

    pub fn tool_start(&mut self, out: &mut Vec<u8>, tool: usize, id: &str, name: &str) {
        self.start(out);
        self.close(out);
        let mut block = Vec::with_capacity(64 + id.len() + name.len());
        block.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
        json_str(&mut block, id);
        block.extend_from_slice(b",\"name\":");
        json_str(&mut block, name);
        block.extend_from_slice(b",\"input\":{}}");
        if self.tool_blocks.len() <= tool {
            self.tool_blocks.resize(tool + 1, usize::MAX);
        }
        self.tool_blocks[tool] = self.next;
        self.open(out, Open::Tool(tool), &block);
    }

    /// A piece of tool call `tool`'s JSON arguments. A piece for a call whose block was
    /// already closed (a provider interleaving parallel calls) still names that block's index.
    pub fn tool_arguments(&mut self, out: &mut Vec<u8>, tool: usize, fragment: &str) {
        if fragment.is_empty() {
            return;
        }
        let Some(&block) = self.tool_blocks.get(tool).filter(|b| **b != usize::MAX) else {
            return;
        };
        Self::delta_head(out, block);
        out.extend_from_slice(b"{\"type\":\"input_json_delta\",\"partial_json\":");
        json_str(out, fragment);
        out.extend_from_slice(b"}}\n\n");
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason) {
        if self.finish.is_some() {
            return;
        }
        self.start(out);
        self.close(out);
        self.finish = Some(reason);
    }

    pub fn usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// `message_delta` (stop reason, usage) and `message_stop`. Written once.
    pub fn done(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.close(out);
        self.done = true;
        out.extend_from_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out.extend_from_slice(stop_reason(self.finish).as_bytes());
        out.extend_from_slice(b"\",\"stop_sequence\":null},\"usage\":");
        serde_json::to_writer(&mut *out, &usage_json(self.usage)).expect("Vec write");
        out.extend_from_slice(b"}\n\n");
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }

    /// Ends the stream with an `error` event (`kind`: the OpenAI error type the translator
    /// chose, mapped to Anthropic's).
    pub fn error(&mut self, out: &mut Vec<u8>, message: &str, kind: &str) {
        if self.done {
            return;
        }
        self.done = true;
        out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"");
        out.extend_from_slice(type_for_openai(kind).as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        json_str(out, message);
        out.extend_from_slice(b"}}\n\n");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::front::FrontDoor;
    use crate::translate::testing::every_split;
    use crate::translate::StreamEnd;
    use serde_json::Value;

    /// What an Anthropic SDK accumulates from a Messages stream, checking the event grammar on
    /// the way (message_start first; blocks started in order, deltas only to started blocks of
    /// the right kind; message_delta then message_stop last): (text, thinking, signature, tool
    /// calls as (id, name, input), stop_reason, final usage).
    #[allow(clippy::type_complexity)]
    pub fn accumulate(
        out: &[u8],
    ) -> (
        String,
        String,
        String,
        Vec<(String, String, Value)>,
        String,
        Value,
    ) {
        let text = std::str::from_utf8(out).expect("UTF-8");
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (ev, data) = e.split_once('\n').expect("event and data lines");
                let name = ev.strip_prefix("event: ").expect("event line").to_owned();
                let v: Value =
                    serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap();
                assert_eq!(v["type"], name.as_str(), "event name matches its type");
                (name, v)
            })
            .collect();
        assert_eq!(events.first().map(|e| e.0.as_str()), Some("message_start"));
        assert_eq!(events.last().map(|e| e.0.as_str()), Some("message_stop"));
        let mut blocks: Vec<Value> = Vec::new();
        let mut json_bufs: Vec<String> = Vec::new();
        let (mut stop, mut usage) = (String::new(), Value::Null);
        for (name, v) in &events {
            match name.as_str() {
                "content_block_start" => {
                    assert_eq!(v["index"].as_u64(), Some(blocks.len() as u64), "in order");
                    blocks.push(v["content_block"].clone());
                    json_bufs.push(String::new());
                }
                "content_block_delta" => {
                    let i = v["index"].as_u64().unwrap() as usize;
                    let b = &mut blocks[i];
                    let d = &v["delta"];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            assert_eq!(b["type"], "text");
                            let t = b["text"].as_str().unwrap().to_owned()
                                + d["text"].as_str().unwrap();
                            b["text"] = t.into();
                        }
                        "thinking_delta" => {
                            assert_eq!(b["type"], "thinking");
                            let t = b["thinking"].as_str().unwrap().to_owned()
                                + d["thinking"].as_str().unwrap();
                            b["thinking"] = t.into();
                        }
                        "signature_delta" => {
                            assert_eq!(b["type"], "thinking");
                            b["signature"] = d["signature"].clone();
                        }
                        "input_json_delta" => {
                            assert_eq!(b["type"], "tool_use");
                            json_bufs[i].push_str(d["partial_json"].as_str().unwrap());
                        }
                        other => panic!("unknown delta {other}"),
                    }
                }
                "content_block_stop" => {
                    assert!((v["index"].as_u64().unwrap() as usize) < blocks.len());
                }
                "message_delta" => {
                    stop = v["delta"]["stop_reason"].as_str().unwrap().to_owned();
                    usage = v["usage"].clone();
                }
                "message_start" | "message_stop" | "ping" => {}
                other => panic!("unexpected event {other}"),
            }
        }
        let (mut t, mut th, mut sig, mut calls) =
            (String::new(), String::new(), String::new(), Vec::new());
        for (b, json) in blocks.iter().zip(&json_bufs) {
            match b["type"].as_str().unwrap() {
                "text" => t.push_str(b["text"].as_str().unwrap()),
                "thinking" => {
                    th.push_str(b["thinking"].as_str().unwrap());
                    sig.push_str(b["signature"].as_str().unwrap());
                }
                "tool_use" => calls.push((
                    b["id"].as_str().unwrap().to_owned(),
                    b["name"].as_str().unwrap().to_owned(),
                    if json.is_empty() {
                        Value::Object(Default::default())
                    } else {
                        serde_json::from_str(json).unwrap()
                    },
                )),
                _ => unreachable!(),
            }
        }
        (t, th, sig, calls, stop, usage)
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "claude-via-granite",
            created: 9,
            fallback_id: "req-1",
            front: FrontDoor::Messages,
            include_usage: true,
            echo: "",
        }
    }

    #[test]
    fn an_openai_like_provider_stream_becomes_messages_events() {
        // watsonx chat_stream: text, then two parallel tool calls, then usage.
        let chunk = |delta: &str, finish: &str| {
            format!("id: 1\nevent: message\ndata: {{\"id\":\"chatcmpl-5d8c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"finish_reason\":{finish},\"delta\":{delta}}}],\"created\":1}}\n\n")
        };
        let input = [
            chunk(r#"{"role":"assistant","content":""}"#, "null"),
            chunk(r#"{"content":"Checking "}"#, "null"),
            chunk(r#"{"content":"both."}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\": "}}]}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Rome\"}"}}]}"#, "\"tool_calls\""),
            "id: 2\nevent: message\ndata: {\"id\":\"chatcmpl-5d8c\",\"choices\":[],\"usage\":{\"completion_tokens\":30,\"prompt_tokens\":40,\"total_tokens\":70}}\n\n".to_owned(),
        ]
        .concat();
        let (out, end, _) = every_split(
            || crate::providers::watsonx::stream(&ctx()),
            input.as_bytes(),
        );
        assert_eq!(end, StreamEnd::Complete);
        let (text, thinking, _, calls, stop, usage) = accumulate(&out);
        assert_eq!(text, "Checking both.");
        assert_eq!(thinking, "");
        assert_eq!(
            calls,
            vec![
                (
                    "call_a".into(),
                    "get_weather".into(),
                    serde_json::json!({"city": "Paris"})
                ),
                (
                    "call_b".into(),
                    "get_weather".into(),
                    serde_json::json!({"city": "Rome"})
                ),
            ]
        );
        assert_eq!(stop, "tool_use");
        assert_eq!(usage["input_tokens"], 40);
        assert_eq!(usage["output_tokens"], 30);
        let first: Value = serde_json::from_str(
            std::str::from_utf8(&out)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["message"]["model"], "claude-via-granite");
        assert_eq!(first["message"]["id"], "msg_chatcmpl-5d8c");
    }

    #[test]
    fn thinking_with_signature_then_text() {
        let mut w = crate::chat::ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.reasoning(&mut out, "Let me think");
        w.reasoning_signature(&mut out, "sig==");
        w.content(&mut out, "Answer");
        w.finish(&mut out, FinishReason::Length);
        w.usage(&mut out, Usage::new(3, 4));
        w.done(&mut out);
        let (text, thinking, sig, calls, stop, usage) = accumulate(&out);
        assert_eq!(
            (text.as_str(), thinking.as_str(), sig.as_str()),
            ("Answer", "Let me think", "sig==")
        );
        assert!(calls.is_empty());
        assert_eq!(stop, "max_tokens");
        assert_eq!(usage["output_tokens"], 4);
    }

    /// Two signed blocks and a redacted one become three blocks, each closed after its
    /// signature (a Converse stream's reasoning, for a Messages client).
    #[test]
    fn signed_and_redacted_thinking_blocks() {
        let mut w = crate::chat::ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.reasoning(&mut out, "a");
        w.reasoning_signature(&mut out, "s1");
        w.redacted_thinking(&mut out, "r1");
        w.reasoning(&mut out, "b");
        w.reasoning_signature(&mut out, "s2");
        w.content(&mut out, "ok");
        w.finish(&mut out, FinishReason::Stop);
        w.done(&mut out);
        let events: Vec<Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let starts: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "content_block_start")
            .map(|e| &e["content_block"])
            .collect();
        assert_eq!(starts.len(), 4);
        assert_eq!(
            starts[1],
            &serde_json::json!({"type": "redacted_thinking", "data": "r1"})
        );
        let sigs: Vec<(u64, &str)> = events
            .iter()
            .filter(|e| e["delta"]["type"] == "signature_delta")
            .map(|e| {
                (
                    e["index"].as_u64().unwrap(),
                    e["delta"]["signature"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(sigs, [(0, "s1"), (2, "s2")]);
        let stops = events
            .iter()
            .filter(|e| e["type"] == "content_block_stop")
            .count();
        assert_eq!(stops, 4);
    }

    #[test]
    fn mid_stream_errors_are_error_events() {
        let mut w = crate::chat::ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.content(&mut out, "partial");
        w.truncated(&mut out);
        let s = String::from_utf8(out).unwrap();
        let last = s.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last.starts_with(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""
            ),
            "{last}"
        );
    }
}
