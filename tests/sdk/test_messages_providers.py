"""The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) on every
provider, driven by the official `anthropic` SDK.

The same conformance table as test_unified_providers.py (provider_table.ROWS): each row is a
provider API behind the gateway, served by a native mock (tests/sdk/native/) that checks its own
documented wire format and answers from one behaviour contract (native/common.py `decide()`),
so the expected answers are computed here with `decide()` too. Claude hosts (CLAUDE rows) get
the caller's Messages body nearly unchanged and answer extended thinking and token counts
themselves; the other rows get a translation that names what it cannot carry in
`x-switchyard-dropped-params`.
"""

from __future__ import annotations

import base64
import copy
import json

import anthropic
import httpx
import pytest

from helpers import ALICE_KEY
from provider_table import NativeServer, ROWS, Row, dropped, fail_model, ids, start_gateway

from anthropic_messages import thinking_signature  # noqa: E402  (tests/sdk/native: on sys.path via provider_table)
from common import Conversation, Turn, decide  # noqa: E402

# Claude hosts: the Messages body goes through (Bedrock `anthropic.` models via InvokeModel).
CLAUDE = {"anthropic", "bedrock", "bedrock-invoke", "vertex-claude"}
CLAUDE_ROWS = [r for r in ROWS if r.name in CLAUDE]
OTHER_ROWS = [r for r in ROWS if r.name not in CLAUDE]
# Providers that say which stop sequence ended the text (Anthropic's stop_sequence), or at least
# that one did (Bedrock Converse's stopReason "stop_sequence").
STOP_NAMED = CLAUDE
STOP_REPORTED = CLAUDE | {"bedrock-llama"}

FAILURES = {400: anthropic.BadRequestError, 404: anthropic.NotFoundError, 429: anthropic.RateLimitError,
            503: anthropic.InternalServerError}
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}

OVERLOADED_MODEL = "claude-overloaded-20250101"
FALLBACK_BEDROCK = "anthropic.claude-3-haiku-20240307-v1:0"
EXTRA_MAPPINGS = [
    f'  conf-overloaded: {{providers: {{anthropic: {{model: "{OVERLOADED_MODEL}"}}}}}}',
    '  conf-anthropic-fail-529: {providers: {anthropic: {model: "claude-3-5-haiku-20241022-fail-529"}}}',
    # Anthropic first (overloaded), then Claude on Bedrock.
    f'  conf-fallback: {{default_provider: anthropic, providers: {{anthropic: {{model: "{OVERLOADED_MODEL}"}}, '
    f'bedrock: {{model: "{FALLBACK_BEDROCK}"}}}}}}',
]
ROUTING = "routing:\n  fallback: {enabled: true}\n"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "messages-providers", EXTRA_MAPPINGS, ROUTING)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = anthropic.Anthropic(api_key=ALICE_KEY, base_url=gw.url, max_retries=0, timeout=20)
    yield c
    c.close()


def expected(system: str | None, turns: list[Turn], **kw):
    return decide(Conversation(system, turns, **kw))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def blocks(message) -> list[dict]:
    """The answer's content as request blocks (what a client sends back on the next turn)."""
    return [b.to_dict() for b in message.content]


def recorded_body(native: NativeServer, row: Row) -> dict:
    """The JSON body the row's mock last received (Bedrock CountTokens: the inner InvokeModel body)."""
    req, _ = native.last(row.prefix)
    body = req.json()
    if "input" in body and "invokeModel" in body.get("input", {}):
        body = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))
    return body


def assert_anthropic_error(e, status: int, error_type: str | None):
    assert e.status_code == status, (status, e.body)
    assert isinstance(e.body, dict) and e.body.get("type") == "error", e.body
    err = e.body.get("error")
    assert isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"], e.body
    if error_type:
        assert err.get("type") == error_type, e.body
    else:
        assert isinstance(err.get("type"), str) and err["type"], e.body
    assert e.response.headers.get("request-id"), dict(e.response.headers)


# --------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_create(client, native, row):
    r = client.messages.with_raw_response.create(
        model=row.client_model, max_tokens=256, system="Be brief.", messages=[user("Hello there")])
    m = r.parse()
    want = expected("Be brief.", [Turn("user", "Hello there")])
    assert m.type == "message" and m.role == "assistant" and m.id
    assert m.model == row.client_model
    assert [(b.type, b.text) for b in m.content] == [("text", want.text)]
    assert (m.stop_reason, m.stop_sequence) == ("end_turn", None)
    assert (m.usage.input_tokens, m.usage.output_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert r.headers["x-switchyard-provider"] == row.provider
    assert r.headers.get("request-id")
    req, _ = native.last(row.prefix)
    assert ALICE_KEY not in json.dumps(req.headers) and ALICE_KEY.encode() not in req.body
    if row.name in CLAUDE:
        body = req.json()
        # The host's own spelling of the model (Anthropic: in the body; Bedrock, Vertex: in the URL).
        assert body.get("model") == (row.model if row.provider == "anthropic" else None), body


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_multi_turn(client, row):
    m = client.messages.create(model=row.client_model, max_tokens=256, messages=[
        user("First question"),
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": [{"type": "text", "text": "Second question"}]},
    ])
    want = expected(None, [Turn("user", "First question"), Turn("assistant", "First answer"),
                           Turn("user", "Second question")])
    assert m.content[0].text == want.text
    assert m.usage.input_tokens == want.prompt_tokens


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_stream_final_message_equals_create(client, row):
    kw = dict(model=row.client_model, max_tokens=256, system="Be brief.",
              messages=[user("Stream these five words please")])
    created = client.messages.create(**kw)
    with client.messages.stream(**kw) as s:
        kinds = [ev.type for ev in s if ev.type in (
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop")]
        final = s.get_final_message()
        headers = s.response.headers
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert kinds.count("content_block_delta") > 1, "the text is streamed in pieces"
    assert headers["content-type"].startswith("text/event-stream")
    assert final.model == row.client_model
    assert final.to_dict(exclude_none=True)["content"] == created.to_dict(exclude_none=True)["content"]
    assert (final.stop_reason, final.stop_sequence) == (created.stop_reason, created.stop_sequence) == ("end_turn", None)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (created.usage.input_tokens, created.usage.output_tokens)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_system_as_blocks(client, row):
    m = client.messages.create(model=row.client_model, max_tokens=256, messages=[user("Hi")], system=[
        {"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer plainly."}])
    want = expected("Be brief. Answer plainly.", [Turn("user", "Hi")])
    # How the blocks are joined (space, newlines) is the translation's choice; the words are not.
    assert m.content[0].text.split() == want.text.split()
    assert m.usage.input_tokens == want.prompt_tokens


IMAGE_ROWS = [r for r in ROWS if r.images]
NO_IMAGE_ROWS = [r for r in ROWS if not r.images]


def _image_message() -> dict:
    return {"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}]}


@pytest.mark.parametrize("row", IMAGE_ROWS, ids=ids(IMAGE_ROWS))
def test_base64_image(client, row):
    m = client.messages.create(model=row.client_model, max_tokens=256, messages=[_image_message()])
    assert m.content[0].text == "Echo: Describe [image]"


@pytest.mark.parametrize("row", NO_IMAGE_ROWS, ids=ids(NO_IMAGE_ROWS))
def test_image_where_unsupported_is_a_clear_400(client, row):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=row.client_model, max_tokens=256, messages=[_image_message()])
    assert_anthropic_error(e.value, 400, "invalid_request_error")


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_stop_sequences(client, row):
    kw = dict(model=row.client_model, max_tokens=256, stop_sequences=[" three", "never"],
              messages=[user("Count one two three four")])
    m = client.messages.create(**kw)
    with client.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert m.content[0].text == final.content[0].text == "Echo: Count one two"
    if row.name in STOP_NAMED:
        assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", " three")
    elif row.name in STOP_REPORTED:  # Converse says a stop sequence ended the text, not which
        assert m.stop_reason == "stop_sequence" and m.stop_sequence in (None, " three"), m
    else:  # OpenAI-style "stop" cannot tell a stop sequence from the end of the turn
        assert (m.stop_reason, m.stop_sequence) == ("end_turn", None)
    assert (final.stop_reason, final.stop_sequence) == (m.stop_reason, m.stop_sequence)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_max_tokens_cut_off(client, row):
    m = client.messages.create(model=row.client_model, max_tokens=2, messages=[user("Tell me a long story")])
    assert m.content[0].text == "Echo: Tell"
    assert m.stop_reason == "max_tokens"
    with client.messages.stream(model=row.client_model, max_tokens=2, messages=[user("Tell me a long story")]) as s:
        final = s.get_final_message()
    assert (final.content[0].text, final.stop_reason) == ("Echo: Tell", "max_tokens")


# -------------------------------------------------------------------------------------------- tools

ASK_WEATHER = [user("What is the weather in Paris and London?")]


def _tool_results(m) -> list[dict]:
    uses = [b for b in m.content if b.type == "tool_use"]
    return [
        {"role": "assistant", "content": blocks(m)},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"},
            {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "12C"}]}]},
    ]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_parallel_tool_use_and_results(client, row):
    m = client.messages.create(model=row.client_model, max_tokens=512, tools=[WEATHER_TOOL], messages=ASK_WEATHER)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use"
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
    assert len({u.id for u in uses}) == 2 and all(u.id for u in uses)
    m2 = client.messages.create(model=row.client_model, max_tokens=512, tools=[WEATHER_TOOL],
                                messages=ASK_WEATHER + _tool_results(m))
    assert [(b.type, b.text) for b in m2.content] == [("text", "Tool results: 18C; 12C")]
    assert m2.stop_reason == "end_turn"


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_streamed_tool_use_reassembles(client, row):
    with client.messages.stream(model=row.client_model, max_tokens=512, tools=[WEATHER_TOOL], messages=ASK_WEATHER) as s:
        deltas = [ev for ev in s if ev.type == "content_block_delta"]
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
    assert any(d.delta.type == "input_json_delta" for d in deltas)
    m2 = client.messages.create(model=row.client_model, max_tokens=512, tools=[WEATHER_TOOL],
                                messages=ASK_WEATHER + _tool_results(final))
    assert m2.content[0].text == "Tool results: 18C; 12C"


# ----------------------------------------------------------------------------------------- thinking


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_thinking_round_trip_on_claude_hosts(client, native, row):
    ask = [user("What is the weather in Paris?")]
    kw = dict(model=row.client_model, max_tokens=2048, thinking=THINKING, tools=[WEATHER_TOOL])
    m = client.messages.create(messages=ask, **kw)
    assert [b.type for b in m.content] == ["thinking", "tool_use"]
    think = m.content[0]
    assert think.thinking and think.signature == thinking_signature(think.thinking)
    assert recorded_body(native, row)["thinking"] == THINKING
    # Streamed: thinking_delta and signature_delta rebuild the same block.
    with client.messages.stream(messages=ask, **kw) as s:
        delta_types = {ev.delta.type for ev in s if ev.type == "content_block_delta"}
        final = s.get_final_message()
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= delta_types
    assert blocks(final)[0] == blocks(m)[0]
    # The next turn carries the thinking block back; the host checks its signature.
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": m.content[1].id, "content": "18C"}]}
    m2 = client.messages.create(messages=ask + [{"role": "assistant", "content": blocks(m)}, result], **kw)
    assert [b.type for b in m2.content] == ["thinking", "text"]
    assert m2.content[1].text == "Tool results: 18C"
    sent = recorded_body(native, row)["messages"][1]["content"][0]
    assert sent == {"type": "thinking", "thinking": think.thinking, "signature": think.signature}
    # A tampered thinking block is the host's 400, relayed as such.
    tampered = blocks(m)
    tampered[0]["thinking"] += " (edited)"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(messages=ask + [{"role": "assistant", "content": tampered}, result], **kw)
    assert_anthropic_error(e.value, 400, "invalid_request_error")


@pytest.mark.parametrize("row", OTHER_ROWS, ids=ids(OTHER_ROWS))
def test_thinking_elsewhere_is_mapped_or_dropped_and_named(client, native, row):
    r = client.messages.with_raw_response.create(
        model=row.client_model, max_tokens=2048, thinking=THINKING, messages=[user("Hello there")])
    m = r.parse()
    assert [(b.type, b.text) for b in m.content] == [("text", "Echo: Hello there")]
    if row.name in ("openai", "azure"):
        # OpenAI's control: the effort nearest the budget (test_reasoning.py covers the others).
        assert recorded_body(native, row)["reasoning_effort"] == "low"
        assert "thinking" not in dropped(r.headers), dict(r.headers)
    else:  # the shared table's Gemini 2.0, Llama, Granite and Cohere models do not think
        assert "thinking" in dropped(r.headers), dict(r.headers)
    # An earlier turn's thinking block (from a Claude host) cannot be carried either.
    sig = thinking_signature("Earlier thoughts.")
    r = client.messages.with_raw_response.create(model=row.client_model, max_tokens=256, messages=[
        user("First question"),
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Earlier thoughts.", "signature": sig},
                                          {"type": "text", "text": "First answer"}]},
        user("Second question")])
    assert r.parse().content[0].text == "Echo: Second question"
    assert "thinking" in dropped(r.headers), dict(r.headers)


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_claude_only_fields_reach_claude_hosts(client, native, row):
    r = client.messages.with_raw_response.create(
        model=row.client_model, max_tokens=256, messages=[user("Hi")], metadata={"user_id": "u-42"},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        extra_body={"top_k": 5})
    assert r.parse().content[0].text == "Echo: Hi [system: Be brief.]"
    assert not dropped(r.headers), dict(r.headers)
    body = recorded_body(native, row)
    assert body["top_k"] == 5 and body["metadata"] == {"user_id": "u-42"}
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]


@pytest.mark.parametrize("row", OTHER_ROWS, ids=ids(OTHER_ROWS))
def test_cache_control_elsewhere(client, row):
    """OpenAI, Azure and Gemini cache prompt prefixes on their own: nothing is sent and nothing
    named; hosts without a prompt cache (Llama on Converse, watsonx, OCI) name it.
    (test_prompt_caching.py covers the hosts that take the markers.)"""
    r = client.messages.with_raw_response.create(
        model=row.client_model, max_tokens=256, messages=[user("Hi")],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}])
    assert r.parse().content[0].text == "Echo: Hi [system: Be brief.]"
    automatic = row.name in ("openai", "azure", "vertex-gemini")
    assert ("cache_control" in dropped(r.headers)) != automatic, dict(r.headers)


# ------------------------------------------------------------------------------------- count_tokens


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_count_tokens(client, native, row):
    messages = [user("How many tokens are in this request?")]
    r = client.messages.with_raw_response.count_tokens(
        model=row.client_model, system="Be brief.", messages=messages, tools=[WEATHER_TOOL])
    n = r.parse().input_tokens
    assert isinstance(n, int) and n > 0
    if row.name in CLAUDE:
        assert r.headers.get("x-switchyard-token-count") == "provider", dict(r.headers)
        assert n == expected("Be brief.", [Turn("user", messages[0]["content"])]).prompt_tokens
        body = recorded_body(native, row)
        assert body["messages"] == messages and body["tools"] == [WEATHER_TOOL]
    else:
        assert r.headers.get("x-switchyard-token-count") == "estimated", dict(r.headers)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_provider_errors_are_typed(client, row):
    for status, exc in FAILURES.items():
        with pytest.raises(exc) as e:
            client.messages.create(model=f"{row.client_model}-fail-{status}", max_tokens=16, messages=[user("x")])
        assert_anthropic_error(e.value, status, ERROR_TYPES.get(status))
        if status == 429:
            assert e.value.response.headers.get("retry-after") == "3"


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=16, messages=[user("x")])
    assert_anthropic_error(e.value, 404, "not_found_error")


def test_bad_key_is_authentication_error(gw):
    with anthropic.Anthropic(api_key="sk-gw-wrong-key", base_url=gw.url, max_retries=0, timeout=20) as c:
        with pytest.raises(anthropic.AuthenticationError) as e:
            c.messages.create(model="conf-anthropic", max_tokens=16, messages=[user("x")])
    assert_anthropic_error(e.value, 401, "authentication_error")


def test_key_in_x_api_key_header(gw):
    """The anthropic SDK 2.x sends `api_key` as `Authorization: Bearer`; Anthropic's documented
    header (and what older SDKs and curl examples send) is `x-api-key`: both are the gateway key."""
    with anthropic.Anthropic(api_key=None, base_url=gw.url, max_retries=0, timeout=20,
                             default_headers={"x-api-key": ALICE_KEY}) as c:
        r = c.messages.with_raw_response.create(model="conf-openai", max_tokens=16, messages=[user("Hello there")])
    assert "authorization" not in {k.lower() for k in r.http_request.headers}
    assert r.parse().content[0].text == "Echo: Hello there"
    r = httpx.post(gw.url + "/v1/messages", timeout=20,
                   headers={"x-api-key": "sk-gw-wrong-key", "anthropic-version": "2023-06-01"},
                   json={"model": "conf-openai", "max_tokens": 16, "messages": [user("x")]})
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error", r.text


def test_anthropic_overloaded_is_529(client):
    for model in ("conf-overloaded", "conf-anthropic-fail-529"):
        with pytest.raises(anthropic.OverloadedError) as e:
            client.messages.create(model=model, max_tokens=16, messages=[user("x")])
        assert_anthropic_error(e.value, 529, "overloaded_error")


def test_missing_max_tokens_is_a_400(gw):
    r = httpx.post(gw.url + "/v1/messages", timeout=20, headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "conf-openai", "messages": [user("x")]})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error", r.text


def test_fallback_from_overloaded_anthropic_to_bedrock(client, native):
    before = len(native.records)
    r = client.messages.with_raw_response.create(model="conf-fallback", max_tokens=256, messages=[user("Hello there")])
    m = r.parse()
    assert m.content[0].text == expected(None, [Turn("user", "Hello there")]).text
    assert m.model == "conf-fallback"
    assert r.headers["x-switchyard-provider"] == "bedrock"
    tried = [(p, req.path) for p, req, _ in native.records[before:]]
    assert tried[0][0] == "anthropic" and tried[-1][0] == "bedrock", tried
    assert tried[-1][1].endswith("/invoke"), tried


# ------------------------------------------------------------------------------ coding-agent request


def _schema(depth: int, k: int) -> dict:
    """A nested JSON schema: objects in arrays in objects, enums, anyOf, descriptions."""
    leaf = {"type": "string", "description": f"leaf {k}", "enum": ["a", "b", f"c{k}"]}
    node: dict = leaf
    for d in range(depth):
        node = {"type": "object", "properties": {
            f"field_{d}": node,
            f"list_{d}": {"type": "array", "items": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}},
            "flag": {"type": "boolean", "default": False},
        }, "required": [f"field_{d}"], "additionalProperties": False}
    return node


def _coding_agent_request(row: Row) -> dict:
    system = [
        {"type": "text", "text": "You are a coding agent working in a repository."},
        {"type": "text", "text": "Rules:\n" + "\n".join(f"- rule {i}: keep the diff small, run the tests, explain {i}."
                                                         for i in range(400)),
         "cache_control": {"type": "ephemeral"}},
    ]
    tools = [{"name": f"tool_{i:02d}", "description": f"Tool number {i} for files, shells and searches.",
              "input_schema": _schema(1 + i % 4, i)} for i in range(32)]
    tools[-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    earlier = "I should read the file first."
    messages = [
        user("Read src/main.rs please"),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": earlier, "signature": thinking_signature(earlier)},
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": "toolu_01A", "name": "tool_03",
             "input": {"field_2": {"field_1": {"field_0": "a"}}, "flag": True}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A",
             "content": [{"type": "text", "text": "fn main() { println!(\"hi\"); }"}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Now explain it"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It prints hi."}]},
        {"role": "user", "content": [{"type": "text", "text": "Thanks, now refactor it",
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    return dict(model=row.client_model, max_tokens=8192, system=system, tools=tools, messages=messages,
                thinking={"type": "enabled", "budget_tokens": 4096}, metadata={"user_id": "user-7f3a"},
                tool_choice={"type": "auto"}, output_config={"effort": "high"})


@pytest.mark.parametrize("row", CLAUDE_ROWS, ids=ids(CLAUDE_ROWS))
def test_coding_agent_request_reaches_claude_hosts_intact(client, native, row):
    sent = _coding_agent_request(row)
    with client.messages.stream(**copy.deepcopy(sent)) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == thinking_signature(final.content[0].thinking)
    assert final.content[1].text == "Echo: Thanks, now refactor it [system: " + " ".join(
        b["text"] for b in sent["system"]) + "]"
    got = recorded_body(native, row)
    host_only = {"model", "stream", "anthropic_version"}
    assert {k: v for k, v in got.items() if k not in host_only} == {k: v for k, v in sent.items() if k not in host_only}
    assert got.get("stream", True) is True  # Anthropic and Vertex: in the body; Bedrock: by the operation


def test_streamed_fallback_from_overloaded_anthropic_to_bedrock(client, native):
    before = len(native.records)
    with client.messages.stream(model="conf-fallback", max_tokens=256, messages=[user("Hello there")]) as s:
        final = s.get_final_message()
        provider = s.response.headers["x-switchyard-provider"]
    assert final.content[0].text == "Echo: Hello there" and final.model == "conf-fallback"
    assert provider == "bedrock"
    tried = [(p, req.path) for p, req, _ in native.records[before:]]
    assert tried[0][0] == "anthropic" and tried[-1][1].endswith("/invoke-with-response-stream"), tried
