//! Prompt-cache breakpoints end to end through the translators: the front doors' `cache_control`
//! markers ([`ChatRequest::cache`]) become Anthropic `cache_control` blocks, Converse
//! `cachePoint` blocks, nothing on providers that cache on their own, and a dropped name where
//! the provider has no prompt cache.

use serde_json::{json, Value};

use crate::chat::{CacheAt, CachePoint, CacheTtl, ChatRequest};
use crate::openai::{parse_request, Endpoint, InvalidRequest};
use crate::translate::{prepare_chat, Dialect, Target, UpstreamRequest};

fn chat(body: Value) -> Result<ChatRequest, InvalidRequest> {
    let raw = serde_json::to_vec(&body).unwrap();
    ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap())
}

fn messages(body: Value) -> ChatRequest {
    let raw = serde_json::to_vec(&body).unwrap();
    ChatRequest::from_parsed(&parse_request(Endpoint::Messages, &raw).unwrap()).unwrap()
}

fn up(dialect: Dialect, model: &str, req: &ChatRequest) -> (Value, Vec<String>) {
    let t = Target {
        dialect,
        upstream_model: model,
        project: Some("p"),
        location: Some("us-east5"),
        api_version: Some("2024-10-21"),
    };
    let r: UpstreamRequest = prepare_chat(&t, req).unwrap();
    (serde_json::from_slice(&r.body).unwrap(), r.dropped)
}

const EPH: fn() -> Value = || json!({"type": "ephemeral"});

/// A chat body with markers on a system part, a user part, a message and a tool.
fn marked_chat() -> Value {
    json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "Today."}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "Doc."},
                {"type": "text", "text": "Big document.", "cache_control": EPH()},
                {"type": "text", "text": "Question?"}
            ]},
            {"role": "assistant", "content": "Answer.", "cache_control": EPH()},
            {"role": "user", "content": "More?"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"},
                "cache_control": EPH()}}
        ]
    })
}

#[test]
fn chat_front_door_reads_markers_on_parts_messages_and_tools() {
    let r = chat(marked_chat()).unwrap();
    assert_eq!(
        r.cache,
        [
            CachePoint {
                at: CacheAt::Part {
                    message: 0,
                    part: 0
                },
                ttl: Some(CacheTtl::OneHour)
            },
            CachePoint {
                at: CacheAt::Part {
                    message: 1,
                    part: 1
                },
                ttl: None
            },
            CachePoint {
                at: CacheAt::Message(2),
                ttl: None
            },
            CachePoint {
                at: CacheAt::Tool(1),
                ttl: None
            },
        ]
    );
    assert!(r.other.is_empty() && r.dropped.is_empty());
    // Top-level on the tool object works too.
    let mut b = marked_chat();
    b["tools"][0]["cache_control"] = EPH();
    assert!(chat(b).unwrap().cache.contains(&CachePoint {
        at: CacheAt::Tool(0),
        ttl: None
    }));
    // A wrong marker is refused by name.
    let mut b = marked_chat();
    b["messages"][1]["content"][1]["cache_control"] = json!({"type": "ephemeral", "ttl": "2h"});
    assert_eq!(
        chat(b).unwrap_err().param.as_deref(),
        Some("messages[1].content[1].cache_control")
    );
    let mut b = marked_chat();
    b["tools"][1]["function"]["cache_control"] = json!({"type": "persistent"});
    assert_eq!(
        chat(b).unwrap_err().param.as_deref(),
        Some("tools[1].function.cache_control")
    );
}

#[test]
fn anthropic_gets_cache_control_on_the_marked_blocks() {
    let r = chat(marked_chat()).unwrap();
    for d in [
        Dialect::Anthropic,
        Dialect::BedrockAnthropic,
        Dialect::VertexAnthropic,
    ] {
        let (body, dropped) = up(d, "claude-x", &r);
        assert!(dropped.is_empty(), "{d:?}: {dropped:?}");
        assert_eq!(
            body["system"],
            json!([
                {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "Today."}
            ]),
            "{d:?}"
        );
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Doc."},
                {"type": "text", "text": "Big document.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Question?"}
            ])
        );
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "text", "text": "Answer.", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(body["messages"][2]["content"], "More?");
        assert!(body["tools"][0].get("cache_control").is_none());
        assert_eq!(
            body["tools"][1]["cache_control"],
            json!({"type": "ephemeral"})
        );
    }
}

#[test]
fn anthropic_without_markers_sends_system_as_a_string() {
    let mut b = marked_chat();
    b["messages"][0]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("cache_control");
    let (body, _) = up(Dialect::Anthropic, "claude-x", &chat(b).unwrap());
    assert_eq!(body["system"], "Long rules.\nToday.");
}

#[test]
fn anthropic_keeps_the_last_four_breakpoints() {
    let mut b = marked_chat();
    b["tools"][0]["cache_control"] = EPH();
    b["messages"][3]["cache_control"] = EPH();
    let r = chat(b).unwrap();
    assert_eq!(r.cache.len(), 6);
    let (body, dropped) = up(Dialect::Anthropic, "claude-x", &r);
    assert_eq!(dropped, ["cache_control"]);
    // Tools come first in the prompt: both lose theirs; system, the two turns and the last
    // user message keep theirs.
    assert!(body["tools"][0].get("cache_control").is_none());
    assert!(body["tools"][1].get("cache_control").is_none());
    assert!(body["system"][0].get("cache_control").is_some());
    assert!(body["messages"][0]["content"][1]
        .get("cache_control")
        .is_some());
    assert!(body["messages"][2]["content"][0]
        .get("cache_control")
        .is_some());
    let marks = body.to_string().matches("cache_control").count();
    assert_eq!(marks, 4);
}

#[test]
fn anthropic_markers_follow_tool_results_to_the_front_of_their_turn() {
    let r = chat(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "w", "arguments": "{}"}}], "cache_control": EPH()},
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny.", "cache_control": EPH()},
        ]
    }))
    .unwrap();
    let (body, dropped) = up(Dialect::Anthropic, "claude-x", &r);
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        body["messages"][1]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(body["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(
        body["messages"][2]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}

#[test]
fn converse_gets_cache_points_after_the_marked_blocks() {
    let r = chat(marked_chat()).unwrap();
    let (body, dropped) = up(Dialect::BedrockConverse, "anthropic.claude-sonnet-4", &r);
    // Converse's cachePoint has no ttl: the 1h ask is named.
    assert_eq!(dropped, ["cache_control.ttl"]);
    let point = json!({"cachePoint": {"type": "default"}});
    assert_eq!(
        body["system"],
        json!([{"text": "Long rules.\nToday."}, point.clone()])
    );
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"text": "Doc."}, {"text": "Big document."}, point.clone(), {"text": "Question?"}])
    );
    assert_eq!(
        body["messages"][1]["content"],
        json!([{"text": "Answer."}, point.clone()])
    );
    assert_eq!(body["toolConfig"]["tools"][1]["toolSpec"]["name"], "b");
    assert_eq!(body["toolConfig"]["tools"][2], point);
    assert_eq!(body["toolConfig"]["tools"].as_array().unwrap().len(), 3);
}

#[test]
fn converse_nova_caches_messages_but_not_tools_and_others_name_it() {
    let r = chat(marked_chat()).unwrap();
    let (body, dropped) = up(Dialect::BedrockConverse, "amazon.nova-pro-v1:0", &r);
    assert!(dropped.contains(&"cache_control".to_owned()), "{dropped:?}");
    assert_eq!(body["toolConfig"]["tools"].as_array().unwrap().len(), 2);
    assert!(body["system"][1].get("cachePoint").is_some());
    let (body, dropped) = up(
        Dialect::BedrockConverse,
        "meta.llama3-70b-instruct-v1:0",
        &r,
    );
    assert_eq!(dropped, ["cache_control"]);
    assert!(!body.to_string().contains("cachePoint"));
}

#[test]
fn converse_keeps_the_last_four_points() {
    let mut b = marked_chat();
    b["tools"][0]["cache_control"] = EPH();
    b["messages"][3]["cache_control"] = EPH();
    b["messages"][0]["content"][0]
        .as_object_mut()
        .unwrap()
        .remove("cache_control");
    b["messages"][0]["cache_control"] = EPH();
    let (body, dropped) = up(
        Dialect::BedrockConverse,
        "us.anthropic.claude-3-7-sonnet",
        &chat(b).unwrap(),
    );
    assert_eq!(dropped, ["cache_control"]);
    assert_eq!(body.to_string().matches("cachePoint").count(), 4);
    assert!(!body["toolConfig"].to_string().contains("cachePoint"));
}

#[test]
fn automatic_caches_send_nothing_and_drop_nothing_others_name_it() {
    let r = chat(marked_chat()).unwrap();
    for (d, model) in [
        (Dialect::OpenAi, "gpt-4o"),
        (Dialect::Azure, "dep"),
        (Dialect::VertexGemini, "gemini-2.5-flash"),
    ] {
        let (body, dropped) = up(d, model, &r);
        assert!(dropped.is_empty(), "{d:?}: {dropped:?}");
        assert!(!body.to_string().contains("cache_control"), "{d:?}");
    }
    for (d, model) in [
        (Dialect::Watsonx, "ibm/granite"),
        (Dialect::OciGeneric, "meta.llama"),
    ] {
        let (body, dropped) = up(d, model, &r);
        assert_eq!(dropped, ["cache_control"], "{d:?}");
        assert!(!body.to_string().contains("cache_control"), "{d:?}");
    }
}

/// A Messages body with markers on a system block, content blocks, a tool_use, a
/// tool_result and a tool.
fn marked_messages() -> Value {
    json!({
        "model": "m", "max_tokens": 100,
        "system": [{"type": "text", "text": "Rules."}, {"type": "text", "text": "More rules.", "cache_control": EPH()}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Doc.", "cache_control": EPH()}, {"type": "text", "text": "Q?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {}, "cache_control": EPH()}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Sunny.", "cache_control": EPH()},
                {"type": "text", "text": "Thanks."}]}
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
    })
}

#[test]
fn messages_front_door_reads_markers_instead_of_dropping_them() {
    let r = messages(marked_messages());
    assert!(r.dropped.is_empty(), "{:?}", r.dropped);
    // Neutral messages: 0 system, 1 user, 2 assistant, 3 tool result, 4 user "Thanks.".
    let at: Vec<CacheAt> = r.cache.iter().map(|c| c.at).collect();
    assert_eq!(
        at,
        [
            CacheAt::Part {
                message: 0,
                part: 1
            },
            CacheAt::Part {
                message: 1,
                part: 0
            },
            CacheAt::Message(2),
            CacheAt::Message(3),
            CacheAt::Tool(0),
        ]
    );
    assert_eq!(r.cache[4].ttl, Some(CacheTtl::FiveMinutes));
}

#[test]
fn messages_markers_reach_converse_and_are_stripped_for_openai() {
    let r = messages(marked_messages());
    let (body, dropped) = up(Dialect::BedrockConverse, "anthropic.claude-3-5-haiku", &r);
    // Five markers: the tool's (first in the prompt) goes.
    assert_eq!(dropped, ["cache_control"]);
    let point = json!({"cachePoint": {"type": "default"}});
    assert_eq!(body["system"][1], point);
    assert_eq!(body["messages"][0]["content"][1], point);
    assert_eq!(
        body["messages"][1]["content"],
        json!([{"text": "Let me look."}, {"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}}, point.clone()])
    );
    assert_eq!(body["messages"][2]["content"][1], point);
    let (body, dropped) = up(Dialect::OpenAi, "gpt-4o", &r);
    assert!(dropped.is_empty(), "{dropped:?}");
    assert!(!body.to_string().contains("cache_control"));
}
