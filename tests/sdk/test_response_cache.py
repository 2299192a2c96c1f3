"""The response cache through the official openai SDK: a second identical request is a hit
(`x-switchyard-cache: hit`), answers the same text with a fresh id, and the upstream sees one
call; a streamed hit reads as a normal stream."""

from __future__ import annotations

import openai
import pytest

from helpers import ALICE_KEY, Gateway, free_port, gateway_bin, render_config

MAPPING = """model_mappings:
  cached-gpt:
    default_provider: openai
    providers:
      openai: {model: gpt-4o}
    cache: {ttl_seconds: 60}
"""


@pytest.fixture(scope="module")
def cached_gateway(upstream, workdir):
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    text = render_config(listen=listen, metrics_listen=metrics, upstream_url=upstream.url)
    cfg = workdir / "cache.yaml"
    cfg.write_text(text.replace("model_mappings:\n", MAPPING, 1))
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="cache").start()
    yield gw
    gw.stop()


def test_a_repeated_request_is_a_hit_with_the_same_answer(cached_gateway, upstream, marker):
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=cached_gateway.url + "/v1", max_retries=0, timeout=20)
    messages = [{"role": "user", "content": f"cache me {marker}"}]
    first = client.chat.completions.with_raw_response.create(model="cached-gpt", messages=messages)
    second = client.chat.completions.with_raw_response.create(model="cached-gpt", messages=messages, user="someone")
    assert first.headers["x-switchyard-cache"] == "miss"
    assert second.headers["x-switchyard-cache"] == "hit"
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.model == a.model == "cached-gpt"
    assert b.id != a.id
    assert b.usage.total_tokens == a.usage.total_tokens
    assert len(upstream.containing(marker)) == 1

    # Streamed: the hit is a normal SDK stream with the same text.
    def streamed():
        with client.chat.completions.with_streaming_response.create(
            model="cached-gpt", messages=messages, stream=True
        ) as r:
            header = r.headers["x-switchyard-cache"]
            text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
        return header, text

    h1, t1 = streamed()
    h2, t2 = streamed()
    assert (h1, h2) == ("miss", "hit")
    assert t1 == t2 and t1
    assert len(upstream.containing(marker)) == 2
    client.close()
