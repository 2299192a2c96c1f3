"""Structured outputs (`response_format` json_schema / json_object) on every provider row, driven
by the openai SDK's `chat.completions.parse` / `.stream` helpers with pydantic models.

Providers with a JSON mode (OpenAI, Azure, Gemini, watsonx, OCI) get it natively; the Claude
rows (Anthropic, Bedrock Converse, Bedrock InvokeModel, Claude on Vertex) get a forced tool,
`switchyard_json_response`, whose call the gateway turns back into the message content. The
native mocks answer a JSON mode with `common.sample(schema)` and the forced tool with a call
whose input is `sample(input schema)`; the tests check the provider-side shape through the
mock's record of the last request.
"""

from __future__ import annotations

import json

import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from helpers import ALICE_KEY
from provider_table import ROWS, ids, start_gateway

from common import JSON_TOOL, sample  # noqa: E402  (tests/sdk/native: on sys.path via provider_table)

# The rows where response_format is a forced tool (Anthropic Messages on 3 hosts, Converse).
TOOL_ROWS = [r for r in ROWS if r.name in ("anthropic", "bedrock", "bedrock-llama", "bedrock-invoke", "vertex-claude")]
CONVERSE = ("bedrock", "bedrock-llama")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False},
        "strict": True,  # `parse` accepts strict tools only
    },
}


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]


class Address(BaseModel):
    city: str
    zip: int


class Contact(BaseModel):
    person: Person
    addresses: list[Address]
    score: float
    verified: bool


PROMPT = "Extract the person: Ann is 31."


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "structured-outputs")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


def upstream_body(native, row) -> dict:
    req, _ = native.last(row.prefix)
    return req.json()


def forced_tool(native, row) -> tuple[dict, object]:
    """(the JSON tool's input schema, the tool choice) in the last request of `row`."""
    body = upstream_body(native, row)
    if row.name in CONVERSE:
        tc = body["toolConfig"]
        specs = {t["toolSpec"]["name"]: t["toolSpec"]["inputSchema"]["json"] for t in tc["tools"]}
        return specs.get(JSON_TOOL), tc.get("toolChoice")
    specs = {t["name"]: t["input_schema"] for t in body.get("tools", [])}
    return specs.get(JSON_TOOL), body.get("tool_choice")


def forced_by_name(row) -> object:
    if row.name in CONVERSE:
        return {"tool": {"name": JSON_TOOL}}
    return {"type": "tool", "name": JSON_TOOL}


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_parse_returns_the_pydantic_object(client, native, row):
    c = client.chat.completions.parse(model=row.client_model, messages=[{"role": "user", "content": PROMPT}],
                                      response_format=Person)
    msg = c.choices[0].message
    assert msg.parsed == Person(name=PROMPT, age=7, tags=[PROMPT])
    assert c.choices[0].finish_reason == "stop"
    assert not msg.tool_calls
    if row in TOOL_ROWS:
        schema, choice = forced_tool(native, row)
        assert schema == to_strict_json_schema(Person)
        assert choice == forced_by_name(row)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_parse_stream(client, native, row):
    pieces = []
    with client.chat.completions.stream(model=row.client_model, messages=[{"role": "user", "content": PROMPT}],
                                        response_format=Person) as s:
        for ev in s:
            if ev.type == "content.delta":
                pieces.append(ev.delta)
        final = s.get_final_completion()
    assert final.choices[0].message.parsed == Person(name=PROMPT, age=7, tags=[PROMPT])
    assert final.choices[0].finish_reason == "stop"
    assert not final.choices[0].message.tool_calls
    assert len(pieces) > 1  # streamed in pieces, not one final blob
    assert json.loads("".join(pieces)) == {"name": PROMPT, "age": 7, "tags": [PROMPT]}
    if row in TOOL_ROWS:
        assert forced_tool(native, row)[0] == to_strict_json_schema(Person)


@pytest.mark.parametrize("row", ROWS, ids=ids(ROWS))
def test_json_object_returns_valid_json(client, native, row):
    c = client.chat.completions.create(model=row.client_model,
                                       messages=[{"role": "user", "content": "Say hello as a JSON object."}],
                                       response_format={"type": "json_object"})
    assert json.loads(c.choices[0].message.content) == {"echo": "Say hello as a JSON object."}
    assert c.choices[0].finish_reason == "stop"
    if row in TOOL_ROWS:
        schema, choice = forced_tool(native, row)
        assert schema == {"type": "object"}
        assert choice == forced_by_name(row)


@pytest.mark.parametrize("row", TOOL_ROWS, ids=ids(TOOL_ROWS))
def test_nested_models_keep_their_refs(client, native, row):
    schema = to_strict_json_schema(Contact)
    assert "$defs" in schema  # the tool gets the schema as it is, references included
    c = client.chat.completions.parse(model=row.client_model, messages=[{"role": "user", "content": PROMPT}],
                                      response_format=Contact)
    assert c.choices[0].message.parsed == Contact.model_validate(sample(schema, PROMPT))
    assert forced_tool(native, row)[0] == schema


@pytest.mark.parametrize("row", TOOL_ROWS, ids=ids(TOOL_ROWS))
def test_caller_tools_next_to_response_format(client, native, row):
    # No weather asked: the model answers through the JSON tool.
    c = client.chat.completions.parse(model=row.client_model, messages=[{"role": "user", "content": PROMPT}],
                                      tools=[WEATHER_TOOL], response_format=Person)
    assert c.choices[0].message.parsed == Person(name=PROMPT, age=7, tags=[PROMPT])
    assert c.choices[0].finish_reason == "stop"
    _, choice = forced_tool(native, row)
    assert choice == ({"any": {}} if row.name in CONVERSE else {"type": "any", "disable_parallel_tool_use": True})
    # Weather asked: the caller's tool is called, no JSON answer yet.
    c = client.chat.completions.create(model=row.client_model,
                                       messages=[{"role": "user", "content": "What is the weather in London?"}],
                                       tools=[WEATHER_TOOL], response_format={"type": "json_object"})
    msg = c.choices[0].message
    assert c.choices[0].finish_reason == "tool_calls"
    assert [(t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls] == [
        ("get_weather", {"city": "London"})]
    assert not msg.content
    # tool_choice none: only the JSON tool may be called.
    c = client.chat.completions.create(model=row.client_model,
                                       messages=[{"role": "user", "content": "What is the weather in London?"}],
                                       tools=[WEATHER_TOOL], tool_choice="none", response_format={"type": "json_object"})
    assert json.loads(c.choices[0].message.content) == {"echo": "What is the weather in London?"}
    assert forced_tool(native, row)[1] == forced_by_name(row)


@pytest.mark.parametrize("row", TOOL_ROWS, ids=ids(TOOL_ROWS))
def test_refusals_name_the_parameter(client, native, row):
    before = len(native.records)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": "hi"}],
                                       tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                       response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": "hi"}],
                                       tools=[dict(WEATHER_TOOL, function=dict(WEATHER_TOOL["function"], name=JSON_TOOL))])
    assert e.value.body["param"] == "tools[0].function.name"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "n", "schema": {"type": "array", "items": {"type": "string"}}}})
    assert e.value.body["param"] == "response_format.json_schema.schema"
    assert len(native.records) == before  # refused before reaching the provider
