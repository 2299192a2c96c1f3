//! Writes the client's Responses stream from the calls the provider stream translators make on
//! [`crate::chat::ChunkWriter`], which delegates here when the client called `/v1/responses`.
//!
//! Every event is `event: <type>\ndata: {"type":<type>,…,"sequence_number":n}\n\n`, numbered
//! from 0: `response.created` and `response.in_progress` (the response without output), then
//! per output item `response.output_item.added`, its part's `…part.added`, its deltas
//! (`response.output_text.delta`, `response.reasoning_summary_text.delta`,
//! `response.function_call_arguments.delta`), their `….done`, the part's `…part.done` and
//! `response.output_item.done`; last `response.completed` or `response.incomplete` with the
//! whole response, which is kept ([`ResponsesEvents::final_response`]) for the gateway to
//! store. An error ends the stream with `error` and `response.failed`. No `[DONE]`.
//!
//! A text or reasoning item is closed when an item of another kind starts; function calls
//! stay open until the answer finishes, since providers may interleave parallel calls'
//! arguments. The response object is rendered by [`super::answer`], as non-stream answers are.

use serde_json::Value;

use super::answer::{
    incomplete_reason, response_json, summary_part, text_part, Head, Item, Status,
};
use crate::chat::{FinishReason, ResponseCtx};
use crate::openai::Usage;

/// One output item of the stream.
#[derive(Debug)]
struct Slot {
    item: Item,
    id: String,
    /// The item's final JSON, once `response.output_item.done` was written.
    done: Option<Value>,
}

#[derive(Debug)]
pub struct ResponsesEvents {
    id: String,
    /// The gateway's request id, for item ids.
    base: String,
    created: u64,
    model: String,
    echo: String,
    seq: u64,
    started: bool,
    items: Vec<Slot>,
    /// The open text or reasoning item (function calls are never "open" in this sense).
    open: Option<usize>,
    /// Output index of each tool call, by the translator's tool index.
    tools: Vec<usize>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
    final_response: Option<Vec<u8>>,
}

fn json_to<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
}

/// Writes one event: `fields` writes the members between `type` and `sequence_number`.
fn event(out: &mut Vec<u8>, seq: &mut u64, kind: &str, fields: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",");
    fields(out);
    out.extend_from_slice(b",\"sequence_number\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b"}\n\n");
    *seq += 1;
}

/// `"item_id":…,"output_index":…`
fn item_at(out: &mut Vec<u8>, id: &str, index: usize) {
    out.extend_from_slice(b"\"item_id\":");
    json_to(out, id);
    out.extend_from_slice(b",\"output_index\":");
    out.extend_from_slice(index.to_string().as_bytes());
}

impl ResponsesEvents {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        ResponsesEvents {
            id: ctx.response_id(None),
            base: ctx.fallback_id.to_owned(),
            created: ctx.created,
            model: ctx.client_model.to_owned(),
            echo: ctx.echo.to_owned(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            tools: Vec::new(),
            finish: None,
            usage: None,
            done: false,
            final_response: None,
        }
    }

    /// Nothing to do: a Responses id is always the gateway's, never the provider's.
    pub fn set_id(&mut self, _ctx: &ResponseCtx<'_>, _provider_id: Option<&str>) {}

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The final response object (the same JSON as `answer::render` gives for the same
    /// answer) once the stream completed (`response.completed` or `response.incomplete`);
    /// None before, and after an error.
    pub fn final_response(&self) -> Option<&[u8]> {
        self.final_response.as_deref()
    }

    fn head(&self) -> Head<'_> {
        Head {
            id: &self.id,
            created: self.created,
            model: &self.model,
            echo: &self.echo,
        }
    }

    /// `response.created` and `response.in_progress`. Idempotent.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = response_json(&self.head(), Status::InProgress, &[], None);
        for kind in ["response.created", "response.in_progress"] {
            event(out, &mut self.seq, kind, |o| {
                o.extend_from_slice(b"\"response\":");
                o.extend_from_slice(&response);
            });
        }
    }

    /// Adds an item and writes its `output_item.added` (and its part's `…part.added`).
    fn add(&mut self, out: &mut Vec<u8>, item: Item) -> usize {
        self.start(out);
        let index = self.items.len();
        let id = item.id(&self.base, index);
        let added = match &item {
            Item::Reasoning(_) => {
                serde_json::json!({"id": id, "type": "reasoning", "summary": []})
            }
            Item::Message(_) => serde_json::json!({
                "id": id, "type": "message", "status": "in_progress", "role": "assistant",
                "content": [],
            }),
            Item::Call { .. } => item.json(&id, "in_progress"),
        };
        event(out, &mut self.seq, "response.output_item.added", |o| {
            o.extend_from_slice(b"\"output_index\":");
            o.extend_from_slice(index.to_string().as_bytes());
            o.extend_from_slice(b",\"item\":");
            json_to(o, &added);
        });
        match &item {
            Item::Message(_) => event(out, &mut self.seq, "response.content_part.added", |o| {
                item_at(o, &id, index);
                o.extend_from_slice(b",\"content_index\":0,\"part\":");
                json_to(o, &text_part(""));
            }),
            Item::Reasoning(_) => event(
                out,
                &mut self.seq,
                "response.reasoning_summary_part.added",
                |o| {
                    item_at(o, &id, index);
                    o.extend_from_slice(b",\"summary_index\":0,\"part\":");
                    json_to(o, &summary_part(""));
                },
            ),
            Item::Call { .. } => {}
        }
        self.items.push(Slot {
            item,
            id,
            done: None,
        });
        index
    }

    /// Closes item `index` (its `….done` events and `output_item.done`). Idempotent.
    fn close(&mut self, out: &mut Vec<u8>, index: usize, status: &str) {
        let Some(slot) = self.items.get_mut(index) else {
            return;
        };
        if slot.done.is_some() {
            return;
        }
        let seq = &mut self.seq;
        let id = slot.id.as_str();
        match &slot.item {
            Item::Message(text) => {
                event(out, seq, "response.output_text.done", |o| {
                    item_at(o, id, index);
                    o.extend_from_slice(b",\"content_index\":0,\"text\":");
                    json_to(o, text);
                    o.extend_from_slice(b",\"logprobs\":[]");
                });
                event(out, seq, "response.content_part.done", |o| {
                    item_at(o, id, index);
                    o.extend_from_slice(b",\"content_index\":0,\"part\":");
                    json_to(o, &text_part(text));
                });
            }
            Item::Reasoning(text) => {
                event(out, seq, "response.reasoning_summary_text.done", |o| {
                    item_at(o, id, index);
                    o.extend_from_slice(b",\"summary_index\":0,\"text\":");
                    json_to(o, text);
                });
                event(out, seq, "response.reasoning_summary_part.done", |o| {
                    item_at(o, id, index);
                    o.extend_from_slice(b",\"summary_index\":0,\"part\":");
                    json_to(o, &summary_part(text));
                });
            }
            Item::Call { arguments, .. } => {
                event(out, seq, "response.function_call_arguments.done", |o| {
                    item_at(o, id, index);
                    o.extend_from_slice(b",\"arguments\":");
                    json_to(o, arguments);
                });
            }
        }
        let done = slot.item.json(id, status);
        event(out, seq, "response.output_item.done", |o| {
            o.extend_from_slice(b"\"output_index\":");
            o.extend_from_slice(index.to_string().as_bytes());
            o.extend_from_slice(b",\"item\":");
            json_to(o, &done);
        });
        slot.done = Some(done);
    }

    /// Closes every item still open, in order; the last one is `incomplete` when the answer
    /// was cut short.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        self.open = None;
        let incomplete = incomplete_reason(self.finish).is_some();
        let last = self.items.len().saturating_sub(1);
        for i in 0..self.items.len() {
            let status = if incomplete && i == last {
                "incomplete"
            } else {
                "completed"
            };
            self.close(out, i, status);
        }
    }

    /// The open item if it is of `kind`'s variant, else a new one (closing the open one).
    fn open_as(&mut self, out: &mut Vec<u8>, reasoning: bool) -> usize {
        if let Some(i) = self.open {
            match self.items.get(i).map(|s| &s.item) {
                Some(Item::Reasoning(_)) if reasoning => return i,
                Some(Item::Message(_)) if !reasoning => return i,
                _ => self.close(out, i, "completed"),
            }
        }
        let item = if reasoning {
            Item::Reasoning(String::new())
        } else {
            Item::Message(String::new())
        };
        let i = self.add(out, item);
        self.open = Some(i);
        i
    }

    /// A piece of answer text.
    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() || self.done {
            return;
        }
        let i = self.open_as(out, false);
        let slot = &mut self.items[i];
        if let Item::Message(t) = &mut slot.item {
            t.push_str(text);
        }
        let id = slot.id.as_str();
        event(out, &mut self.seq, "response.output_text.delta", |o| {
            item_at(o, id, i);
            o.extend_from_slice(b",\"content_index\":0,\"delta\":");
            json_to(o, text);
            o.extend_from_slice(b",\"logprobs\":[]");
        });
    }

    /// A piece of answer text given as a JSON string literal (with its quotes): written as
    /// is, and decoded for the final response.
    pub fn text_json(&mut self, out: &mut Vec<u8>, literal: &str) {
        if literal.len() <= 2 || self.done {
            return;
        }
        let decoded: std::borrow::Cow<'_, str> = match serde_json::from_str::<&str>(literal) {
            Ok(s) => s.into(),
            Err(_) => match serde_json::from_str::<String>(literal) {
                Ok(s) => s.into(),
                Err(_) => return,
            },
        };
        let i = self.open_as(out, false);
        let slot = &mut self.items[i];
        if let Item::Message(t) = &mut slot.item {
            t.push_str(&decoded);
        }
        let id = slot.id.as_str();
        event(out, &mut self.seq, "response.output_text.delta", |o| {
            item_at(o, id, i);
            o.extend_from_slice(b",\"content_index\":0,\"delta\":");
            o.extend_from_slice(literal.as_bytes());
            o.extend_from_slice(b",\"logprobs\":[]");
        });
    }

    /// A piece of reasoning text: the reasoning item's summary.
    pub fn thinking(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() || self.done {
            return;
        }
        let i = self.open_as(out, true);
        let slot = &mut self.items[i];
        if let Item::Reasoning(t) = &mut slot.item {
            t.push_str(text);
        }
        let id = slot.id.as_str();
        event(
            out,
            &mut self.seq,
            "response.reasoning_summary_text.delta",
            |o| {
                item_at(o, id, i);
                o.extend_from_slice(b",\"summary_index\":0,\"delta\":");
                json_to(o, text);
            },
        );
    }

    /// A reasoning signature: Responses clients have no place for another provider's.
    pub fn signature(&mut self, _out: &mut Vec<u8>, _signature: &str) {}

    /// Tool call number `tool` starts: a `function_call` item.
    pub fn tool_start(&mut self, out: &mut Vec<u8>, tool: usize, id: &str, name: &str) {
        if self.done {
            return;
        }
        self.start(out);
        if let Some(i) = self.open.take() {
            self.close(out, i, "completed");
        }
        let index = self.add(
            out,
            Item::Call {
                call_id: id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
            },
        );
        if self.tools.len() <= tool {
            self.tools.resize(tool + 1, usize::MAX);
        }
        self.tools[tool] = index;
    }

    /// A piece of tool call `tool`'s JSON arguments (ignored for a call never started).
    pub fn tool_arguments(&mut self, out: &mut Vec<u8>, tool: usize, fragment: &str) {
        if fragment.is_empty() || self.done {
            return;
        }
        let Some(&index) = self.tools.get(tool) else {
            return;
        };
        let Some(slot) = self.items.get_mut(index).filter(|s| s.done.is_none()) else {
            return;
        };
        if let Item::Call { arguments, .. } = &mut slot.item {
            arguments.push_str(fragment);
        }
        let id = slot.id.as_str();
        event(
            out,
            &mut self.seq,
            "response.function_call_arguments.delta",
            |o| {
                item_at(o, id, index);
                o.extend_from_slice(b",\"delta\":");
                json_to(o, fragment);
            },
        );
    }

    /// The answer is complete: every open item is closed. Written once.
    pub fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason) {
        if self.finish.is_some() || self.done {
            return;
        }
        self.start(out);
        self.finish = Some(reason);
        self.close_all(out);
    }

    pub fn usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    fn output(&self) -> Vec<Value> {
        self.items.iter().filter_map(|s| s.done.clone()).collect()
    }

    /// `response.completed` (or `response.incomplete`) with the whole response. Written once.
    pub fn done(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.close_all(out);
        self.done = true;
        let (kind, status) = match incomplete_reason(self.finish) {
            Some(reason) => ("response.incomplete", Status::Incomplete(reason)),
            None => ("response.completed", Status::Completed),
        };
        let response = response_json(&self.head(), status, &self.output(), self.usage);
        event(out, &mut self.seq, kind, |o| {
            o.extend_from_slice(b"\"response\":");
            o.extend_from_slice(&response);
        });
        self.final_response = Some(response);
    }

    /// Ends the stream with an `error` event and `response.failed` (`kind`: the OpenAI error
    /// type the translator chose).
    pub fn error(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: Option<&str>) {
        if self.done {
            return;
        }
        self.start(out);
        self.done = true;
        event(out, &mut self.seq, "error", |o| {
            o.extend_from_slice(b"\"code\":");
            json_to(o, code.unwrap_or(kind));
            o.extend_from_slice(b",\"message\":");
            json_to(o, message);
            o.extend_from_slice(b",\"param\":null");
        });
        // `ResponseError.code` is one of OpenAI's codes.
        let failed_code = if kind.contains("rate_limit") || code == Some("rate_limit_exceeded") {
            "rate_limit_exceeded"
        } else {
            "server_error"
        };
        let response = response_json(
            &self.head(),
            Status::Failed(failed_code, message),
            &self.output(),
            self.usage,
        );
        event(out, &mut self.seq, "response.failed", |o| {
            o.extend_from_slice(b"\"response\":");
            o.extend_from_slice(&response);
        });
    }
}
