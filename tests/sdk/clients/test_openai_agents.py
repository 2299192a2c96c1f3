"""The OpenAI Agents SDK (`openai-agents`) with OpenAIChatCompletionsModel: a plain answer, a
streamed one, and a tool round trip (the model calls the tool, then answers from its result)."""

from __future__ import annotations

import asyncio

import openai
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

from helpers import ALICE_KEY, mock_reply
from mock_upstream import tool_result_reply

set_tracing_disabled(True)


def model(gateway, name: str) -> OpenAIChatCompletionsModel:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=20)
    return OpenAIChatCompletionsModel(model=name, openai_client=client)


def test_plain_answer(gateway, marker):
    agent = Agent(name="echo", instructions="Answer.", model=model(gateway, "mock-fast"))
    result = Runner.run_sync(agent, f"hi {marker}")
    assert result.final_output == mock_reply(f"hi {marker}")


def test_streamed_answer(gateway, marker):
    agent = Agent(name="echo", instructions="Answer.", model=model(gateway, "mock-fast"))

    async def run():
        r = Runner.run_streamed(agent, f"stream {marker}")
        deltas = [
            e.data.delta
            async for e in r.stream_events()
            if e.type == "raw_response_event" and getattr(e.data, "type", "") == "response.output_text.delta"
        ]
        return deltas, r.final_output

    deltas, final = asyncio.run(run())
    assert len(deltas) > 1
    assert "".join(deltas) == final == mock_reply(f"stream {marker}")


def test_tool_round_trip(gateway, upstream, marker):
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    agent = Agent(name="weather", instructions="Use tools.", tools=[get_weather], model=model(gateway, "gpt-4o-mini"))
    result = Runner.run_sync(agent, f"Rome {marker}")
    assert result.final_output == tool_result_reply(f"sunny in Rome {marker}")
    sent = upstream.containing(marker)
    assert len(sent) == 2, "one request with the tool call, one with its result"
    assert b'"role":"tool"' in sent[1]["body"].replace(b" ", b"")


def test_output_type_from_the_built_in_mock(gateway, marker):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    agent = Agent(name="typed", instructions="Answer.", output_type=City, model=model(gateway, "mock-fast"))
    result = Runner.run_sync(agent, f"Paris {marker}")
    assert result.final_output == City(name="mock", population=0)


def test_tool_round_trip_with_the_built_in_mock(gateway, marker):
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    agent = Agent(name="weather", instructions="Use tools.", tools=[get_weather], model=model(gateway, "mock-fast"))
    result = Runner.run_sync(agent, f"Rome {marker}")
    assert calls == ["mock"]
    assert result.final_output == mock_reply(f"Rome {marker}")
