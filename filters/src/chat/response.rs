//! A provider's answer in neutral form, and its rendering as the OpenAI body the client
//! asked for: `chat.completion` or, for legacy `/v1/completions`, `text_completion`.

use crate::front::FrontDoor;
use serde::Serialize;
use serde_json::Value;

use super::request::{ThinkingBlock, ToolCall};
use crate::openai::Usage;

/// OpenAI's `finish_reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// Stopped at one of the request's stop sequences (`stop` for OpenAI clients; Messages
    /// clients are told `stop_sequence`), when the provider says so.
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choice {
    /// The text; None when the model only called tools.
    pub content: Option<String>,
    /// Reasoning text the provider returned (Anthropic thinking, Gemini thoughts, Bedrock
    /// reasoningContent), rendered as the non-standard `reasoning_content` field.
    pub reasoning: Option<String>,
    /// Claude's signed reasoning blocks (thinking + signature, redacted thinking), rendered as
    /// `thinking_blocks` for the client to send back on its next turn (see
    /// [`ThinkingBlock`]). Empty for providers that sign nothing.
    pub thinking_blocks: Vec<ThinkingBlock>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<FinishReason>,
}

/// A provider's complete (non-stream) answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    /// The provider's response id, when it gave one.
    pub id: Option<String>,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

/// What the rendering needs to know about the client's request.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    /// The model name the client sent, echoed back.
    pub client_model: &'a str,
    /// Unix seconds for `created`.
    pub created: u64,
    /// Used for `id` when the provider gave none (the gateway's request id).
    pub fallback_id: &'a str,
    /// The API the client called: decides the shape of answers, events and errors.
    pub front: FrontDoor,
    /// `stream_options.include_usage` (streams only).
    pub include_usage: bool,
    /// The Responses front door's request echo: the JSON members its `response` object
    /// repeats from the request (`front::responses::request::echo`), without braces. Empty for
    /// the other front doors.
    pub echo: &'a str,
}

/// A [`ResponseCtx`] owned by a stream translator that outlives the request's borrows.
#[derive(Debug, Clone)]
pub struct OwnedResponseCtx {
    client_model: String,
    created: u64,
    fallback_id: String,
    front: FrontDoor,
    include_usage: bool,
    echo: String,
}

impl OwnedResponseCtx {
    pub fn new(ctx: &ResponseCtx<'_>) -> Self {
        OwnedResponseCtx {
            client_model: ctx.client_model.to_owned(),
            created: ctx.created,
            fallback_id: ctx.fallback_id.to_owned(),
            front: ctx.front,
            include_usage: ctx.include_usage,
            echo: ctx.echo.to_owned(),
        }
    }

    pub fn get(&self) -> ResponseCtx<'_> {
        ResponseCtx {
            client_model: &self.client_model,
            created: self.created,
            fallback_id: &self.fallback_id,
            front: self.front,
            include_usage: self.include_usage,
            echo: &self.echo,
        }
    }
}

impl ResponseCtx<'_> {
    /// `chatcmpl-…` / `cmpl-…` / `msg_…` from the provider's id or the fallback; `resp_…`
    /// always from the fallback (the gateway stores Responses answers under its own id, which
    /// `previous_response_id` and `GET /v1/responses/{id}` then name).
    pub fn response_id(&self, provider_id: Option<&str>) -> String {
        let prefix = match self.front {
            FrontDoor::Chat => "chatcmpl-",
            FrontDoor::Completions => "cmpl-",
            FrontDoor::Messages => "msg_",
            FrontDoor::Responses => "resp_",
        };
        let id = provider_id
            .filter(|s| !s.is_empty() && self.front != FrontDoor::Responses)
            .unwrap_or(self.fallback_id);
        if id.starts_with(prefix) {
            id.to_owned()
        } else {
            format!("{prefix}{id}")
        }
    }
}

#[derive(Serialize)]
pub(crate) struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedOut>,
    /// Only when the provider reported reasoning tokens (OpenAI's
    /// `completion_tokens_details.reasoning_tokens`, a subset of `completion_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningOut>,
}

#[derive(Serialize)]
struct CachedOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningOut {
    reasoning_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        UsageOut {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            prompt_tokens_details: (u.cached_tokens > 0).then_some(CachedOut {
                cached_tokens: u.cached_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(ReasoningOut {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Renders the client's JSON body for a complete answer.
pub fn render(c: &Completion, ctx: &ResponseCtx<'_>) -> Vec<u8> {
    match ctx.front {
        FrontDoor::Messages => return crate::front::messages::answer::render(c, ctx),
        FrontDoor::Responses => return crate::front::responses::answer::render(c, ctx),
        FrontDoor::Completions => return render_tree(c, ctx),
        FrontDoor::Chat => {}
    }
    // Written straight from typed parts, every object's keys in sorted order: the bytes a
    // `serde_json::Value` of the same answer serializes to (see `render_tree`, the tests).
    let choices: Vec<ChoiceOut<'_>> = c
        .choices
        .iter()
        .enumerate()
        .map(|(index, ch)| ChoiceOut {
            finish_reason: ch.finish_reason.map(FinishReason::as_str),
            index,
            logprobs: (),
            message: MessageOut {
                content: ch.content.as_deref(),
                reasoning_content: ch.reasoning.as_deref(),
                refusal: (),
                role: "assistant",
                thinking_blocks: (!ch.thinking_blocks.is_empty()).then(|| {
                    ch.thinking_blocks
                        .iter()
                        .map(ThinkingBlock::to_json)
                        .collect()
                }),
                tool_calls: (!ch.tool_calls.is_empty()).then(|| tool_calls_tree(&ch.tool_calls)),
            },
        })
        .collect();
    let body = ChatOut {
        choices,
        created: ctx.created,
        id: ctx.response_id(c.id.as_deref()),
        model: ctx.client_model,
        object: "chat.completion",
        usage: c.usage.map(UsageSorted::from),
    };
    serde_json::to_vec(&body).expect("typed parts serialize")
}

/// A `chat.completion` body, its keys in sorted order (see [`render`]).
#[derive(Serialize)]
struct ChatOut<'a> {
    choices: Vec<ChoiceOut<'a>>,
    created: u64,
    id: String,
    model: &'a str,
    object: &'static str,
    usage: Option<UsageSorted>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    finish_reason: Option<&'static str>,
    index: usize,
    logprobs: (),
    message: MessageOut<'a>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    refusal: (),
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

/// [`UsageOut`] with its keys in sorted order.
#[derive(Serialize)]
struct UsageSorted {
    completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningOut>,
    prompt_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedOut>,
    total_tokens: u64,
}

impl From<Usage> for UsageSorted {
    fn from(u: Usage) -> Self {
        let o = UsageOut::from(u);
        UsageSorted {
            completion_tokens: o.completion_tokens,
            completion_tokens_details: o.completion_tokens_details,
            prompt_tokens: o.prompt_tokens,
            prompt_tokens_details: o.prompt_tokens_details,
            total_tokens: o.total_tokens,
        }
    }
}

/// Tool calls as a JSON tree (keys sorted: `function`, `id`, `type`).
fn tool_calls_tree(calls: &[ToolCall]) -> Value {
    let calls: Vec<ToolCallOut<'_>> = calls
        .iter()
        .map(|t| ToolCallOut {
            id: &t.id,
            kind: "function",
            function: FunctionOut {
                name: &t.name,
                arguments: &t.arguments,
            },
        })
        .collect();
    serde_json::to_value(calls).unwrap_or(Value::Null)
}

/// [`render`] through a JSON tree: legacy completions, and the reference the chat
/// rendering is tested against.
fn render_tree(c: &Completion, ctx: &ResponseCtx<'_>) -> Vec<u8> {
    let id = ctx.response_id(c.id.as_deref());
    let usage = c.usage.map(UsageOut::from);
    let body = if ctx.front.is_legacy() {
        let choices: Vec<Value> = c
            .choices
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                serde_json::json!({
                    "text": ch.content.as_deref().unwrap_or(""),
                    "index": i,
                    "logprobs": null,
                    "finish_reason": ch.finish_reason.map(FinishReason::as_str),
                })
            })
            .collect();
        serde_json::json!({
            "id": id, "object": "text_completion", "created": ctx.created,
            "model": ctx.client_model, "choices": choices, "usage": usage,
        })
    } else {
        let choices: Vec<Value> = c
            .choices
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let mut message = serde_json::json!({
                    "role": "assistant",
                    "content": ch.content,
                    "refusal": null,
                });
                if !ch.tool_calls.is_empty() {
                    message["tool_calls"] = tool_calls_tree(&ch.tool_calls);
                }
                if let Some(r) = &ch.reasoning {
                    message["reasoning_content"] = Value::String(r.clone());
                }
                if !ch.thinking_blocks.is_empty() {
                    message["thinking_blocks"] = Value::Array(
                        ch.thinking_blocks
                            .iter()
                            .map(ThinkingBlock::to_json)
                            .collect(),
                    );
                }
                serde_json::json!({
                    "index": i,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": ch.finish_reason.map(FinishReason::as_str),
                })
            })
            .collect();
        serde_json::json!({
            "id": id, "object": "chat.completion", "created": ctx.created,
            "model": ctx.client_model, "choices": choices, "usage": usage,
        })
    };
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(legacy: bool) -> ResponseCtx<'static> {
        ResponseCtx {
            client_model: "claude",
            created: 7,
            fallback_id: "req1",
            front: FrontDoor::legacy(legacy),
            include_usage: false,
            echo: "",
        }
    }

    #[test]
    fn renders_chat_and_legacy_shapes() {
        let mut usage = Usage::new(10, 2);
        usage.cached_tokens = 4;
        let c = Completion {
            id: Some("msg_1".into()),
            choices: vec![Choice {
                content: Some("hi".into()),
                reasoning: None,
                thinking_blocks: Vec::new(),
                tool_calls: vec![ToolCall {
                    id: "t1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
                finish_reason: Some(FinishReason::ToolCalls),
            }],
            usage: Some(usage),
        };
        let v: Value = serde_json::from_slice(&render(&c, &ctx(false))).unwrap();
        assert_eq!(v["id"], "chatcmpl-msg_1");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "claude");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert!(
            v["usage"].get("completion_tokens_details").is_none(),
            "no reasoning tokens reported"
        );
        let mut with_reasoning = c.clone();
        with_reasoning.usage.as_mut().unwrap().reasoning_tokens = 1;
        let r: Value = serde_json::from_slice(&render(&with_reasoning, &ctx(false))).unwrap();
        assert_eq!(
            r["usage"]["completion_tokens_details"]["reasoning_tokens"],
            1
        );
        assert!(v["choices"][0]["message"].get("thinking_blocks").is_none());
        let mut signed = c.clone();
        signed.choices[0].thinking_blocks = vec![
            ThinkingBlock::Thinking {
                thinking: "t".into(),
                signature: "s".into(),
            },
            ThinkingBlock::Redacted { data: "d".into() },
        ];
        let v: Value = serde_json::from_slice(&render(&signed, &ctx(false))).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["thinking_blocks"],
            serde_json::json!([{"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"}])
        );
        // Messages clients get the blocks as content blocks, signatures intact.
        let m: Value = serde_json::from_slice(&render(
            &signed,
            &ResponseCtx {
                front: FrontDoor::Messages,
                ..ctx(false)
            },
        ))
        .unwrap();
        assert_eq!(
            m["content"][0],
            serde_json::json!({"type": "thinking", "thinking": "t", "signature": "s"})
        );
        assert_eq!(m["content"][1]["type"], "redacted_thinking");
        let v: Value = serde_json::from_slice(&render(&c, &ctx(true))).unwrap();
        assert_eq!(v["id"], "cmpl-msg_1");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "hi");
        assert_eq!(v["usage"]["total_tokens"], 12);
    }

    /// The typed chat rendering writes the very bytes the JSON tree did, for every mix of
    /// parts.
    #[test]
    fn chat_rendering_is_byte_for_byte_the_trees() {
        let call = ToolCall {
            id: "t\"1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        };
        let block = ThinkingBlock::Thinking {
            thinking: "t".into(),
            signature: "s".into(),
        };
        let mut n = 0;
        for content in [None, Some("hi \u{e9}\n".to_owned())] {
            for reasoning in [None, Some("why".to_owned())] {
                for blocks in [
                    vec![],
                    vec![block.clone(), ThinkingBlock::Redacted { data: "d".into() }],
                ] {
                    for calls in [vec![], vec![call.clone(), call.clone()]] {
                        for usage in [None, Some((0, 0)), Some((4, 0)), Some((0, 3)), Some((4, 3))]
                        {
                            let choice = Choice {
                                content: content.clone(),
                                reasoning: reasoning.clone(),
                                thinking_blocks: blocks.clone(),
                                tool_calls: calls.clone(),
                                finish_reason: [
                                    None,
                                    Some(FinishReason::Stop),
                                    Some(FinishReason::ToolCalls),
                                ][n % 3],
                            };
                            let c = Completion {
                                id: [None, Some("chatcmpl-x".into()), Some("m1".into())][n % 3]
                                    .clone(),
                                choices: vec![choice.clone(); 1 + n % 2],
                                usage: usage.map(|(cached, reasoning)| {
                                    let mut u = Usage::new(10, 2);
                                    u.cached_tokens = cached;
                                    u.reasoning_tokens = reasoning;
                                    u
                                }),
                            };
                            n += 1;
                            let ctx = ctx(false);
                            assert_eq!(
                                String::from_utf8(render(&c, &ctx)).unwrap(),
                                String::from_utf8(render_tree(&c, &ctx)).unwrap()
                            );
                        }
                    }
                }
            }
        }
        let empty = Completion::default();
        assert_eq!(
            render(&empty, &ctx(false)),
            render_tree(&empty, &ctx(false))
        );
    }
}
