"""Thinking survives an OpenAI-dialect client's tool loop (issue 15 item 2), driven by the `openai` SDK.

Claude with extended thinking and tools refuses a continuation whose last assistant turn does not
start with the signed thinking block it produced ("Expected `thinking` or `redacted_thinking`, but
found `tool_use`"), and rejects a block whose text or signature was changed. The gateway hands
the signed blocks to OpenAI clients as `thinking_blocks` on the assistant message (LiteLLM's
field; in streams, one delta per block when its signature arrives) and sends them back first in
the assistant turn, so the continuation keeps thinking. Gemini's thought signatures travel in the
tool call ids (issue 15, earlier work) and are exercised the same way.

Each test runs the 2-step loop as an SDK user would — `messages.append(resp.choices[0].message)`
(the SDK serializes the extra fields it received) or the message as a dict — then the tool
result, with `reasoning_effort` on both steps. The native mocks verify like the real APIs:
anthropic_messages.py (Anthropic, Bedrock InvokeModel, Vertex Claude) and bedrock.py (Converse)
check every block sent back against the signature they issued and refuse a thinking
continuation without one; gemini.py checks thought signatures on Gemini 3.

A fallback case: Claude answers step 1, its mapping then fails (503) and the continuation, with
Claude's signed history, goes to Gemini 3 (and to OpenAI), which must accept it: Claude's blocks
are not sent there.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from helpers import ALICE_KEY
from provider_table import NativeServer, ROWS, Row, dropped, ids, start_gateway

import bedrock as bedrock_mock  # noqa: E402  (tests/sdk/native: on sys.path via provider_table)
from common import BadRequest  # noqa: E402

CLAUDE_ROWS = [r for r in ROWS if r.name in ("anthropic", "bedrock", "bedrock-invoke", "vertex-claude")]
GEMINI_25 = Row("gemini-25", "vertex", "vertex", "gemini-2.5-flash")
GEMINI_3 = Row("gemini-3", "vertex", "vertex", "gemini-3-pro-preview")
GEMINI_ROWS = [GEMINI_25, GEMINI_3]
EXTRA_MAPPINGS = [f'  {r.client_model}: {{providers: {{{r.provider}: {{model: "{r.model}"}}}}}}' for r in GEMINI_ROWS] + [
    # Claude fails (503), then Gemini 3 / OpenAI take the Claude-signed history.
    '  conf-claude-then-gemini: {default_provider: anthropic, providers: {anthropic: '
    '{model: "claude-3-5-haiku-20241022-fail-503"}, vertex: {model: "gemini-3-pro-preview"}}}',
    '  conf-claude-then-openai: {default_provider: anthropic, providers: {anthropic: '
    '{model: "claude-3-5-haiku-20241022-fail-503"}, openai: {model: "gpt-4o-mini"}}}',
]
# A Claude application inference profile (no `anthropic.` in the id): Messages requests go
# through Converse, translated.
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/claude-sonnet-x"
EXTRA_MAPPINGS.append(f'  conf-claude-profile: {{providers: {{bedrock: {{model: "{PROFILE}"}}}}}}')
ROUTING = "routing:\n  fallback: {enabled: true}\n"

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "thinking-loops", EXTRA_MAPPINGS, ROUTING)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


@pytest.fixture(scope="module")
def messages_client(gw):
    c = anthropic.Anthropic(api_key=ALICE_KEY, base_url=gw.url, max_retries=0, timeout=20)
    yield c
    c.close()


def sent(native: NativeServer, prefix: str) -> dict:
    req, _ = native.last(prefix)
    return req.json()


def extra(obj) -> dict:
    return obj.model_extra or {}


def first_step(client, model: str, stream: bool):
    """Step 1: the model thinks and calls the tool. Returns (the assistant message to append —
    the SDK object when not streamed, else a dict built from the deltas as a stream consumer
    would —, its tool call ids, its thinking_blocks)."""
    if not stream:
        c = client.chat.completions.create(model=model, messages=ASK, tools=[TOOL], reasoning_effort="low")
        msg = c.choices[0].message
        assert c.choices[0].finish_reason == "tool_calls" and msg.tool_calls, c
        return msg, [t.id for t in msg.tool_calls], extra(msg).get("thinking_blocks")
    calls: dict[int, dict] = {}
    reasoning, blocks, finish = "", [], None
    for chunk in client.chat.completions.create(model=model, messages=ASK, tools=[TOOL], reasoning_effort="low",
                                                stream=True):
        for ch in chunk.choices:
            d = ch.delta
            reasoning += extra(d).get("reasoning_content") or ""
            blocks += extra(d).get("thinking_blocks") or []
            for t in d.tool_calls or []:
                c = calls.setdefault(t.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                c["id"] += t.id or ""
                c["function"]["name"] += (t.function and t.function.name) or ""
                c["function"]["arguments"] += (t.function and t.function.arguments) or ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and calls
    msg = {"role": "assistant", "content": None, "tool_calls": [calls[k] for k in sorted(calls)]}
    if reasoning:
        msg["reasoning_content"] = reasoning
    if blocks:
        msg["thinking_blocks"] = blocks
    return msg, [c["id"] for c in msg["tool_calls"]], blocks or None


def continuation(client, model: str, assistant, call_ids, stream: bool, form: str = "object"):
    """Step 2: the tool results go back with the assistant message; returns (text, headers)."""
    if form == "dict" and not isinstance(assistant, dict):
        assistant = assistant.model_dump(exclude_none=True)
    messages = list(ASK)
    messages.append(assistant)
    messages += [{"role": "tool", "tool_call_id": i, "content": "18C and sunny"} for i in call_ids]
    if not stream:
        r = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=[TOOL],
                                                             reasoning_effort="low")
        c = r.parse()
        assert c.choices[0].finish_reason == "stop", c
        return c.choices[0].message.content, r.headers
    r = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=[TOOL],
                                                         reasoning_effort="low", stream=True)
    text = "".join(ch.delta.content or "" for chunk in r.parse() for ch in chunk.choices)
    return text, r.headers


# ------------------------------------------------------------------------------- Claude rows


# (streamed, how the assistant message goes back): the SDK's message object or its dict form;
# a streamed message is assembled by the caller, a dict already.
MODES = [(False, "object"), (False, "dict"), (True, "dict")]
MODE_IDS = ["json-object", "json-dict", "stream"]


@pytest.mark.parametrize("stream,form", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_claude_tool_loop_keeps_thinking(client, native, row, stream, form):
    msg, call_ids, blocks = first_step(client, row.client_model, stream)
    assert blocks and blocks[0]["type"] == "thinking" and blocks[0]["signature"], blocks
    assert blocks[0]["thinking"], blocks
    text, headers = continuation(client, row.client_model, msg, call_ids, stream, form)
    assert text, "the continuation answered"
    assert "reasoning_effort" not in dropped(headers), dict(headers)
    body = sent(native, row.prefix)
    if row.name == "bedrock":  # Converse: Claude's thinking in additionalModelRequestFields
        assert body["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
        turn = body["messages"][1]["content"]
        assert turn[0] == {"reasoningContent": {"reasoningText": {
            "text": blocks[0]["thinking"], "signature": blocks[0]["signature"]}}}, turn
    else:
        assert body["thinking"]["type"] == "enabled"
        turn = body["messages"][1]["content"]
        assert turn[0] == {"type": "thinking", "thinking": blocks[0]["thinking"],
                           "signature": blocks[0]["signature"]}, turn
    assert any(b.get("type") == "tool_use" or "toolUse" in b for b in turn), turn


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_tampered_thinking_is_refused_by_the_host(client, native, row):
    # The mocks verify blocks as Claude does: an edited text no longer matches its signature.
    msg, call_ids, blocks = first_step(client, row.client_model, False)
    tampered = msg.model_dump(exclude_none=True)
    tampered["thinking_blocks"] = [dict(blocks[0], thinking=blocks[0]["thinking"] + " (edited)")]
    with pytest.raises(openai.BadRequestError) as e:
        continuation(client, row.client_model, tampered, call_ids, False)
    assert "Invalid `signature` in `thinking` block" in str(e.value), e.value


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_unsigned_history_keeps_todays_rule(client, native, row):
    # Only reasoning_content came back (no signature): nothing can be verified, so the
    # continuation goes without thinking and names the parameter.
    msg, call_ids, _ = first_step(client, row.client_model, False)
    bare = msg.model_dump(exclude_none=True, exclude={"thinking_blocks"})
    assert "thinking_blocks" not in bare and bare.get("reasoning_content")
    text, headers = continuation(client, row.client_model, bare, call_ids, False)
    assert text
    assert "reasoning_effort" in dropped(headers), dict(headers)
    body = sent(native, row.prefix)
    assert "thinking" not in body and "additionalModelRequestFields" not in body


def test_converse_mock_refuses_a_thinking_continuation_without_its_block():
    # What the Converse mock does with a request the gateway no longer sends (the real API's
    # error, as Bedrock relays it from Claude).
    body = {
        "messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}]}}]},
        ],
        "inferenceConfig": {"maxTokens": 5120},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]},
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    }
    with pytest.raises(BadRequest) as e:
        bedrock_mock.check_thinking("anthropic.claude-3-haiku-20240307-v1:0", body)
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in str(e.value)
    text = bedrock_mock.REASONING_TEXT
    body["messages"][1]["content"].insert(0, {"reasoningContent": {"reasoningText": {
        "text": text, "signature": bedrock_mock.reasoning_signature(text)}}})
    assert bedrock_mock.check_thinking("anthropic.claude-3-haiku-20240307-v1:0", body)
    bedrock_mock.parse_converse(body)
    body["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["text"] = text + "!"
    with pytest.raises(BadRequest, match="Invalid `signature`"):
        bedrock_mock.parse_converse(body)


# ------------------------------------------------------------------------------- Gemini rows


@pytest.mark.parametrize("stream,form", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("row", GEMINI_ROWS, ids=ids(GEMINI_ROWS))
def test_gemini_tool_loop_with_thought_signatures(client, native, row, stream, form):
    msg, call_ids, blocks = first_step(client, row.client_model, stream)
    assert blocks is None, "Gemini signs nothing the client must carry apart"
    if row is GEMINI_3:
        assert "__ts_" in call_ids[0], call_ids  # the thought signature rides in the id
    text, headers = continuation(client, row.client_model, msg, call_ids, stream, form)
    assert text
    assert "reasoning_effort" not in dropped(headers), dict(headers)
    body = sent(native, row.prefix)
    assert "thinkingConfig" in body["generationConfig"]
    model_turn = body["contents"][1]
    call = next(p for p in model_turn["parts"] if "functionCall" in p)
    if row is GEMINI_3:
        assert call["thoughtSignature"] and call["thoughtSignature"] != "skip_thought_signature_validator"


# --------------------------------------------------------------------------------- fallback


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_signed_history_falls_back_to_gemini(client, native, stream):
    msg, call_ids, blocks = first_step(client, "conf-anthropic", stream)
    assert blocks
    before = len(native.records)
    text, headers = continuation(client, "conf-claude-then-gemini", msg, call_ids, stream, "dict")
    assert text
    assert headers["x-switchyard-provider"] == "vertex", dict(headers)
    tried = [p for p, _, _ in native.records[before:]]
    assert tried[0] == "anthropic" and tried[-1] == "vertex", tried
    body = sent(native, "vertex")
    flat = json.dumps(body)
    assert blocks[0]["signature"] not in flat and "thinking_blocks" not in flat
    call = next(p for p in body["contents"][1]["parts"] if "functionCall" in p)
    # Gemini 3 cannot verify Claude's history: Google's documented bypass value.
    assert call["thoughtSignature"] == "skip_thought_signature_validator"


def test_claude_signed_history_falls_back_to_openai(client, native):
    msg, call_ids, blocks = first_step(client, "conf-anthropic", False)
    assert blocks
    text, headers = continuation(client, "conf-claude-then-openai", msg, call_ids, False, "object")
    assert text
    assert headers["x-switchyard-provider"] == "openai", dict(headers)
    body = sent(native, "openai")
    assert all("thinking_blocks" not in m for m in body["messages"]), body["messages"]
    assert body["messages"][1].get("reasoning_content"), "the client's own field goes up as sent"


# ------------------------------------------------------------------- Messages front door, Converse


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_messages_client_tool_loop_through_converse(messages_client, native, stream):
    # A Messages client on a Claude profile that Bedrock serves through Converse: the signed
    # thinking block comes back as a Messages block (signature included) and, sent back, reaches
    # Converse as reasoningContent; the continuation keeps thinking.
    kw = dict(model="conf-claude-profile", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
              tools=[{"name": "get_weather", "description": "Current weather in a city",
                      "input_schema": TOOL["function"]["parameters"]}])
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with messages_client.messages.stream(messages=ask, **kw) as s:
            m = s.get_final_message()
    else:
        m = messages_client.messages.create(messages=ask, **kw)
    assert [b.type for b in m.content][:1] == ["thinking"], m.content
    think = m.content[0]
    assert think.signature == bedrock_mock.reasoning_signature(think.thinking)
    results = [{"type": "tool_result", "tool_use_id": b.id, "content": "18C"} for b in m.content if b.type == "tool_use"]
    assert results
    history = ask + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
                     {"role": "user", "content": results}]
    r = messages_client.messages.with_raw_response.create(messages=history, **kw)
    assert r.parse().content[-1].type == "text"
    assert "thinking" not in dropped(r.headers), dict(r.headers)
    body = sent(native, "bedrock")
    assert body["additionalModelRequestFields"]["thinking"]["type"] == "enabled"
    assert body["messages"][1]["content"][0] == {"reasoningContent": {"reasoningText": {
        "text": think.thinking, "signature": think.signature}}}
