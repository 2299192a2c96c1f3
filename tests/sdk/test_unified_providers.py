"""The OpenAI-compatible API on every provider, driven by the official `openai` SDK.

One conformance table: each row is a provider API behind the gateway (OpenAI, Azure OpenAI,
Anthropic, Bedrock Converse, Bedrock InvokeModel for Claude, Vertex Gemini, Claude on Vertex,
watsonx.ai, OCI GENERIC and COHERE). Every provider is a native mock (tests/sdk/native/) that
checks its own documented wire format and answers from the same behaviour contract
(native/common.py), so the SDK-visible result must be identical for every row; the expected
values come from `common.decide()`.
"""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from helpers import ALICE_KEY
from provider_table import EMB_DIMS, EMBEDDING_ROWS, ROWS, start_gateway

from common import Conversation, Turn, decide, embed  # noqa: E402  (tests/sdk/native: on sys.path via provider_table)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
         "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "unified-providers")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


def expected(system: str | None, turns: list[Turn], **kw):
    return decide(Conversation(system, turns, **kw))


def ids(rows):
    return [r.name for r in rows]


# --------------------------------------------------------------------------- chat


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_chat(client, native, row):
    r = client.chat.completions.with_raw_response.create(
        model=row.client_model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
    )
    c = r.parse()
    want = expected("Be brief.", [Turn("user", "Hello there")])
    assert c.model == row.client_model
    assert c.object == "chat.completion" and c.id
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == want.text
    assert c.choices[0].finish_reason == "stop"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert c.usage.total_tokens == want.prompt_tokens + want.completion_tokens
    assert r.headers["x-switchyard-provider"] == row.provider
    req, _ = native.last(row.prefix)
    assert ALICE_KEY not in json.dumps(req.headers) and ALICE_KEY.encode() not in req.body


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_multi_turn_and_developer_message(client, row):
    c = client.chat.completions.create(
        model=row.client_model,
        messages=[
            {"role": "developer", "content": "Answer plainly."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": [{"type": "text", "text": "Second question"}]},
        ],
    )
    want = expected("Answer plainly.", [Turn("user", "First question"), Turn("assistant", "First answer"),
                                         Turn("user", "Second question")])
    assert c.choices[0].message.content == want.text
    assert c.usage.prompt_tokens == want.prompt_tokens


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_stream_with_usage(client, row):
    stream = client.chat.completions.create(
        model=row.client_model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream these five words please"}],
    )
    text, finish, usage, models = "", None, None, set()
    for chunk in stream:
        models.add(chunk.model)
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    want = expected(None, [Turn("user", "Stream these five words please")])
    assert text == want.text
    assert finish == "stop"
    assert models == {row.client_model}
    assert usage is not None and usage.completion_tokens == want.completion_tokens


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_stream_without_usage_has_no_usage_chunk(client, row):
    chunks = list(client.chat.completions.create(
        model=row.client_model, stream=True, messages=[{"role": "user", "content": "Hi"}]))
    assert all(c.usage is None for c in chunks)
    assert chunks and all(c.choices for c in chunks)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_max_tokens_gives_length(client, row):
    c = client.chat.completions.create(model=row.client_model, max_tokens=2,
                                       messages=[{"role": "user", "content": "Tell me a long story"}])
    assert c.choices[0].message.content == "Echo: Tell"
    assert c.choices[0].finish_reason == "length"


@pytest.mark.parametrize("row", [r for r in ROWS if r.images], ids=ids([r for r in ROWS if r.images]))
def test_image_data_url(client, row):
    c = client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert c.choices[0].message.content == "Echo: Describe [image]"


@pytest.mark.parametrize("row", [r for r in ROWS if not r.images or not r.image_urls],
                         ids=ids([r for r in ROWS if not r.images or not r.image_urls]))
def test_unsupported_image_is_a_clear_400(client, row):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert e.value.body["param"].startswith("messages[0].content[1]")


# --------------------------------------------------------------------------- tools


def _tool_turns():
    return [{"role": "user", "content": "What is the weather in Paris and London?"}]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_parallel_tool_calls_and_results(client, row):
    c = client.chat.completions.create(model=row.client_model, messages=_tool_turns(), tools=[WEATHER_TOOL])
    msg = c.choices[0].message
    assert c.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
    assert len({t.id for t in msg.tool_calls}) == 2
    history = _tool_turns() + [
        {"role": "assistant", "content": None, "tool_calls": [t.model_dump() for t in msg.tool_calls]},
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18C"},
        {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "12C"},
    ]
    c2 = client.chat.completions.create(model=row.client_model, messages=history, tools=[WEATHER_TOOL])
    assert c2.choices[0].message.content == "Tool results: 18C; 12C"
    assert c2.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_streamed_tool_calls_reassemble(client, row):
    with client.chat.completions.stream(model=row.client_model, messages=_tool_turns(), tools=[WEATHER_TOOL]) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_named_tool_choice(client, row):
    r = client.chat.completions.with_raw_response.create(
        model=row.client_model, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Anything"}])
    c = r.parse()
    if row.name == "oci-cohere":
        # OCI's COHERE format cannot force a tool: the choice is left out and said so.
        assert "tool_choice" in r.headers["x-switchyard-dropped-params"].split(",")
        assert c.choices[0].message.content == "Echo: Anything"
    else:
        assert [t.function.name for t in c.choices[0].message.tool_calls] == ["get_weather"]


# --------------------------------------------------------------------------- legacy completions


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_legacy_completions(client, row):
    c = client.completions.create(model=row.client_model, prompt="Say this is a test", max_tokens=50)
    assert c.object == "text_completion" and c.model == row.client_model
    assert c.choices[0].text == "Echo: Say this is a test"
    assert c.choices[0].finish_reason == "stop"
    text = "".join(ch.choices[0].text for ch in client.completions.create(
        model=row.client_model, prompt="Say this is a test", max_tokens=3, stream=True) if ch.choices)
    assert text == "Echo: Say this"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_typed_errors(client, row):
    expected_exc = {400: openai.BadRequestError, 404: openai.NotFoundError, 429: openai.RateLimitError,
                    503: openai.InternalServerError}
    for status, exc in expected_exc.items():
        with pytest.raises(exc) as e:
            client.chat.completions.create(model=f"{row.client_model}-fail-{status}",
                                           messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == status, (status, e.value.body)
        assert isinstance(e.value.body, dict) and e.value.body.get("message"), e.value.body
        if status == 429:
            assert e.value.response.headers.get("retry-after") == "3"


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_error_mid_stream_raises(client, row):
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=row.client_model, stream=True,
                                                messages=[{"role": "user", "content": "please explode mid-stream now"}]):
            pass


@pytest.mark.parametrize("row", [r for r in ROWS if r.provider not in ("openai", "azure")],
                         ids=ids([r for r in ROWS if r.provider not in ("openai", "azure")]))
def test_unknown_parameters_are_listed_as_dropped(client, row):
    r = client.chat.completions.with_raw_response.create(
        model=row.client_model, messages=[{"role": "user", "content": "Hi"}], logit_bias={"50256": -100})
    assert "logit_bias" in r.headers.get("x-switchyard-dropped-params", "").split(",")


SINGLE_CHOICE = [r for r in ROWS if r.provider in ("anthropic", "bedrock") or r.name in ("vertex-claude", "oci-cohere")]


@pytest.mark.parametrize("row", SINGLE_CHOICE, ids=ids(SINGLE_CHOICE))
def test_n_above_one_is_rejected_clearly(client, row):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, n=2, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["param"] == "n"


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("row", EMBEDDING_ROWS, ids=[r[0] for r in EMBEDDING_ROWS])
def test_embeddings_float_and_base64(client, row):
    name = f"emb-{row[0]}"
    texts = ["the quick brown fox", "jumps"]
    for fmt in ("float", "base64"):
        r = client.embeddings.create(model=name, input=texts, encoding_format=fmt)
        assert r.model == name and len(r.data) == 2
        for i, d in enumerate(r.data):
            assert d.index == i
            got = d.embedding
            if fmt == "base64":  # asked for explicitly: the SDK hands over the string as is
                raw = base64.b64decode(got)
                got = list(struct.unpack(f"<{len(raw) // 4}f", raw))
            assert got == pytest.approx(embed(texts[i], None), abs=1e-6)
    # the SDK's default: it asks for base64 and decodes it itself
    r = client.embeddings.create(model=name, input="single")
    assert r.data[0].embedding == pytest.approx(embed("single", None), abs=1e-6)
    assert r.usage.prompt_tokens >= 1


@pytest.mark.parametrize("row", EMBEDDING_ROWS, ids=[r[0] for r in EMBEDDING_ROWS])
def test_embeddings_dimensions(client, row):
    name, accepts = f"emb-{row[0]}", row[3]
    if accepts:
        r = client.embeddings.create(model=name, input="dims", dimensions=EMB_DIMS)
        assert len(r.data[0].embedding) == EMB_DIMS
    else:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model=name, input="dims", dimensions=EMB_DIMS)
        assert e.value.body["param"] == "dimensions"


def test_models_list_names_owners(client):
    owners = {m.id: m.owned_by for m in client.models.list()}
    for r in ROWS:
        assert owners[r.client_model] == r.provider
