//! Writes the client's OpenAI SSE stream: `data: {chunk}\n\n` … `data: [DONE]\n\n`.
//!
//! Stream translators call one method per thing they learned from the provider (text, a tool
//! call starting, a piece of its arguments, the finish reason, usage); the writer renders the
//! chunk for the endpoint the client called (`chat.completion.chunk`, or `text_completion` for
//! legacy completions) straight into the output buffer. The chunk prefix, which never changes
//! within a stream, is rendered once.
//!
//! These calls are the neutral stream events of the translation seam: when the client called
//! the Messages or Responses front door, the writer hands each one to
//! [`crate::front::messages::MessagesEvents`] or [`crate::front::responses::ResponsesEvents`]
//! instead, so provider translators never know which front door they write for.

use super::response::{FinishReason, ResponseCtx, UsageOut};
use crate::front::messages::MessagesEvents;
use crate::front::responses::ResponsesEvents;
use crate::front::FrontDoor;
use crate::openai::{error_body, Usage};
use crate::translate::StreamAnswer;

#[derive(Debug)]
pub struct ChunkWriter {
    legacy: bool,
    include_usage: bool,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[`
    head: Vec<u8>,
    started: bool,
    finished: bool,
    done: bool,
    /// The reasoning text of the thinking block in progress (chat chunks only): written again
    /// whole, with its signature, in the `thinking_blocks` delta that ends the block.
    thinking: String,
    /// Who writes the events when the client did not call an OpenAI chat/completions door.
    door: Door,
    /// The provider's id, model and finish reason, for the gateway's trace.
    answer: StreamAnswer,
}

/// The event writer of a front door that has its own stream grammar: every call is handed to
/// it.
#[derive(Debug)]
enum Door {
    /// `/v1/chat/completions` or `/v1/completions`: written here.
    OpenAi,
    Messages(Box<MessagesEvents>),
    Responses(Box<ResponsesEvents>),
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

impl ChunkWriter {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        let mut w = ChunkWriter {
            legacy: ctx.front.is_legacy(),
            include_usage: ctx.include_usage,
            head: Vec::new(),
            started: false,
            finished: false,
            done: false,
            thinking: String::new(),
            door: match ctx.front {
                FrontDoor::Messages => Door::Messages(Box::new(MessagesEvents::new(ctx))),
                FrontDoor::Responses => Door::Responses(Box::new(ResponsesEvents::new(ctx))),
                FrontDoor::Chat | FrontDoor::Completions => Door::OpenAi,
            },
            answer: StreamAnswer::default(),
        };
        w.set_id(ctx, None);
        w
    }

    /// Uses the provider's response id (call before the first chunk).
    pub fn set_id(&mut self, ctx: &ResponseCtx<'_>, provider_id: Option<&str>) {
        if let Some(id) = provider_id {
            self.answer.note_id(id);
        }
        match &mut self.door {
            Door::Messages(m) => return m.set_id(ctx, provider_id),
            Door::Responses(r) => return r.set_id(ctx, provider_id),
            Door::OpenAi => {}
        }
        let id = ctx.response_id(provider_id);
        let mut h = Vec::with_capacity(128);
        h.extend_from_slice(b"data: {\"id\":");
        json_str(&mut h, &id);
        h.extend_from_slice(if self.legacy {
            b",\"object\":\"text_completion\",\"created\":"
        } else {
            b",\"object\":\"chat.completion.chunk\",\"created\":"
        });
        h.extend_from_slice(ctx.created.to_string().as_bytes());
        h.extend_from_slice(b",\"model\":");
        json_str(&mut h, ctx.client_model);
        h.extend_from_slice(b",\"choices\":[");
        self.head = h;
    }

    /// The model the provider says answered (translators call it where their events name
    /// one); kept only when the gateway records the answer.
    pub fn provider_model(&mut self, model: &str) {
        self.answer.note_model(model);
    }

    /// What the stream said about its answer (see [`StreamAnswer`]).
    pub fn answer(&mut self) -> &mut StreamAnswer {
        &mut self.answer
    }

    /// Whether the first (role) chunk has been written.
    pub fn started(&self) -> bool {
        match &self.door {
            Door::Messages(m) => return m.started(),
            Door::Responses(r) => return r.started(),
            Door::OpenAi => {}
        }
        self.started
    }

    /// Whether a finish reason has been written.
    pub fn finished(&self) -> bool {
        match &self.door {
            Door::Messages(m) => return m.finished(),
            Door::Responses(r) => return r.finished(),
            Door::OpenAi => {}
        }
        self.finished
    }

    /// Whether `[DONE]` (or an error event) ended the stream.
    pub fn is_done(&self) -> bool {
        match &self.door {
            Door::Messages(m) => return m.is_done(),
            Door::Responses(r) => return r.is_done(),
            Door::OpenAi => {}
        }
        self.done
    }

    fn open_choice(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        if self.legacy {
            out.extend_from_slice(b"{\"index\":0,\"text\":");
        } else {
            out.extend_from_slice(b"{\"index\":0,\"delta\":");
        }
    }

    fn close_choice(out: &mut Vec<u8>, finish: Option<FinishReason>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                out.push(b'"');
                out.extend_from_slice(f.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// The first chunk: `delta:{"role":"assistant","content":""}`. Idempotent; the other
    /// methods call it when needed.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        match &mut self.door {
            Door::Messages(m) => return m.start(out),
            Door::Responses(r) => return r.start(out),
            Door::OpenAi => {}
        }
        if self.started {
            return;
        }
        self.started = true;
        if self.legacy {
            return; // text_completion streams have no role chunk
        }
        self.open_choice(out);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        Self::close_choice(out, None);
    }

    /// A piece of answer text.
    pub fn content(&mut self, out: &mut Vec<u8>, text: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.text(out, text),
            Door::Responses(r) => return r.text(out, text),
            Door::OpenAi => {}
        }
        if text.is_empty() {
            return;
        }
        self.start(out);
        self.open_choice(out);
        if self.legacy {
            json_str(out, text);
        } else {
            out.extend_from_slice(b"{\"content\":");
            json_str(out, text);
            out.push(b'}');
        }
        Self::close_choice(out, None);
    }

    /// A piece of answer text given as a JSON string literal, copied to the output verbatim
    /// (no unescape / re-escape): the stream translators' fast path for text events.
    ///
    /// Precondition: `literal` is one complete, valid JSON string literal *with* its quotes,
    /// e.g. exactly as it appeared in valid JSON input (`"a \"b\"\n"`) — no unescaped quote or
    /// control byte inside, only valid escapes. It is not checked in release builds: a bad
    /// literal would corrupt the client's stream. When it is also in the form `serde_json`
    /// writes (only `\"` `\\` `\b` `\f` `\n` `\r` `\t` and lowercase `\u00XX` for other control
    /// characters are escaped), the output is byte for byte that of [`Self::content`] for the
    /// decoded text. `""` writes nothing, like an empty `content`.
    pub fn content_json(&mut self, out: &mut Vec<u8>, literal: &str) {
        debug_assert!(
            literal.starts_with('"')
                && literal.ends_with('"')
                && serde_json::from_str::<String>(literal).is_ok(),
            "not one JSON string literal: {literal}"
        );
        match &mut self.door {
            Door::Messages(m) => return m.text_json(out, literal),
            Door::Responses(r) => return r.text_json(out, literal),
            Door::OpenAi => {}
        }
        if literal.len() <= 2 {
            return;
        }
        self.start(out);
        self.open_choice(out);
        if self.legacy {
            out.extend_from_slice(literal.as_bytes());
        } else {
            out.extend_from_slice(b"{\"content\":");
            out.extend_from_slice(literal.as_bytes());
            out.push(b'}');
        }
        Self::close_choice(out, None);
    }

    /// A piece of reasoning text (`reasoning_content`; not sent for legacy completions).
    pub fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.thinking(out, text),
            Door::Responses(r) => return r.thinking(out, text),
            Door::OpenAi => {}
        }
        if text.is_empty() || self.legacy {
            return;
        }
        self.start(out);
        self.thinking.push_str(text);
        self.open_choice(out);
        out.extend_from_slice(b"{\"reasoning_content\":");
        json_str(out, text);
        out.push(b'}');
        Self::close_choice(out, None);
    }

    /// The signature of the reasoning just written (Anthropic thinking, Bedrock
    /// reasoningContent), which ends its thinking block: a `signature_delta` for Messages
    /// clients; for chat clients a delta
    /// `{"thinking_blocks":[{"type":"thinking","thinking":<the block's whole text>,"signature"}]}`
    /// (the text again, so that a client that keeps only this delta, or one that concatenates
    /// `thinking_blocks` deltas as LiteLLM's do, has the complete signed block).
    pub fn reasoning_signature(&mut self, out: &mut Vec<u8>, signature: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.signature(out, signature),
            Door::Responses(r) => return r.signature(out, signature),
            Door::OpenAi => {}
        }
        if signature.is_empty() || self.legacy {
            return;
        }
        self.start(out);
        self.open_choice(out);
        out.extend_from_slice(b"{\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":");
        json_str(out, &self.thinking);
        out.extend_from_slice(b",\"signature\":");
        json_str(out, signature);
        out.extend_from_slice(b"}]}");
        Self::close_choice(out, None);
        self.thinking.clear();
    }

    /// A redacted (encrypted) thinking block: for chat clients a delta
    /// `{"thinking_blocks":[{"type":"redacted_thinking","data"}]}`; Messages clients get a
    /// `redacted_thinking` content block.
    pub fn redacted_thinking(&mut self, out: &mut Vec<u8>, data: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.redacted_thinking(out, data),
            // Responses output has no item for it (encrypted reasoning is not produced).
            Door::Responses(_) => return,
            Door::OpenAi => {}
        }
        if data.is_empty() || self.legacy {
            return;
        }
        self.start(out);
        self.open_choice(out);
        out.extend_from_slice(b"{\"thinking_blocks\":[{\"type\":\"redacted_thinking\",\"data\":");
        json_str(out, data);
        out.extend_from_slice(b"}]}");
        Self::close_choice(out, None);
    }

    /// The first fragment of tool call number `index` (0, 1, … in the order calls appear).
    pub fn tool_call_start(&mut self, out: &mut Vec<u8>, index: usize, id: &str, name: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.tool_start(out, index, id, name),
            Door::Responses(r) => return r.tool_start(out, index, id, name),
            Door::OpenAi => {}
        }
        if self.legacy {
            return;
        }
        self.start(out);
        self.open_choice(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b",\"id\":");
        json_str(out, id);
        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        json_str(out, name);
        out.extend_from_slice(b",\"arguments\":\"\"}}]}");
        Self::close_choice(out, None);
    }

    /// A piece of tool call `index`'s JSON arguments.
    pub fn tool_call_arguments(&mut self, out: &mut Vec<u8>, index: usize, fragment: &str) {
        match &mut self.door {
            Door::Messages(m) => return m.tool_arguments(out, index, fragment),
            Door::Responses(r) => return r.tool_arguments(out, index, fragment),
            Door::OpenAi => {}
        }
        if self.legacy || fragment.is_empty() {
            return;
        }
        self.start(out);
        self.open_choice(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b",\"function\":{\"arguments\":");
        json_str(out, fragment);
        out.extend_from_slice(b"}}]}");
        Self::close_choice(out, None);
    }

    /// The last choice chunk: empty delta and the finish reason. Written once.
    pub fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason) {
        if self.answer.finish_reasons.is_empty() {
            self.answer.note_finish(reason.as_str());
        }
        match &mut self.door {
            Door::Messages(m) => return m.finish(out, reason),
            Door::Responses(r) => return r.finish(out, reason),
            Door::OpenAi => {}
        }
        if self.finished {
            return;
        }
        self.start(out);
        self.finished = true;
        self.open_choice(out);
        out.extend_from_slice(if self.legacy { b"\"\"" } else { b"{}" });
        Self::close_choice(out, Some(reason));
    }

    /// The usage chunk (`"choices":[]`), only when the client asked for it.
    pub fn usage(&mut self, out: &mut Vec<u8>, usage: Usage) {
        match &mut self.door {
            Door::Messages(m) => return m.usage(usage),
            Door::Responses(r) => return r.usage(usage),
            Door::OpenAi => {}
        }
        if !self.include_usage {
            return;
        }
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"],\"usage\":");
        serde_json::to_writer(&mut *out, &UsageOut::from(usage)).expect("Vec write");
        out.extend_from_slice(b"}\n\n");
    }

    /// The final `response` object of a Responses stream once it completed (the same JSON
    /// [`crate::chat::response::render`] gives for the whole answer): what the gateway stores
    /// for `previous_response_id`. None for the other front doors and before the end.
    pub fn final_response(&self) -> Option<&[u8]> {
        match &self.door {
            Door::Responses(r) => r.final_response(),
            Door::OpenAi | Door::Messages(_) => None,
        }
    }

    /// `data: [DONE]`. Written once.
    pub fn done(&mut self, out: &mut Vec<u8>) {
        match &mut self.door {
            Door::Messages(m) => return m.done(out),
            Door::Responses(r) => return r.done(out),
            Door::OpenAi => {}
        }
        if self.done {
            return;
        }
        self.done = true;
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// Ends the stream with an OpenAI error event (what openai-python raises as `APIError`).
    pub fn error(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: Option<&str>) {
        match &mut self.door {
            Door::Messages(m) => return m.error(out, message, kind),
            Door::Responses(r) => return r.error(out, message, kind, code),
            Door::OpenAi => {}
        }
        if self.done {
            return;
        }
        self.done = true;
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error_body(message, kind, None, code));
        out.extend_from_slice(b"\n\n");
    }

    /// Ends a stream the provider cut short.
    pub fn truncated(&mut self, out: &mut Vec<u8>) {
        self.error(
            out,
            "The provider's stream ended before the answer was complete.",
            "server_error",
            Some("stream_truncated"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::FrontDoor;
    use serde_json::Value;

    fn events(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty() && *e != "data: [DONE]")
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn chat_chunks_are_valid_openai_chunks() {
        let ctx = ResponseCtx {
            client_model: "m\"x",
            created: 5,
            fallback_id: "r",
            front: FrontDoor::Chat,
            include_usage: true,
            echo: "",
        };
        let mut w = ChunkWriter::new(&ctx);
        let mut out = Vec::new();
        w.content(&mut out, "hé\n");
        w.tool_call_start(&mut out, 0, "call_1", "f");
        w.tool_call_arguments(&mut out, 0, "{\"a\"");
        w.finish(&mut out, FinishReason::ToolCalls);
        let mut usage = Usage::new(1, 2);
        usage.reasoning_tokens = 2;
        w.usage(&mut out, usage);
        w.done(&mut out);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let ev = events(&out);
        assert_eq!(ev.len(), 6);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "hé\n");
        assert_eq!(ev[1]["model"], "m\"x");
        assert_eq!(
            ev[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_1"
        );
        assert_eq!(
            ev[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\""
        );
        assert_eq!(ev[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[5]["choices"], serde_json::json!([]));
        assert_eq!(ev[5]["usage"]["total_tokens"], 3);
        assert_eq!(
            ev[5]["usage"]["completion_tokens_details"],
            serde_json::json!({"reasoning_tokens": 2})
        );
        assert!(ev[5]["usage"].get("prompt_tokens_details").is_none());
    }

    #[test]
    fn signed_thinking_blocks_close_with_their_whole_text() {
        let ctx = ResponseCtx {
            client_model: "m",
            created: 5,
            fallback_id: "r",
            front: FrontDoor::Chat,
            include_usage: false,
            echo: "",
        };
        let mut w = ChunkWriter::new(&ctx);
        let mut out = Vec::new();
        w.reasoning(&mut out, "a\"");
        w.reasoning(&mut out, "b");
        w.reasoning_signature(&mut out, "s1");
        w.redacted_thinking(&mut out, "r1");
        w.reasoning(&mut out, "c");
        w.reasoning_signature(&mut out, "s2");
        w.reasoning_signature(&mut out, "");
        let blocks: Vec<Value> = events(&out)
            .into_iter()
            .filter_map(|e| e["choices"][0]["delta"].get("thinking_blocks").cloned())
            .collect();
        assert_eq!(
            blocks,
            [
                serde_json::json!([{"type": "thinking", "thinking": "a\"b", "signature": "s1"}]),
                serde_json::json!([{"type": "redacted_thinking", "data": "r1"}]),
                serde_json::json!([{"type": "thinking", "thinking": "c", "signature": "s2"}]),
            ]
        );
        // Legacy completions carry no reasoning at all.
        let mut w = ChunkWriter::new(&ResponseCtx {
            front: FrontDoor::Completions,
            ..ctx
        });
        let mut out = Vec::new();
        w.reasoning_signature(&mut out, "s");
        w.redacted_thinking(&mut out, "r");
        assert!(out.is_empty());
    }

    #[test]
    fn legacy_chunks_carry_text() {
        let ctx = ResponseCtx {
            client_model: "m",
            created: 5,
            fallback_id: "r",
            front: FrontDoor::Completions,
            include_usage: false,
            echo: "",
        };
        let mut w = ChunkWriter::new(&ctx);
        let mut out = Vec::new();
        w.content(&mut out, "hi");
        w.finish(&mut out, FinishReason::Length);
        w.usage(&mut out, Usage::new(1, 2));
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["object"], "text_completion");
        assert_eq!(ev[0]["choices"][0]["text"], "hi");
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "length");
    }
}
