//! A neutral answer ([`Completion`]) as the Anthropic `message` object the Messages API
//! returns, and the usage and stop-reason vocabulary Messages answers and events share.

use serde::Serialize;
use serde_json::{json, Value};

use crate::chat::{Completion, FinishReason, ResponseCtx, ThinkingBlock};
use crate::openai::Usage;

/// Anthropic's `stop_reason` for a neutral finish reason.
pub fn stop_reason(f: Option<FinishReason>) -> &'static str {
    match f {
        None | Some(FinishReason::Stop) => "end_turn",
        Some(FinishReason::StopSequence) => "stop_sequence",
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
    }
}

/// Messages `usage`: `input_tokens` excludes cache reads and writes, which are counted apart
/// (the neutral `prompt_tokens` includes both).
pub fn usage_json(u: Option<Usage>) -> UsageOut {
    let u = u.unwrap_or_default();
    UsageOut {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(u.cached_tokens)
            .saturating_sub(u.cache_write_tokens),
        cache_creation_input_tokens: u.cache_write_tokens,
        cache_read_input_tokens: u.cached_tokens,
        output_tokens: u.completion_tokens,
    }
}

/// Messages `usage`, in Anthropic's field order.
#[derive(Debug, Serialize)]
pub struct UsageOut {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

/// A tool call's JSON arguments as the `input` object (`{}` when the provider sent nothing or
/// something that is not a JSON object).
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Renders the client's `message` body (the first choice: Messages answers have one).
pub fn render(c: &Completion, ctx: &ResponseCtx<'_>) -> Vec<u8> {
    let choice = c.choices.first().cloned().unwrap_or_default();
    let mut content = Vec::new();
    if !choice.thinking_blocks.is_empty() {
        // Claude's signed blocks (Converse): the client sends them back as they are.
        content.extend(choice.thinking_blocks.iter().map(ThinkingBlock::to_json));
    } else if let Some(r) = choice.reasoning.as_deref().filter(|r| !r.is_empty()) {
        // The provider's reasoning has no Anthropic signature: a later turn that sends it back
        // goes to the same non-Claude provider, which ignores thinking blocks.
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = choice.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in &choice.tool_calls {
        content.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": tool_input(&call.arguments),
        }));
    }
    // A struct, not `json!`, so that the fields come in Anthropic's order.
    #[derive(Serialize)]
    struct MessageOut<'a> {
        id: String,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        model: &'a str,
        content: Vec<Value>,
        stop_reason: &'static str,
        stop_sequence: Option<&'a str>,
        usage: UsageOut,
    }
    let body = MessageOut {
        id: ctx.response_id(c.id.as_deref()),
        kind: "message",
        role: "assistant",
        model: ctx.client_model,
        content,
        stop_reason: stop_reason(choice.finish_reason),
        stop_sequence: None,
        usage: usage_json(c.usage),
    };
    serde_json::to_vec(&body).expect("a message serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Choice, ToolCall};
    use crate::front::FrontDoor;

    #[test]
    fn renders_text_tools_and_cache_usage() {
        let mut u = Usage::new(120, 7);
        u.cached_tokens = 100;
        u.cache_write_tokens = 5;
        let c = Completion {
            id: Some("abc".into()),
            choices: vec![Choice {
                content: Some("Hi".into()),
                reasoning: None,
                thinking_blocks: Vec::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":1}"#.into(),
                }],
                finish_reason: Some(FinishReason::ToolCalls),
            }],
            usage: Some(u),
        };
        let ctx = ResponseCtx {
            client_model: "claude-x",
            created: 1,
            fallback_id: "req",
            front: FrontDoor::Messages,
            include_usage: true,
            echo: "",
        };
        let v: Value = serde_json::from_slice(&render(&c, &ctx)).unwrap();
        assert_eq!(v["id"], "msg_abc");
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["content"][0], json!({"type":"text","text":"Hi"}));
        assert_eq!(v["content"][1]["input"], json!({"a":1}));
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(
            v["usage"],
            json!({"input_tokens":15,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7})
        );
    }
}
