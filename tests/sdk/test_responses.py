"""The OpenAI Responses API (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`,
`GET /v1/responses/{id}/input_items`) on every provider, driven by the official `openai` SDK and
the OpenAI Agents SDK.

The same conformance table as test_unified_providers.py (provider_table.ROWS): each row is a
provider API behind the gateway, served by a native mock (tests/sdk/native/) that checks its own
documented wire format and answers from one behaviour contract (native/common.py `decide()`), so
the expected answers are computed here with `decide()` too. OpenAI and Azure get the Responses
request natively (tests/sdk/native/openai_responses.py); every other row through the neutral
model. Conversation state (`previous_response_id`) is the gateway's: chains may cross providers.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from helpers import ALICE_KEY, BOB_KEY
from provider_table import NativeServer, ROWS, ids, start_gateway

from common import Conversation, Turn, decide  # noqa: E402  (tests/sdk/native, via provider_table)

NATIVE = {"openai", "azure"}

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "responses-providers")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


@pytest.fixture(scope="module")
def bob(gw):
    c = openai.OpenAI(api_key=BOB_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


def expected(system, turns, **kw):
    return decide(Conversation(system, turns, **kw))


def recorded(native: NativeServer, row) -> dict:
    req, _ = native.last(row.prefix)
    return req.json()


# ------------------------------------------------------------------------------------------- create


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_create_with_a_string_input(client, native, row):
    raw = client.responses.with_raw_response.create(model=row.client_model, input="Hello there")
    r = raw.parse()
    want = expected(None, [Turn("user", "Hello there")])
    assert r.object == "response" and r.status == "completed"
    assert r.id.startswith("resp_")
    assert r.model == row.client_model
    assert r.output_text == want.text
    assert [o.type for o in r.output] == ["message"]
    assert r.output[0].role == "assistant" and r.output[0].content[0].type == "output_text"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert r.usage.total_tokens == want.prompt_tokens + want.completion_tokens
    assert raw.headers["x-switchyard-provider"] == row.provider
    if row.name in NATIVE:
        body = recorded(native, row)
        assert body["input"] == "Hello there" and body["model"] == row.model


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_create_with_items_and_instructions(client, row):
    r = client.responses.create(
        model=row.client_model,
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Tell me more"}]},
        ],
        max_output_tokens=200,
    )
    want = expected("Be brief.", [Turn("user", "Hi"), Turn("assistant", "Hello!"), Turn("user", "Tell me more")])
    assert r.output_text == want.text
    assert r.instructions == "Be brief."
    assert r.max_output_tokens == 200


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_max_output_tokens_makes_an_incomplete_response(client, row):
    # OpenAI's floor for max_output_tokens is 16: an echo of 30 words runs past it.
    words = " ".join(f"w{i}" for i in range(30))
    r = client.responses.create(model=row.client_model, input=words, max_output_tokens=16)
    assert r.status == "incomplete", r
    assert r.incomplete_details.reason == "max_output_tokens"


# ------------------------------------------------------------------------------------------- stream


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_stream_helper_gives_the_final_response(client, row):
    want = expected(None, [Turn("user", "Stream this please")])
    kinds = []
    deltas = []
    with client.responses.stream(model=row.client_model, input="Stream this please") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == want.text
    assert final.output_text == want.text
    assert final.model == row.client_model
    assert final.usage.output_tokens == want.completion_tokens
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    for k in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
              "response.content_part.done", "response.output_item.done"):
        assert k in kinds, (k, kinds)


def test_stream_events_carry_increasing_sequence_numbers(gw):
    for model in ("conf-anthropic", "conf-openai", "conf-vertex-gemini"):
        with httpx.stream("POST", gw.url + "/v1/responses", headers={"authorization": f"Bearer {ALICE_KEY}"},
                          json={"model": model, "input": "Count", "stream": True}, timeout=20) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            text = "".join(r.iter_text())
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        seqs = [e["sequence_number"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (model, seqs)
        assert "[DONE]" not in text


# -------------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_function_tool_round_trip(client, row):
    first = client.responses.create(model=row.client_model, input="What is the weather in Paris?",
                                    tools=[WEATHER_TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    call = calls[0]
    assert call.call_id
    second = client.responses.create(
        model=row.client_model,
        tools=[WEATHER_TOOL],
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
    )
    assert second.output_text == "Tool results: sunny, 21C"


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_function_tool_round_trip_by_previous_response_id(client, row):
    first = client.responses.create(model=row.client_model, input="What is the weather in Paris?",
                                    tools=[WEATHER_TOOL])
    call = next(o for o in first.output if o.type == "function_call")
    second = client.responses.create(
        model=row.client_model, tools=[WEATHER_TOOL], previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}])
    assert second.output_text == "Tool results: rainy"
    assert second.previous_response_id == first.id


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_streamed_tool_call(client, row):
    with client.responses.stream(model=row.client_model, input="weather in London?", tools=[WEATHER_TOOL]) as s:
        arg_deltas = [e.delta for e in s if e.type == "response.function_call_arguments.delta"]
        final = s.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert json.loads(call.arguments) == {"city": "London"}
    assert "".join(arg_deltas) == call.arguments


# -------------------------------------------------------------------------------- structured output


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_parse_with_a_json_schema(client, row):
    r = client.responses.parse(model=row.client_model, input="Describe Paris", text_format=City)
    assert isinstance(r.output_parsed, City), r
    assert r.output_parsed.population == 7


# --------------------------------------------------------------------------- conversation state


def test_a_chain_of_three_turns_across_two_providers(client, native):
    one = client.responses.create(model="conf-anthropic", input="My name is Ada")
    two = client.responses.create(model="conf-vertex-gemini", input="What is my name?", previous_response_id=one.id)
    three = client.responses.create(model="conf-openai", input="And again?", previous_response_id=two.id)
    # Each provider saw the whole conversation: the mocks count every word they were sent.
    t1 = [Turn("user", "My name is Ada")]
    assert one.output_text == expected(None, t1).text
    t2 = t1 + [Turn("assistant", one.output_text), Turn("user", "What is my name?")]
    assert two.output_text == expected(None, t2).text
    assert two.usage.input_tokens == expected(None, t2).prompt_tokens
    t3 = t2 + [Turn("assistant", two.output_text), Turn("user", "And again?")]
    assert three.usage.input_tokens == expected(None, t3).prompt_tokens
    # OpenAI got the conversation as plain items (no ids from other providers) and no
    # previous_response_id.
    body = recorded(native, ROWS[0])
    assert "previous_response_id" not in body
    assert [i.get("role") for i in body["input"]] == ["user", "assistant", "user", "assistant", "user"]
    assert all("id" not in i for i in body["input"])
    assert three.previous_response_id == two.id


def test_instructions_do_not_carry_over(client):
    one = client.responses.create(model="conf-anthropic", input="Hi", instructions="Speak like a pirate.")
    two = client.responses.create(model="conf-anthropic", input="Hi again", previous_response_id=one.id)
    assert "[system:" not in two.output_text


def test_retrieve_list_input_items_and_delete(client):
    r = client.responses.create(model="conf-bedrock", input="Remember me", instructions="Be brief.")
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.model == "conf-bedrock"
    items = client.responses.input_items.list(r.id)
    texts = [i.content[0].text for i in items.data]
    assert texts == ["Remember me"]
    follow = client.responses.create(model="conf-bedrock", input="Second", previous_response_id=r.id)
    all_items = client.responses.input_items.list(follow.id, order="asc")
    assert [i.type for i in all_items.data] == ["message", "message", "message"]
    assert [i.role for i in all_items.data] == ["user", "assistant", "user"]
    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="conf-bedrock", input="x", previous_response_id=r.id)
    assert e.value.body["code"] == "previous_response_not_found"
    assert e.value.body["param"] == "previous_response_id"


def test_another_keys_response_is_not_found(client, bob):
    r = client.responses.create(model="conf-openai", input="Secret")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError):
        bob.responses.create(model="conf-openai", input="x", previous_response_id=r.id)
    assert client.responses.retrieve(r.id).id == r.id


def test_store_false_is_not_kept(client):
    r = client.responses.create(model="conf-watsonx", input="Forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_streamed_answers_are_stored_too(client):
    with client.responses.stream(model="conf-oci", input="Keep this stream") as s:
        final = s.get_final_response()
    assert client.responses.retrieve(final.id).output_text == final.output_text
    with client.responses.stream(model="conf-azure", input="Keep this one too") as s:
        final = s.get_final_response()
    assert client.responses.retrieve(final.id).output_text == final.output_text


# ----------------------------------------------------------------------------------------- errors


def test_bad_input_is_a_400_in_the_openai_envelope(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="conf-anthropic", input=[{"type": "bogus_item"}])
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="conf-anthropic", input="x", previous_response_id="not an id!")
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_built_in_tools_go_to_openai_only(client, native):
    r = client.responses.create(model="conf-openai", input="search", tools=[{"type": "web_search"}])
    assert r.status == "completed"
    assert recorded(native, ROWS[0])["tools"] == [{"type": "web_search"}]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="conf-anthropic", input="search", tools=[{"type": "web_search"}])
    assert "web_search" in e.value.body["message"]


# ------------------------------------------------------------------------------- OpenAI Agents SDK


def test_the_agents_sdk_runs_against_a_non_openai_provider(gw):
    # Installed from tests/sdk/requirements.txt: a missing package fails, it is not skipped.
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    class Report(BaseModel):
        city: str
        population: int

    # The SDK's default setup: its default client and its default model class (Responses).
    ac = openai.AsyncOpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    set_default_openai_client(ac, use_for_tracing=False)
    tool_agent = Agent(name="weather", instructions="Answer weather questions.", tools=[get_weather],
                       model="conf-anthropic")
    typed_agent = Agent(name="typed", instructions="Describe a city.", output_type=Report,
                        model="conf-vertex-gemini")

    async def run():
        result = await Runner.run(tool_agent, "What is the weather in Paris?")
        assert calls == ["Paris"]
        assert result.final_output == "Tool results: sunny in Paris"
        streamed = Runner.run_streamed(tool_agent, "What is the weather in London?")
        kinds = [e.type async for e in streamed.stream_events()]
        assert "raw_response_event" in kinds
        assert calls == ["Paris", "London"]
        assert streamed.final_output == "Tool results: sunny in London"
        typed = await Runner.run(typed_agent, "Describe Rome")
        assert isinstance(typed.final_output, Report) and typed.final_output.population == 7
        await ac.close()

    asyncio.run(run())
