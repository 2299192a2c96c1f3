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
