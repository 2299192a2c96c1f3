"""Prompt caching through the gateway on every provider row (issue 15 item 3).

The openai SDK sends Anthropic-style `cache_control` markers (on content parts, on a message,
on a tool: the extension LiteLLM and others accept); the anthropic SDK sends them through
/v1/messages. The native mocks check what reaches them — `cache_control` blocks on the Claude
hosts, `cachePoint` blocks on Bedrock Converse — and, when markers are present, report a cache
write the first time a prefix is seen and a cache read afterwards, which the gateway must show
as `usage.prompt_tokens_details.cached_tokens`. Providers that cache on their own (OpenAI,
Azure, Gemini) get nothing and name nothing; the others name `cache_control` as dropped.
"""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest

from helpers import ALICE_KEY
from provider_table import NativeServer, ROWS, dropped, start_gateway

ROW = {r.name: r for r in ROWS}
CLAUDE_HOSTS = ["anthropic", "bedrock-invoke", "vertex-claude"]
AUTOMATIC = ["openai", "azure", "vertex-gemini"]
NONE = ["watsonx", "oci"]
NOVA = "amazon.nova-lite-v1:0"
EXTRA = [f'  conf-nova: {{providers: {{bedrock: {{model: "{NOVA}"}}}}}}']
EPH = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "prompt-caching", EXTRA)
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


def marked_request(tag: str) -> dict:
    """A long system prompt marked for caching (a part marker), a marked tool, and a question."""
    rules = f"Rules {tag}: " + " ".join(f"rule{i}" for i in range(60))
    return {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": rules, "cache_control": EPH}]},
            {"role": "user", "content": "What is the answer?"},
        ],
        "tools": [{"type": "function", "cache_control": EPH, "function": {
            "name": "lookup", "description": "Looks things up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
    }


def recorded(native: NativeServer, prefix: str) -> dict:
    req, _ = native.last(prefix)
    return req.json()


def cached_tokens(completion) -> int:
    d = completion.usage.prompt_tokens_details
    return (d.cached_tokens or 0) if d is not None else 0


@pytest.mark.parametrize("name", CLAUDE_HOSTS)
def test_claude_hosts_get_cache_control_and_report_cache_reads(client, native, name):
    row = ROW[name]
    body = marked_request(uuid.uuid4().hex)
    first = client.chat.completions.with_raw_response.create(model=row.client_model, **body)
    assert dropped(first.headers) == []
    sent = recorded(native, row.prefix)
    assert sent["system"] == [{"type": "text", "text": body["messages"][0]["content"][0]["text"],
                               "cache_control": EPH}]
    assert sent["tools"][0]["cache_control"] == EPH
    assert cached_tokens(first.parse()) == 0  # first sight: a cache write
    again = client.chat.completions.create(model=row.client_model, **body)
    assert cached_tokens(again) > 0
    assert again.usage.prompt_tokens == first.parse().usage.prompt_tokens


def test_claude_gets_a_message_marker_on_its_last_block_and_keeps_four(client, native):
    row = ROW["anthropic"]
    body = marked_request(uuid.uuid4().hex)
    body["messages"] += [
        {"role": "assistant", "content": "Noted.", "cache_control": EPH},
        {"role": "user", "content": [{"type": "text", "text": "First", "cache_control": EPH},
                                     {"type": "text", "text": "Second", "cache_control": EPH}]},
    ]
    r = client.chat.completions.with_raw_response.create(model=row.client_model, **body)
    # Five markers: the tool's (first in the prompt) is the one left out, and named.
    assert dropped(r.headers) == ["cache_control"]
    sent = recorded(native, row.prefix)
    assert "cache_control" not in sent["tools"][0]
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "Noted.", "cache_control": EPH}]
    assert [b.get("cache_control") for b in sent["messages"][2]["content"]] == [EPH, EPH]


def test_converse_claude_gets_cache_points_and_reports_cache_reads(client, native):
    row = ROW["bedrock"]
    body = marked_request(uuid.uuid4().hex)
    first = client.chat.completions.with_raw_response.create(model=row.client_model, **body)
    assert dropped(first.headers) == []
    sent = recorded(native, row.prefix)
    point = {"cachePoint": {"type": "default"}}
    assert sent["system"][1] == point
    assert sent["toolConfig"]["tools"][1] == point
    assert cached_tokens(first.parse()) == 0
    again = client.chat.completions.create(model=row.client_model, **body)
    assert cached_tokens(again) > 0


def test_converse_nova_caches_system_but_not_tools(client, native):
    body = marked_request(uuid.uuid4().hex)
    r = client.chat.completions.with_raw_response.create(model="conf-nova", **body)
    assert dropped(r.headers) == ["cache_control"]
    sent = recorded(native, "bedrock")
    assert sent["system"][1] == {"cachePoint": {"type": "default"}}
    assert all("cachePoint" not in t for t in sent["toolConfig"]["tools"])


def test_converse_without_caching_names_it(client, native):
    row = ROW["bedrock-llama"]
    r = client.chat.completions.with_raw_response.create(model=row.client_model, **marked_request("llama"))
    assert dropped(r.headers) == ["cache_control"]
    assert "cachePoint" not in str(recorded(native, row.prefix))


@pytest.mark.parametrize("name", AUTOMATIC + NONE)
def test_other_providers(client, native, name):
    row = ROW[name]
    r = client.chat.completions.with_raw_response.create(model=row.client_model, **marked_request(name))
    assert r.parse().choices[0].message.content
    assert dropped(r.headers) == ([] if name in AUTOMATIC else ["cache_control"])


def test_messages_client_reaches_converse_as_cache_points(messages_client, native):
    row = ROW["bedrock-llama"]
    kw = dict(max_tokens=100, system=[{"type": "text", "text": "Long rules " * 40, "cache_control": EPH}],
              messages=[{"role": "user", "content": "Hi"}])
    # Nova: the marker becomes a cachePoint, and the second request reads the cache.
    r = messages_client.messages.with_raw_response.create(model="conf-nova", **kw)
    assert dropped(r.headers) == []
    assert recorded(native, "bedrock")["system"][1] == {"cachePoint": {"type": "default"}}
    again = messages_client.messages.create(model="conf-nova", **kw)
    assert again.usage.cache_read_input_tokens and again.usage.cache_read_input_tokens > 0
    # Llama on Converse has no prompt cache: named, as the Messages client wrote it.
    r = messages_client.messages.with_raw_response.create(model=row.client_model, **kw)
    assert dropped(r.headers) == ["cache_control"]
