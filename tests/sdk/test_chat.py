"""Chat completions through the gateway with the official openai SDK."""

from __future__ import annotations

import json

import pytest

from helpers import ALICE_KEY, UPSTREAM_KEY, UPSTREAM_ORG, assert_no_gateway_key, mock_reply, sse_events, word_count
from mock_upstream import header, upstream_chat_reply


def _messages(user_text: str):
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": user_text},
    ]


# ---------------------------------------------------------------------------- mock provider


def test_mock_chat_non_stream_exact(client, marker):
    user = f"hello there {marker}"
    r = client.chat.completions.create(model="mock-chat", messages=_messages(user))
    expected = mock_reply(user)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-mock-"), r.id
    assert r.model == "mock-chat"
    assert len(r.choices) == 1
    ch = r.choices[0]
    assert ch.index == 0
    assert ch.message.role == "assistant"
    assert ch.message.content == expected
    assert ch.finish_reason == "stop"
    # prompt tokens = words of all messages ("Be brief." + user text), completion = words emitted
    assert r.usage.prompt_tokens == 2 + word_count(user) == 5
    assert r.usage.completion_tokens == word_count(expected) == 12
    assert r.usage.total_tokens == 17


def test_mock_chat_is_deterministic(client, marker):
    user = f"same input {marker}"
    a = client.chat.completions.create(model="mock-det", messages=[{"role": "user", "content": user}])
    b = client.chat.completions.create(model="mock-det", messages=[{"role": "user", "content": user}])
    assert a.choices[0].message.content == b.choices[0].message.content == mock_reply(user)
    assert a.usage.model_dump() == b.usage.model_dump()


def test_mock_chat_uses_last_user_message(client, marker):
    msgs = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": f"second {marker}"}]},
    ]
    r = client.chat.completions.create(model="mock-multi", messages=msgs)
    assert r.choices[0].message.content == mock_reply(f"second {marker}")
    assert r.usage.prompt_tokens == 2 + 2 + 2


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_mock_chat_max_tokens_truncates(client, marker, param):
    user = f"truncate me {marker}"
    r = client.chat.completions.create(model="mock-len", messages=[{"role": "user", "content": user}], **{param: 4})
    assert r.choices[0].message.content == "This is a mock"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    assert r.usage.prompt_tokens == 3
    assert r.usage.total_tokens == 7


def test_mock_chat_max_tokens_larger_than_reply_is_stop(client, marker):
    user = f"short {marker}"
    r = client.chat.completions.create(model="mock-len", messages=[{"role": "user", "content": user}], max_tokens=500)
    assert r.choices[0].message.content == mock_reply(user)
    assert r.choices[0].finish_reason == "stop"


def test_mock_chat_stream_without_usage(client, marker):
    user = f"stream please {marker}"
    expected = mock_reply(user)
    chunks = list(client.chat.completions.create(model="mock-stream", messages=_messages(user), stream=True))
    assert chunks, "no chunks received"
    # every chunk is a chat.completion.chunk with one id and the client's model name
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {"mock-stream"}
    # no usage chunk when not asked for
    assert all(c.choices for c in chunks), "got a choices:[] (usage) chunk without include_usage"
    assert all(c.usage is None for c in chunks)
    # first chunk: role assistant, empty content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    # last chunk: empty delta with finish_reason
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert not chunks[-1].choices[0].delta.content
    # one chunk per word in between
    middle = chunks[1:-1]
    assert len(middle) == word_count(expected)
    assert all(c.choices[0].finish_reason is None for c in middle)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected


def test_mock_chat_stream_with_usage(client, marker):
    user = f"stream with usage {marker}"
    expected = mock_reply(user)
    non_stream = client.chat.completions.create(model="mock-stream", messages=_messages(user))
    chunks = list(
        client.chat.completions.create(
            model="mock-stream",
            messages=_messages(user),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1, "expected exactly one choices:[] usage chunk"
    assert chunks[-1] is usage_chunks[0], "usage chunk must be the last one before [DONE]"
    u = usage_chunks[0].usage
    assert u is not None
    n_prompt = 2 + word_count(user)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (
        n_prompt,
        word_count(expected),
        n_prompt + word_count(expected),
    )
    assert u.model_dump()["prompt_tokens"] == non_stream.usage.prompt_tokens
    assert u.completion_tokens == non_stream.usage.completion_tokens
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == expected == non_stream.choices[0].message.content
    assert all(c.usage is None for c in chunks[:-1])


def test_mock_chat_stream_max_tokens(client, marker):
    chunks = list(
        client.chat.completions.create(
            model="mock-stream",
            messages=[{"role": "user", "content": f"cut {marker}"}],
            stream=True,
            max_tokens=3,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "This is a"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage.completion_tokens == 3


def test_mock_chat_stream_wire_format(http, marker):
    """Raw bytes: text/event-stream, `data: {json}\\n\\n` events, literal `data: [DONE]\\n\\n` at the end."""
    body = {"model": "mock-wire", "messages": [{"role": "user", "content": f"wire {marker}"}], "stream": True}
    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ALICE_KEY}"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-80:]
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert all(o["object"] == "chat.completion.chunk" for o in objs)
    assert "".join(o["choices"][0]["delta"].get("content") or "" for o in objs) == mock_reply(f"wire {marker}")


# ---------------------------------------------------------------------------- openai provider (mock upstream)


def test_openai_route_rewrites_model_and_swaps_keys(client, upstream, marker):
    user = f"route me {marker}"
    r = client.chat.completions.create(model="gpt-4", messages=_messages(user))
    assert r.model == "gpt-4", "response model must be the name the client sent"
    assert r.choices[0].message.content == upstream_chat_reply(user)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens == word_count(upstream_chat_reply(user))

    recs = upstream.containing(marker)
    assert len(recs) == 1, f"expected exactly one upstream request, got {len(recs)}"
    rec = recs[0]
    assert rec["method"] == "POST"
    assert rec["path"] == "/v1/chat/completions"
    sent = json.loads(rec["body"])
    assert sent["model"] == "gpt-4-0125-preview"
    assert sent["messages"] == _messages(user)
    assert header(rec, "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert rec["status"] == 200
    assert_no_gateway_key(recs)


def test_openai_route_pattern_passes_model_unchanged(client, upstream, marker):
    user = f"pattern {marker}"
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": user}])
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.content == upstream_chat_reply(user)
    recs = upstream.containing(marker)
    assert len(recs) == 1
    assert json.loads(recs[0]["body"])["model"] == "gpt-4o-mini"
    assert_no_gateway_key(recs)


def test_openai_route_forwards_parameters(client, upstream, marker):
    client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": f"params {marker}"}],
        temperature=0.25,
        max_tokens=3,
        stop=["xyz"],
        seed=7,
    )
    sent = json.loads(upstream.containing(marker)[0]["body"])
    assert sent["temperature"] == 0.25
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 3
    assert sent["stop"] == ["xyz"]
    assert sent["seed"] == 7


def test_openai_route_stream_hides_usage_it_asked_for(client, upstream, marker):
    """Client did not ask for usage: the gateway asks upstream (to count tokens) but hides it."""
    user = f"stream hidden usage {marker}"
    chunks = list(client.chat.completions.create(model="gpt-4", messages=_messages(user), stream=True))
    assert chunks
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == upstream_chat_reply(user)
    assert all(c.choices for c in chunks), "client got a usage chunk it did not ask for"
    assert all(c.usage is None for c in chunks), "client got usage it did not ask for"
    assert {c.model for c in chunks} == {"gpt-4"}
    assert chunks[-1].choices[0].finish_reason == "stop"

    recs = upstream.containing(marker)
    assert len(recs) == 1
    sent = json.loads(recs[0]["body"])
    assert sent["model"] == "gpt-4-0125-preview"
    assert sent["stream"] is True
    assert sent.get("stream_options", {}).get("include_usage") is True, (
        "gateway must request usage upstream to account tokens"
    )
    assert_no_gateway_key(recs)


def test_openai_route_stream_hides_usage_raw(http, upstream, marker):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": f"raw hidden {marker}"}], "stream": True}
    r = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200
    assert r.content.endswith(b"data: [DONE]\n\n")
    objs = [json.loads(e) for e in sse_events(r.content)[:-1]]
    assert all(o.get("usage") is None for o in objs), "usage leaked to a client that did not ask for it"
    assert all(o["choices"] for o in objs)


def test_openai_route_stream_with_usage(client, upstream, marker):
    user = f"stream usage openai {marker}"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4", messages=_messages(user), stream=True, stream_options={"include_usage": True}
        )
    )
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
    reply = upstream_chat_reply(user)
    assert chunks[-1].usage.prompt_tokens == 2 + word_count(user)
    assert chunks[-1].usage.completion_tokens == word_count(reply)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert {c.model for c in chunks} == {"gpt-4"}
    sent = json.loads(upstream.containing(marker)[0]["body"])
    assert sent["stream_options"]["include_usage"] is True


def test_openai_route_max_tokens_length(client, marker):
    r = client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": f"long {marker}"}], max_tokens=2
    )
    assert r.choices[0].message.content == "Upstream mock"
    assert r.choices[0].finish_reason == "length"


def test_openai_route_organization_header(client, upstream, marker):
    client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"org {marker}"}])
    rec = upstream.containing(marker)[0]
    assert header(rec, "openai-organization") == UPSTREAM_ORG


# ---------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_route_fragmented_upstream_stream(client, upstream, marker, include_usage):
    """Upstream SSE arrives in 5-byte pieces (events and UTF-8 sequences split anywhere)."""
    user = f"héllo wörld 世界 🚀 {marker}"
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-fragmented", messages=[{"role": "user", "content": user}], stream=True, **kwargs
        )
    )
    reply = upstream_chat_reply(user)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert {c.model for c in chunks} == {"gpt-4o-fragmented"}
    usage_chunks = [c for c in chunks if not c.choices]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1].usage.completion_tokens == word_count(reply)
    else:
        assert usage_chunks == [] and all(c.usage is None for c in chunks)
    assert len(upstream.containing(marker)) == 1


def test_concurrent_requests_do_not_mix(client, marker):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int):
        user = f"concurrent {i} {marker}"
        model = ("mock-conc", "gpt-4")[i % 2]
        if i % 3 == 0:
            chunks = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": user}], stream=True
            )
            got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            got = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": user}]
            ).choices[0].message.content
        want = mock_reply(user) if model == "mock-conc" else upstream_chat_reply(user)
        return got, want

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(one, range(24)))
    for got, want in results:
        assert got == want


@pytest.mark.parametrize(
    "model,extra,param",
    [
        ("mock-chat", {"temperature": 5}, "temperature"),
        ("mock-chat", {"max_tokens": 0}, "max_tokens"),
        ("mock-chat", {"top_p": 1.5}, "top_p"),
        ("mock-chat", {"n": 0}, "n"),
        ("mock-chat", {"frequency_penalty": 2.5}, "frequency_penalty"),
        ("mock-chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("mock-chat", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ("gpt-4", {"temperature": 5}, "temperature"),
    ],
)
def test_out_of_range_parameters_are_bad_requests(client, upstream, marker, model, extra, param):
    """Issue 20.6: validated as OpenAI does, on the mock and the OpenAI route alike, before any
    upstream call."""
    import openai

    kwargs = {"model": model, "messages": [{"role": "user", "content": f"range {marker}"}], **extra}
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(**kwargs)
    err = ei.value.response.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert upstream.containing(marker) == []
