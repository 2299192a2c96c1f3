"""Reasoning reaches every provider's own control (issue 15 item 1), driven by the official SDKs.

`reasoning_effort` from the `openai` SDK on every row of the shared provider table: each native
mock (tests/sdk/native/) checks its provider's documented shape — Anthropic's extended thinking
(`thinking: {type: enabled, budget_tokens}` with its rules: budget ≥ 1024 and < max_tokens,
temperature only 1, no forced tool), the same object in Bedrock Converse's
`additionalModelRequestFields`, Gemini's `generationConfig.thinkingConfig`, OpenAI's
`reasoning_effort`, OCI GENERIC's `reasoningEffort` — and answers with reasoning text and/or a
reasoning token count. Rows whose provider has no control name the parameter in
`x-switchyard-dropped-params`. One Messages-front-door test (the `anthropic` SDK) sends
`thinking` to a Gemini model.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from helpers import ALICE_KEY
from provider_table import NativeServer, ROWS, Row, dropped, ids, start_gateway

import bedrock as bedrock_mock  # noqa: E402  (tests/sdk/native: on sys.path via provider_table)
import gemini as gemini_mock  # noqa: E402
import oci as oci_mock  # noqa: E402
import openai_like  # noqa: E402
from common import Conversation, Turn, decide  # noqa: E402

# Extra rows for models that reason (the shared table's Gemini 2.0 and Llama models do not).
GEMINI_25 = Row("gemini-25", "vertex", "vertex", "gemini-2.5-flash")
GEMINI_3 = Row("gemini-3", "vertex", "vertex", "gemini-3-pro-preview")
OCI_GPT = Row("oci-gpt", "oci", "oci", "openai.gpt-oss-120b")
EXTRA_ROWS = [GEMINI_25, GEMINI_3, OCI_GPT]
EXTRA_MAPPINGS = [f'  {r.client_model}: {{providers: {{{r.provider}: {{model: "{r.model}"}}}}}}' for r in EXTRA_ROWS]

# Rows whose provider's answer carries Anthropic's thinking (Claude hosts; Converse for Claude).
CLAUDE = {"anthropic", "bedrock", "bedrock-invoke", "vertex-claude"}
PASSTHROUGH = {"openai", "azure"}  # OpenAI clients reach OpenAI and Azure nearly verbatim
NO_CONTROL = {"bedrock-llama", "vertex-gemini", "watsonx", "oci", "oci-cohere"}
assert CLAUDE | PASSTHROUGH | NO_CONTROL == {r.name for r in ROWS}
CLAUDE_ROWS = [r for r in ROWS if r.name in CLAUDE]
NO_CONTROL_ROWS = [r for r in ROWS if r.name in NO_CONTROL]
PASSTHROUGH_ROWS = [r for r in ROWS if r.name in PASSTHROUGH]

ASK = [{"role": "user", "content": "Hello there"}]
LOW_BUDGET = 1024  # the gateway's budget for `low` (Anthropic's minimum)
DEFAULT_MAX_TOKENS = 4096  # what the gateway sends Anthropic when the client sets no limit
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "reasoning", EXTRA_MAPPINGS)
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


def sent(native: NativeServer, row: Row) -> dict:
    req, _ = native.last(row.prefix)
    return req.json()


def reasoning_content(message) -> str | None:
    return (message.model_extra or {}).get("reasoning_content")


def want():
    return decide(Conversation(None, [Turn("user", "Hello there")]))


# --------------------------------------------------------------------------------- every row


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_claude_rows_think(client, native, row):
    r = client.chat.completions.with_raw_response.create(model=row.client_model, messages=ASK, reasoning_effort="low")
    c = r.parse()
    msg = c.choices[0].message
    assert msg.content == want().text
    assert reasoning_content(msg), msg
    assert "reasoning_effort" not in dropped(r.headers)
    body = sent(native, row)
    thinking = {"type": "enabled", "budget_tokens": LOW_BUDGET}
    if row.name == "bedrock":  # Converse: Claude's fields ride in additionalModelRequestFields
        assert body["additionalModelRequestFields"] == {"thinking": thinking}
        assert body["inferenceConfig"]["maxTokens"] == LOW_BUDGET + DEFAULT_MAX_TOKENS
    else:
        assert body["thinking"] == thinking
        assert body["max_tokens"] == LOW_BUDGET + DEFAULT_MAX_TOKENS
    # Streamed: reasoning deltas before the text.
    stream = client.chat.completions.create(model=row.client_model, messages=ASK, reasoning_effort="low",
                                            stream=True, stream_options={"include_usage": True})
    reasoning, text = "", ""
    for chunk in stream:
        for ch in chunk.choices:
            reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
            assert not (text and (ch.delta.model_extra or {}).get("reasoning_content")), "reasoning after text"
            text += ch.delta.content or ""
    assert reasoning == reasoning_content(msg) and text == want().text


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_claude_thinking_rules(client, native, row):
    # Sampling Anthropic refuses with thinking is dropped and named; the caller's limit is kept
    # on top of the budget; temperature 1 is allowed.
    r = client.chat.completions.with_raw_response.create(
        model=row.client_model, messages=ASK, reasoning_effort="medium", max_tokens=200, temperature=0.3, top_p=0.9)
    assert r.parse().choices[0].message.content == want().text
    assert {"temperature", "top_p"} <= set(dropped(r.headers)), dict(r.headers)
    body = sent(native, row)
    if row.name == "bedrock":
        assert body["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 4096
        assert body["inferenceConfig"] == {"maxTokens": 4296}
    else:
        assert body["thinking"]["budget_tokens"] == 4096 and body["max_tokens"] == 4296
        assert "temperature" not in body and "top_p" not in body
    r = client.chat.completions.with_raw_response.create(
        model=row.client_model, messages=ASK, reasoning_effort="high", temperature=1)
    assert "temperature" not in dropped(r.headers)
    # A forced tool cannot be combined with thinking: a 400 naming tool_choice.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=ASK, reasoning_effort="low",
                                       tools=[WEATHER_TOOL], tool_choice="required")
    assert e.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_claude_tool_loop_with_reasoning(client, native, row):
    # The first request thinks and calls the tool; a continuation that brings back only
    # `reasoning_content` (not the signed `thinking_blocks`: test_thinking_tool_loops.py) cannot
    # give Claude its thinking block, so it goes without thinking and names the parameter (the
    # Claude mocks refuse a thinking request whose tool-use turn lacks its thinking block).
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    c = client.chat.completions.create(model=row.client_model, messages=ask, tools=[tool], reasoning_effort="low")
    msg = c.choices[0].message
    assert msg.tool_calls and reasoning_content(msg)
    history = ask + [msg.model_dump(exclude_none=True, exclude={"reasoning_content", "thinking_blocks"})] + [
        {"role": "tool", "tool_call_id": call.id, "content": "18C"} for call in msg.tool_calls]
    r = client.chat.completions.with_raw_response.create(model=row.client_model, messages=history, tools=[tool],
                                                         reasoning_effort="low")
    assert r.parse().choices[0].message.content
    assert "reasoning_effort" in dropped(r.headers), dict(r.headers)
    body = sent(native, row)
    assert "thinking" not in body and "additionalModelRequestFields" not in body


@pytest.mark.parametrize("row", PASSTHROUGH_ROWS, ids=ids(PASSTHROUGH_ROWS))
def test_openai_rows_pass_the_effort_and_report_reasoning_tokens(client, native, row):
    r = client.chat.completions.with_raw_response.create(model=row.client_model, messages=ASK, reasoning_effort="low")
    c = r.parse()
    assert sent(native, row)["reasoning_effort"] == "low"
    assert c.usage.completion_tokens_details.reasoning_tokens == openai_like.REASONING_TOKENS
    assert "reasoning_effort" not in dropped(r.headers)


@pytest.mark.parametrize("row", NO_CONTROL_ROWS, ids=ids(NO_CONTROL_ROWS))
def test_rows_without_a_control_name_it_as_dropped(client, native, row):
    r = client.chat.completions.with_raw_response.create(model=row.client_model, messages=ASK, reasoning_effort="low")
    c = r.parse()
    assert c.choices[0].message.content == want().text
    assert reasoning_content(c.choices[0].message) is None
    assert "reasoning_effort" in dropped(r.headers), dict(r.headers)
    body = sent(native, row)
    flat = str(body)
    for native_name in ("thinking", "thinkingConfig", "reasoningEffort", "reasoning_effort"):
        assert native_name not in flat, (native_name, body)


@pytest.mark.parametrize("row", ROWS + EXTRA_ROWS, ids=ids(ROWS + EXTRA_ROWS))
def test_unknown_effort_is_a_400_naming_it(client, row):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=ASK, reasoning_effort="extreme")
    assert e.value.body["param"] == "reasoning_effort"


# ------------------------------------------------------------------------------ reasoning models


def test_gemini_25_gets_a_thinking_budget_and_returns_thoughts(client, native):
    r = client.chat.completions.with_raw_response.create(model=GEMINI_25.client_model, messages=ASK,
                                                         reasoning_effort="low")
    c = r.parse()
    gen = sent(native, GEMINI_25)["generationConfig"]
    assert gen["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": LOW_BUDGET}
    assert reasoning_content(c.choices[0].message) == gemini_mock.THOUGHT_TEXT
    assert c.choices[0].message.content == want().text
    assert c.usage.completion_tokens_details.reasoning_tokens == gemini_mock.THOUGHT_TOKENS
    assert c.usage.completion_tokens == want().completion_tokens + gemini_mock.THOUGHT_TOKENS
    assert not dropped(r.headers)
    # Streamed, with the usage chunk rendering reasoning tokens as OpenAI does.
    stream = client.chat.completions.create(model=GEMINI_25.client_model, messages=ASK, reasoning_effort="high",
                                            stream=True, stream_options={"include_usage": True})
    reasoning, usage = "", None
    for chunk in stream:
        for ch in chunk.choices:
            reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
        usage = chunk.usage or usage
    assert reasoning == gemini_mock.THOUGHT_TEXT
    assert usage.completion_tokens_details.reasoning_tokens == gemini_mock.THOUGHT_TOKENS
    assert sent(native, GEMINI_25)["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 16384


def test_gemini_3_gets_a_thinking_level(client, native):
    for effort, level in (("minimal", "LOW"), ("medium", "HIGH")):  # Gemini 3 Pro: LOW and HIGH only
        c = client.chat.completions.create(model=GEMINI_3.client_model, messages=ASK, reasoning_effort=effort)
        assert sent(native, GEMINI_3)["generationConfig"]["thinkingConfig"] == {
            "includeThoughts": True, "thinkingLevel": level}
        assert reasoning_content(c.choices[0].message) == gemini_mock.THOUGHT_TEXT


def test_oci_reasoning_model_gets_reasoning_effort(client, native):
    r = client.chat.completions.with_raw_response.create(model=OCI_GPT.client_model, messages=ASK,
                                                         reasoning_effort="low")
    c = r.parse()
    assert sent(native, OCI_GPT)["chatRequest"]["reasoningEffort"] == "LOW"
    assert reasoning_content(c.choices[0].message) == oci_mock.REASONING_TEXT
    assert c.usage.completion_tokens_details.reasoning_tokens == oci_mock.REASONING_TOKENS
    assert not dropped(r.headers)


def test_converse_reasoning_text(client):
    c = client.chat.completions.create(model="conf-bedrock", messages=ASK, reasoning_effort="low")
    assert reasoning_content(c.choices[0].message) == bedrock_mock.REASONING_TEXT


# ------------------------------------------------------------------------- Messages front door


def test_messages_thinking_reaches_gemini_thinking_config(messages_client, native):
    r = messages_client.messages.with_raw_response.create(
        model=GEMINI_25.client_model, max_tokens=256, thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Hello there"}])
    m = r.parse()
    assert sent(native, GEMINI_25)["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": True, "thinkingBudget": 2048}
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == gemini_mock.THOUGHT_TEXT
    assert m.content[1].text == want().text
    assert "thinking" not in dropped(r.headers)
    # `disabled` asks for nothing.
    messages_client.messages.create(model=GEMINI_25.client_model, max_tokens=256, thinking={"type": "disabled"},
                                    messages=[{"role": "user", "content": "Hello there"}])
    assert "thinkingConfig" not in sent(native, GEMINI_25).get("generationConfig", {})
