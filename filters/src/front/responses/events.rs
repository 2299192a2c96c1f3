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

#[cfg(test)]
pub(crate) mod tests {
    use super::super::answer::render;
    use super::super::answer::tests::{check_sdk_shape, ctx};
    use super::*;
    use crate::chat::{Choice, ChunkWriter, Completion, ToolCall};
    use crate::translate::testing::every_split;
    use crate::translate::StreamEnd;
    use serde_json::json;

    /// Rebuilds the response from a Responses stream the way openai-python's
    /// `ResponseStreamState` does (snapshot from `response.created`, items added by
    /// `output_item.added`, parts by `…part.added`, deltas appended), checking the grammar on
    /// the way: each `event:` line names its data's `type`, `sequence_number` counts from 0,
    /// every delta and `.done` names an added item by `item_id` and `output_index`, each
    /// `.done` repeats the accumulated text, and the terminal event comes last. Returns the
    /// terminal event's response (its output checked against the accumulated items) and the
    /// event types in order.
    pub(crate) fn accumulate(out: &[u8]) -> (Value, Vec<String>) {
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
        assert!(!text.contains("[DONE]"));
        let kinds: Vec<String> = events.iter().map(|e| e.0.clone()).collect();
        assert_eq!(kinds.first().map(String::as_str), Some("response.created"));
        let mut snapshot = Value::Null;
        let mut done = Vec::new();
        let mut terminal = Value::Null;
        for (n, (name, v)) in events.iter().enumerate() {
            assert_eq!(v["sequence_number"], n as u64, "{name}");
            assert!(
                terminal.is_null(),
                "nothing after the terminal event: {name}"
            );
            let idx = v["output_index"].as_u64().map(|i| i as usize);
            match name.as_str() {
                "response.created" => {
                    snapshot = v["response"].clone();
                    assert_eq!(snapshot["status"], "in_progress");
                    assert_eq!(snapshot["output"], json!([]));
                    check_sdk_shape(&snapshot);
                }
                "response.in_progress" => assert_eq!(v["response"], snapshot),
                "response.output_item.added" => {
                    let out = snapshot["output"].as_array_mut().unwrap();
                    assert_eq!(idx, Some(out.len()), "items added in order");
                    out.push(v["item"].clone());
                    done.push(false);
                }
                "response.content_part.added" => {
                    let it = item(&mut snapshot, v, name);
                    let parts = it["content"].as_array_mut().unwrap();
                    assert_eq!(v["content_index"], parts.len() as u64);
                    parts.push(v["part"].clone());
                }
                "response.reasoning_summary_part.added" => {
                    let it = item(&mut snapshot, v, name);
                    let parts = it["summary"].as_array_mut().unwrap();
                    assert_eq!(v["summary_index"], parts.len() as u64);
                    parts.push(v["part"].clone());
                }
                "response.output_text.delta" | "response.reasoning_summary_text.delta" => {
                    let it = item(&mut snapshot, v, name);
                    let part = if name == "response.output_text.delta" {
                        &mut it["content"][v["content_index"].as_u64().unwrap() as usize]
                    } else {
                        &mut it["summary"][v["summary_index"].as_u64().unwrap() as usize]
                    };
                    let t =
                        part["text"].as_str().unwrap().to_owned() + v["delta"].as_str().unwrap();
                    part["text"] = t.into();
                }
                "response.function_call_arguments.delta" => {
                    let it = item(&mut snapshot, v, name);
                    assert_eq!(it["type"], "function_call");
                    let a =
                        it["arguments"].as_str().unwrap().to_owned() + v["delta"].as_str().unwrap();
                    it["arguments"] = a.into();
                }
                "response.output_text.done" | "response.content_part.done" => {
                    let it = item(&mut snapshot, v, name);
                    let part = &it["content"][v["content_index"].as_u64().unwrap() as usize];
                    if name == "response.output_text.done" {
                        assert_eq!(v["text"], part["text"]);
                    } else {
                        assert_eq!(&v["part"], part);
                    }
                }
                "response.reasoning_summary_text.done" | "response.reasoning_summary_part.done" => {
                    let it = item(&mut snapshot, v, name);
                    let part = &it["summary"][v["summary_index"].as_u64().unwrap() as usize];
                    if name == "response.reasoning_summary_text.done" {
                        assert_eq!(v["text"], part["text"]);
                    } else {
                        assert_eq!(&v["part"], part);
                    }
                }
                "response.function_call_arguments.done" => {
                    let it = item(&mut snapshot, v, name);
                    assert_eq!(v["arguments"], it["arguments"]);
                }
                "response.output_item.done" => {
                    let it = item(&mut snapshot, v, name);
                    let mut accumulated = it.clone();
                    if accumulated.get("status").is_some() {
                        accumulated["status"] = v["item"]["status"].clone();
                    }
                    assert_eq!(accumulated, v["item"], "the done item is what was streamed");
                    *it = v["item"].clone();
                    done[idx.unwrap()] = true;
                }
                "response.completed" | "response.incomplete" => {
                    terminal = v["response"].clone();
                    assert!(done.iter().all(|d| *d), "every item done before the end");
                    assert_eq!(terminal["output"], snapshot["output"]);
                    check_sdk_shape(&terminal);
                }
                "error" => {
                    assert!(v["message"].is_string());
                    assert_eq!(v["param"], Value::Null);
                }
                "response.failed" => {
                    terminal = v["response"].clone();
                    assert_eq!(terminal["status"], "failed");
                    assert!(terminal["error"]["code"].is_string());
                    assert!(terminal["error"]["message"].is_string());
                    check_sdk_shape(&terminal);
                }
                other => panic!("unexpected event {other}"),
            }
        }
        assert!(!terminal.is_null(), "the stream has a terminal event");
        (terminal, kinds)
    }

    /// The snapshot's item that event `v` names by `output_index` (and `item_id`, if any).
    fn item<'a>(snapshot: &'a mut Value, v: &Value, name: &str) -> &'a mut Value {
        let i = v["output_index"].as_u64().expect("output_index") as usize;
        let item = &mut snapshot["output"][i];
        assert!(item.is_object(), "{name}: output {i} was added");
        if let Some(id) = v.get("item_id") {
            assert_eq!(&item["id"], id, "{name}: item_id");
        }
        item
    }

    fn final_of(w: &ChunkWriter) -> Value {
        serde_json::from_slice(w.final_response().expect("complete")).unwrap()
    }

    #[test]
    fn a_text_answer_streams_and_ends_as_render_would_give() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.content(&mut out, "Hel");
        assert!(w.final_response().is_none());
        w.content_json(&mut out, r#""lo \"w\"\n""#);
        w.finish(&mut out, FinishReason::Stop);
        w.usage(&mut out, Usage::new(5, 3));
        w.done(&mut out);
        assert!(w.is_done());
        let (terminal, kinds) = accumulate(&out);
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(terminal, final_of(&w));
        assert_eq!(terminal["output"][0]["content"][0]["text"], "Hello \"w\"\n");
        assert_eq!(terminal["usage"]["total_tokens"], 8);
        let c = Completion {
            id: Some("ignored".into()),
            choices: vec![Choice {
                content: Some("Hello \"w\"\n".into()),
                finish_reason: Some(FinishReason::Stop),
                ..Default::default()
            }],
            usage: Some(Usage::new(5, 3)),
        };
        assert_eq!(
            std::str::from_utf8(w.final_response().unwrap()).unwrap(),
            std::str::from_utf8(&render(&c, &ctx())).unwrap(),
            "a streamed answer is stored as the same JSON as a non-stream one"
        );
    }

    #[test]
    fn reasoning_then_text() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.reasoning(&mut out, "Let me ");
        w.reasoning(&mut out, "think");
        w.reasoning_signature(&mut out, "sig==");
        w.content(&mut out, "Answer");
        w.finish(&mut out, FinishReason::Stop);
        let mut u = Usage::new(3, 9);
        u.reasoning_tokens = 4;
        w.usage(&mut out, u);
        w.done(&mut out);
        let (terminal, kinds) = accumulate(&out);
        assert_eq!(
            kinds[2..9],
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
            ]
        );
        assert_eq!(terminal, final_of(&w));
        assert_eq!(terminal["output"][0]["summary"][0]["text"], "Let me think");
        assert_eq!(terminal["output"][1]["content"][0]["text"], "Answer");
        assert_eq!(
            terminal["usage"]["output_tokens_details"]["reasoning_tokens"],
            4
        );
        let c = Completion {
            id: None,
            choices: vec![Choice {
                content: Some("Answer".into()),
                reasoning: Some("Let me think".into()),
                finish_reason: Some(FinishReason::Stop),
                ..Default::default()
            }],
            usage: Some(u),
        };
        assert_eq!(w.final_response().unwrap(), &render(&c, &ctx())[..]);
    }

    /// watsonx chat_stream: text, then two parallel tool calls, then usage.
    fn watsonx_tool_stream() -> String {
        let chunk = |delta: &str, finish: &str| {
            format!("id: 1\nevent: message\ndata: {{\"id\":\"chatcmpl-5d8c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"finish_reason\":{finish},\"delta\":{delta}}}],\"created\":1}}\n\n")
        };
        [
            chunk(r#"{"role":"assistant","content":""}"#, "null"),
            chunk(r#"{"content":"Checking "}"#, "null"),
            chunk(r#"{"content":"both."}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\": "}}]}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Rome\"}"}}]}"#, "null"),
            chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#, "\"tool_calls\""),
            "id: 2\nevent: message\ndata: {\"id\":\"chatcmpl-5d8c\",\"choices\":[],\"usage\":{\"completion_tokens\":30,\"prompt_tokens\":40,\"total_tokens\":70}}\n\n".to_owned(),
        ]
        .concat()
    }

    #[test]
    fn two_tool_calls_from_a_provider_stream_at_every_split() {
        let input = watsonx_tool_stream();
        let (out, end, _) = every_split(
            || crate::providers::watsonx::stream(&ctx()),
            input.as_bytes(),
        );
        assert_eq!(end, StreamEnd::Complete);
        let (terminal, _) = accumulate(&out);
        let mut t = crate::providers::watsonx::stream(&ctx());
        let mut again = Vec::new();
        t.feed(input.as_bytes(), &mut again);
        t.finish(&mut again);
        let stored: Value = serde_json::from_slice(t.final_response().unwrap()).unwrap();
        assert_eq!(terminal, stored);
        let c = Completion {
            id: None,
            choices: vec![Choice {
                content: Some("Checking both.".into()),
                tool_calls: vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city": "Paris"}"#.into(),
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city": "Rome"}"#.into(),
                    },
                ],
                finish_reason: Some(FinishReason::ToolCalls),
                ..Default::default()
            }],
            usage: Some(Usage::new(40, 30)),
        };
        assert_eq!(t.final_response().unwrap(), &render(&c, &ctx())[..]);
        assert_eq!(terminal["output"][1]["call_id"], "call_a");
        assert_eq!(terminal["output"][1]["arguments"], r#"{"city": "Paris"}"#);
        assert_eq!(terminal["output"][2]["id"], "fc_req9_2");
        assert_eq!(
            terminal["id"], "resp_req9",
            "not the provider's chatcmpl id"
        );
    }

    #[test]
    fn text_after_a_tool_call_is_a_new_message() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.tool_call_start(&mut out, 0, "c0", "f");
        w.content(&mut out, "between");
        w.tool_call_arguments(&mut out, 0, "{}");
        w.tool_call_arguments(&mut out, 7, "ignored");
        w.reasoning(&mut out, "hm");
        w.finish(&mut out, FinishReason::ToolCalls);
        w.done(&mut out);
        let (terminal, _) = accumulate(&out);
        let types: Vec<&str> = terminal["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["function_call", "message", "reasoning"]);
        assert_eq!(terminal["output"][0]["arguments"], "{}");
        assert_eq!(terminal["usage"], Value::Null);
    }

    #[test]
    fn a_length_stop_is_incomplete() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.content(&mut out, "Partial");
        w.finish(&mut out, FinishReason::Length);
        w.finish(&mut out, FinishReason::Stop);
        w.usage(&mut out, Usage::new(1, 16));
        w.done(&mut out);
        w.done(&mut out);
        let (terminal, kinds) = accumulate(&out);
        assert_eq!(kinds.last().unwrap(), "response.incomplete");
        assert_eq!(terminal["status"], "incomplete");
        assert_eq!(
            terminal["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(terminal["output"][0]["status"], "incomplete");
        let c = Completion {
            id: None,
            choices: vec![Choice {
                content: Some("Partial".into()),
                finish_reason: Some(FinishReason::Length),
                ..Default::default()
            }],
            usage: Some(Usage::new(1, 16)),
        };
        assert_eq!(w.final_response().unwrap(), &render(&c, &ctx())[..]);
    }

    #[test]
    fn an_error_mid_stream_is_an_error_event_then_response_failed() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.content(&mut out, "partial");
        w.truncated(&mut out);
        w.content(&mut out, "after the end");
        w.done(&mut out);
        assert!(w.is_done());
        assert!(
            w.final_response().is_none(),
            "a failed stream is not stored"
        );
        let (terminal, kinds) = accumulate(&out);
        assert_eq!(kinds[kinds.len() - 2..], ["error", "response.failed"]);
        assert_eq!(terminal["error"]["code"], "server_error");
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.contains("\"code\":\"stream_truncated\""), "{s}");
        assert!(!s.contains("after the end"));
    }

    #[test]
    fn an_empty_answer_still_completes() {
        let mut w = ChunkWriter::new(&ctx());
        let mut out = Vec::new();
        w.done(&mut out);
        let (terminal, kinds) = accumulate(&out);
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        assert_eq!(terminal["output"], json!([]));
        assert!(w.started() && !w.finished() && w.is_done());
    }

    #[test]
    fn the_stream_fuzz_harness_checks_responses_streams() {
        let harness = crate::fuzzing::by_name("stream_watsonx").unwrap();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut data = vec![4u8, 0u8];
        data.extend_from_slice(watsonx_tool_stream().as_bytes());
        harness(&data);
        const BYTES: &[u8] = b"{}[]\\\",:0n\n\r ";
        for _ in 0..300 {
            let mut m = data.clone();
            m[0] = (next() & 3) as u8 | 4;
            m[1] = (next() & 7) as u8;
            for _ in 0..(next() % 4) {
                let at = 2 + (next() as usize) % (m.len() - 2);
                m[at] = BYTES[(next() as usize) % BYTES.len()];
            }
            if next() % 3 == 0 {
                m.truncate(2 + (next() as usize) % (m.len() - 2));
            }
            harness(&m);
        }
    }
}
