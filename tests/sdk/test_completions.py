"""Legacy /v1/completions through the gateway."""

from __future__ import annotations

import json

from helpers import UPSTREAM_KEY, assert_no_gateway_key, mock_reply, word_count
from mock_upstream import header, upstream_completion_text


def test_mock_completion(client, marker):
    prompt = f"complete this {marker}"
    r = client.completions.create(model="mock-instruct", prompt=prompt)
    expected = mock_reply(prompt)
    assert r.object == "text_completion"
    assert r.model == "mock-instruct"
    assert len(r.choices) == 1
    assert r.choices[0].text == expected
    assert r.choices[0].index == 0
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 3
    assert r.usage.completion_tokens == word_count(expected) == 12
    assert r.usage.total_tokens == 15


def test_mock_completion_max_tokens(client, marker):
    r = client.completions.create(model="mock-instruct", prompt=f"cut {marker}", max_tokens=5)
    assert r.choices[0].text == "This is a mock response"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_mock_completion_stream(client, marker):
    prompt = f"stream complete {marker}"
    chunks = list(
        client.completions.create(
            model="mock-instruct", prompt=prompt, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks
    assert {c.object for c in chunks} == {"text_completion"}
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == mock_reply(prompt)
    usage = [c for c in chunks if not c.choices]
    assert len(usage) == 1 and chunks[-1] is usage[0]
    assert usage[0].usage.prompt_tokens == 3
    assert usage[0].usage.completion_tokens == word_count(mock_reply(prompt))


def test_openai_completion(client, upstream, marker):
    prompt = f"upstream complete {marker}"
    r = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=50)
    assert r.object == "text_completion"
    assert r.model == "gpt-3.5-turbo-instruct"
    assert r.choices[0].text == upstream_completion_text(prompt)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 3
    assert r.usage.completion_tokens == word_count(upstream_completion_text(prompt))

    recs = upstream.containing(marker)
    assert len(recs) == 1
    assert recs[0]["path"] == "/v1/completions"
    sent = json.loads(recs[0]["body"])
    assert sent["model"] == "gpt-3.5-turbo-instruct"
    assert sent["prompt"] == prompt
    assert header(recs[0], "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert_no_gateway_key(recs)


def test_openai_completion_stream(client, upstream, marker):
    prompt = f"upstream stream complete {marker}"
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=50, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == upstream_completion_text(prompt)
    assert all(c.choices for c in chunks), "usage chunk sent although the client did not ask for it"
    assert {c.model for c in chunks} == {"gpt-3.5-turbo-instruct"}
    assert_no_gateway_key(upstream.containing(marker))
