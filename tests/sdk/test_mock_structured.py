"""The built-in mock provider answers tools, response_format and n (openai SDK): structured
output parses, a tool call round trip, several choices. Deterministic: fixed arguments and
documents generated from the schemas."""

from __future__ import annotations

import json

import pydantic

from helpers import mock_reply

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


class Person(pydantic.BaseModel):
    name: str
    age: int


class Team(pydantic.BaseModel):
    members: list[Person]
    lead: Person | None
    founded: int = pydantic.Field(ge=1900)


def test_parse_gives_a_parsed_model(client, marker):
    r = client.chat.completions.parse(
        model="mock-fast", response_format=Team, messages=[{"role": "user", "content": f"a team {marker}"}]
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert msg.parsed == Team(members=[Person(name="mock", age=0)], lead=Person(name="mock", age=0), founded=1900)
    # Same request, same answer.
    again = client.chat.completions.parse(
        model="mock-fast", response_format=Team, messages=[{"role": "user", "content": f"a team {marker}"}]
    )
    assert again.choices[0].message.content == msg.content


def test_json_object(client, marker):
    r = client.chat.completions.create(
        model="mock-fast",
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": f"json {marker}"}],
    )
    assert json.loads(r.choices[0].message.content) == {"answer": mock_reply(f"json {marker}")}


def test_tool_call_round_trip(client, marker):
    messages = [{"role": "user", "content": f"weather in Rome {marker}"}]
    r = client.chat.completions.create(model="mock-fast", tools=[WEATHER], messages=messages)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r = client.chat.completions.create(model="mock-fast", tools=[WEATHER], messages=messages)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == mock_reply(f"weather in Rome {marker}")
    assert not r.choices[0].message.tool_calls


def test_streamed_tool_call(client, marker):
    messages = [{"role": "user", "content": f"weather {marker}"}]
    with client.chat.completions.stream(model="mock-fast", tools=[WEATHER], messages=messages) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}


def test_n_choices(client, marker):
    user = f"two {marker}"
    r = client.chat.completions.create(model="mock-fast", n=2, messages=[{"role": "user", "content": user}])
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.message.content for c in r.choices] == [mock_reply(user)] * 2

    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in client.chat.completions.create(
        model="mock-fast", n=2, stream=True, messages=[{"role": "user", "content": user}]
    ):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert texts == {0: mock_reply(user), 1: mock_reply(user)}
    assert finishes == {0: "stop", 1: "stop"}


# The demo's mock through the Responses front door (what a new user of the Agents SDK or
# `client.responses` meets first).


def test_responses_on_the_mock(client, marker):
    r = client.responses.create(model="mock-fast", input=f"hello {marker}")
    assert r.output_text == mock_reply(f"hello {marker}")
    assert r.status == "completed" and r.model == "mock-fast"
    with client.responses.stream(model="mock-fast", input=f"stream {marker}") as s:
        final = s.get_final_response()
    assert final.output_text == mock_reply(f"stream {marker}")
    again = client.responses.create(model="mock-fast", input="and again", previous_response_id=final.id)
    assert again.previous_response_id == final.id
    assert client.responses.retrieve(again.id).output_text == again.output_text


def test_responses_parse_and_tools_on_the_mock(client, marker):
    r = client.responses.parse(model="mock-fast", input=f"a team {marker}", text_format=Team)
    assert r.output_parsed == Team(members=[Person(name="mock", age=0)], lead=Person(name="mock", age=0), founded=1900)
    tool = {"type": "function", **WEATHER["function"]}
    first = client.responses.create(model="mock-fast", input=f"weather {marker}", tools=[tool])
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and set(json.loads(call.arguments)) == {"city", "unit"}
    second = client.responses.create(model="mock-fast", tools=[tool], previous_response_id=first.id,
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.status == "completed" and second.output_text
