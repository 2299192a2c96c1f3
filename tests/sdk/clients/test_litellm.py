"""litellm as a client library: the `openai/` provider with `api_base` pointing at the gateway."""

from __future__ import annotations

import litellm

from helpers import mock_reply


def test_completion_and_usage(base_url, key, marker):
    r = litellm.completion(
        model="openai/mock-fast", api_base=base_url, api_key=key,
        messages=[{"role": "user", "content": f"hi {marker}"}], num_retries=0, timeout=20,
    )
    assert r.choices[0].message.content == mock_reply(f"hi {marker}")
    assert r.usage.completion_tokens > 0


def test_streaming(base_url, key, marker):
    stream = litellm.completion(
        model="openai/mock-fast", api_base=base_url, api_key=key, stream=True,
        messages=[{"role": "user", "content": f"stream {marker}"}], num_retries=0, timeout=20,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == mock_reply(f"stream {marker}")
    assert sum(1 for p in pieces if p) > 1


def test_tool_call(base_url, key, upstream, marker):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    r = litellm.completion(
        model="openai/gpt-4o-mini", api_base=base_url, api_key=key, tools=[tool],
        messages=[{"role": "user", "content": f"Oslo {marker}"}], num_retries=0, timeout=20,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Oslo %s"}' % marker
    assert upstream.containing(marker), "the tool call went to the OpenAI upstream"


def test_embedding(base_url, key):
    r = litellm.embedding(model="openai/mock-embed", api_base=base_url, api_key=key, input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0]["embedding"]) > 0
