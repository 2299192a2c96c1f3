//! A neutral answer ([`Completion`]) as the `response` object the Responses API returns, and
//! the pieces the stream writer ([`super::events`]) shares with it: output items, usage, the
//! status vocabulary and the object itself, so a streamed answer's final `response` is the
//! same JSON a non-stream answer would be.
//!
//! Output items, in order: a `reasoning` item (the provider's reasoning text as its summary),
//! a `message` item with one `output_text` part, then one `function_call` item per tool call.
//! Item ids are derived from the gateway's request id and the item's index (`rs_…`, `msg_…`,
//! `fc_…`), never from the provider: the gateway stores and serves them.

use serde_json::{json, Value};

use crate::chat::{Completion, FinishReason, ResponseCtx};
use crate::openai::Usage;

/// One output item's content, as both the answer and the stream writer build them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Reasoning(String),
    Message(String),
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    /// `rs_` / `msg_` / `fc_` + the gateway's id + `_` + the item's output index.
    pub(crate) fn id(&self, base: &str, index: usize) -> String {
        let prefix = match self {
            Item::Reasoning(_) => "rs_",
            Item::Message(_) => "msg_",
            Item::Call { .. } => "fc_",
        };
        format!("{prefix}{base}_{index}")
    }

    /// The item as it stands in `output`; `status` applies to messages and calls (reasoning
    /// items carry none).
    pub(crate) fn json(&self, id: &str, status: &str) -> Value {
        match self {
            Item::Reasoning(text) => json!({
                "id": id,
                "type": "reasoning",
                "summary": [summary_part(text)],
            }),
            Item::Message(text) => json!({
                "id": id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [text_part(text)],
            }),
            Item::Call {
                call_id,
                name,
                arguments,
            } => json!({
                "id": id,
                "type": "function_call",
                "status": status,
                "arguments": arguments,
                "call_id": call_id,
                "name": name,
            }),
        }
    }
}

/// A `summary_text` part.
pub(crate) fn summary_part(text: &str) -> Value {
    json!({"type": "summary_text", "text": text})
}

/// An `output_text` content part.
pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The `incomplete_details.reason` of a finish reason that cut the answer short.
pub(crate) fn incomplete_reason(f: Option<FinishReason>) -> Option<&'static str> {
    match f {
        Some(FinishReason::Length) => Some("max_output_tokens"),
        Some(FinishReason::ContentFilter) => Some("content_filter"),
        _ => None,
    }
}

/// Responses `usage`: input tokens include cached ones (as the neutral prompt tokens do).
pub(crate) fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    })
}

/// What every rendering of one response shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    /// The request echo (`request::echo`); empty: OpenAI's defaults.
    pub echo: &'a str,
}

/// How a response ended (or that it has not yet).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Status<'a> {
    InProgress,
    Completed,
    Incomplete(&'static str),
    /// `code`, `message`.
    Failed(&'a str, &'a str),
}

/// The `response` object.
pub(crate) fn response_json(
    head: &Head<'_>,
    status: Status<'_>,
    output: &[Value],
    usage: Option<Usage>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"id\":");
    json_to(&mut out, head.id);
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    out.extend_from_slice(head.created.to_string().as_bytes());
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(match status {
        Status::InProgress => b"in_progress".as_slice(),
        Status::Completed => b"completed",
        Status::Incomplete(_) => b"incomplete",
        Status::Failed(..) => b"failed",
    });
    out.extend_from_slice(b"\",\"error\":");
    match status {
        Status::Failed(code, message) => {
            json_to(&mut out, &json!({"code": code, "message": message}));
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"incomplete_details\":");
    match status {
        Status::Incomplete(reason) => {
            out.extend_from_slice(b"{\"reason\":\"");
            out.extend_from_slice(reason.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.push(b',');
    if head.echo.is_empty() {
        out.extend_from_slice(super::request::echo(&Default::default(), None).as_bytes());
    } else {
        out.extend_from_slice(head.echo.as_bytes());
    }
    out.extend_from_slice(b",\"model\":");
    json_to(&mut out, head.model);
    out.extend_from_slice(b",\"output\":");
    json_to(&mut out, output);
    out.extend_from_slice(b",\"usage\":");
    match usage {
        Some(u) => json_to(&mut out, &usage_json(u)),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    out
}

fn json_to<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
}

/// Renders the client's `response` body (the first choice: Responses answers have one).
pub fn render(c: &Completion, ctx: &ResponseCtx<'_>) -> Vec<u8> {
    let choice = c.choices.first();
    let mut items = Vec::new();
    if let Some(ch) = choice {
        if let Some(r) = ch.reasoning.as_deref().filter(|r| !r.is_empty()) {
            items.push(Item::Reasoning(r.to_owned()));
        }
        if let Some(t) = ch.content.as_deref().filter(|t| !t.is_empty()) {
            items.push(Item::Message(t.to_owned()));
        }
        for call in &ch.tool_calls {
            items.push(Item::Call {
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            });
        }
    }
    let incomplete = incomplete_reason(choice.and_then(|ch| ch.finish_reason));
    let last = items.len().saturating_sub(1);
    let output: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let status = if incomplete.is_some() && i == last {
                "incomplete"
            } else {
                "completed"
            };
            item.json(&item.id(ctx.fallback_id, i), status)
        })
        .collect();
    let id = ctx.response_id(None);
    let head = Head {
        id: &id,
        created: ctx.created,
        model: ctx.client_model,
        echo: ctx.echo,
    };
    let status = match incomplete {
        Some(reason) => Status::Incomplete(reason),
        None => Status::Completed,
    };
    response_json(&head, status, &output, c.usage)
}

/// The output items of a rendered `response` object (for storage), ids as rendered; none
/// when the bytes are not one.
pub fn output_items(response_json: &[u8]) -> Vec<Value> {
    #[derive(serde::Deserialize)]
    struct OutputOnly {
        #[serde(default)]
        output: Vec<Value>,
    }
    serde_json::from_slice::<OutputOnly>(response_json)
        .map(|r| r.output)
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chat::{Choice, ToolCall};
    use crate::front::FrontDoor;

    pub(crate) const ECHO: &str = r#""background":false,"instructions":null,"max_output_tokens":null,"max_tool_calls":null,"metadata":{},"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},"safety_identifier":null,"service_tier":"default","store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","user":null"#;

    pub(crate) fn ctx() -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "gpt-via-claude",
            created: 1_700_000_000,
            fallback_id: "req9",
            front: FrontDoor::Responses,
            include_usage: true,
            echo: ECHO,
        }
    }

    /// Checks the members openai-python's models require (not Optional in
    /// `types/responses/*.py`) are present with the right JSON types.
    pub(crate) fn check_sdk_shape(v: &Value) {
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["object"], "response");
        assert!(v["created_at"].is_u64());
        assert!(v["model"].is_string());
        assert!(v["parallel_tool_calls"].is_boolean());
        assert!(v["tools"].is_array());
        assert!(v["tool_choice"].is_string() || v["tool_choice"].is_object());
        assert!(["completed", "incomplete", "in_progress", "failed"]
            .contains(&v["status"].as_str().unwrap()));
        for item in v["output"].as_array().unwrap() {
            assert!(item["id"].is_string(), "{item}");
            match item["type"].as_str().unwrap() {
                "message" => {
                    assert_eq!(item["role"], "assistant");
                    assert!(item["status"].is_string());
                    for part in item["content"].as_array().unwrap() {
                        assert_eq!(part["type"], "output_text");
                        assert!(part["text"].is_string());
                        assert!(part["annotations"].is_array());
                    }
                }
                "reasoning" => {
                    for s in item["summary"].as_array().unwrap() {
                        assert_eq!(s["type"], "summary_text");
                        assert!(s["text"].is_string());
                    }
                }
                "function_call" => {
                    assert!(item["call_id"].is_string());
                    assert!(item["name"].is_string());
                    assert!(item["arguments"].is_string());
                }
                other => panic!("unexpected item type {other}"),
            }
        }
        if !v["usage"].is_null() {
            let u = &v["usage"];
            for k in ["input_tokens", "output_tokens", "total_tokens"] {
                assert!(u[k].is_u64(), "usage.{k}");
            }
            assert!(u["input_tokens_details"]["cached_tokens"].is_u64());
            assert!(u["output_tokens_details"]["reasoning_tokens"].is_u64());
        }
    }

    #[test]
    // `..Default::default()` keeps the test building when `Choice` gains fields.
    #[allow(clippy::needless_update)]
    fn renders_reasoning_text_and_calls_as_output_items() {
        let mut u = Usage::new(120, 30);
        u.cached_tokens = 100;
        u.reasoning_tokens = 12;
        let c = Completion {
            id: Some("provider-id".into()),
            choices: vec![Choice {
                content: Some("Checking.".into()),
                reasoning: Some("Think".into()),
                tool_calls: vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "f".into(),
                        arguments: r#"{"x":1}"#.into(),
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "g".into(),
                        arguments: "{}".into(),
                    },
                ],
                finish_reason: Some(FinishReason::ToolCalls),
                ..Default::default()
            }],
            usage: Some(u),
        };
        let bytes = crate::chat::response::render(&c, &ctx());
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        check_sdk_shape(&v);
        assert_eq!(
            v["id"], "resp_req9",
            "the gateway's id, never the provider's"
        );
        assert_eq!(v["status"], "completed");
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(v["model"], "gpt-via-claude");
        assert_eq!(v["created_at"], 1_700_000_000);
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(
            v["output"],
            json!([
                {"id": "rs_req9_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Think"}]},
                {"id": "msg_req9_1", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
                {"id": "fc_req9_2", "type": "function_call", "status": "completed", "arguments": "{\"x\":1}", "call_id": "call_a", "name": "f"},
                {"id": "fc_req9_3", "type": "function_call", "status": "completed", "arguments": "{}", "call_id": "call_b", "name": "g"},
            ])
        );
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
                   "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12},
                   "total_tokens": 150})
        );
        assert_eq!(
            output_items(&bytes),
            v["output"].as_array().unwrap().clone()
        );
        assert!(output_items(b"not json").is_empty());
    }

    #[test]
    fn cut_short_answers_are_incomplete() {
        for (reason, why) in [
            (FinishReason::Length, "max_output_tokens"),
            (FinishReason::ContentFilter, "content_filter"),
        ] {
            let c = Completion {
                id: None,
                choices: vec![Choice {
                    content: Some("Partial".into()),
                    finish_reason: Some(reason),
                    ..Default::default()
                }],
                usage: None,
            };
            let v: Value = serde_json::from_slice(&render(&c, &ctx())).unwrap();
            check_sdk_shape(&v);
            assert_eq!(v["status"], "incomplete");
            assert_eq!(v["incomplete_details"], json!({"reason": why}));
            assert_eq!(v["output"][0]["status"], "incomplete");
            assert_eq!(v["usage"], Value::Null);
        }
    }

    #[test]
    fn an_empty_echo_takes_the_defaults() {
        let c = Completion {
            id: None,
            choices: vec![],
            usage: None,
        };
        let a: Value = serde_json::from_slice(&render(&c, &ctx())).unwrap();
        let b: Value =
            serde_json::from_slice(&render(&c, &ResponseCtx { echo: "", ..ctx() })).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["output"], json!([]));
        check_sdk_shape(&a);
    }
}
