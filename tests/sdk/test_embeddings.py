"""Embeddings: float and base64 (the openai SDK's default), dimensions, both providers."""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest

from helpers import ALICE_KEY, UPSTREAM_KEY, assert_no_gateway_key
from mock_upstream import header, upstream_embedding


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _decode_b64(s: str) -> list[float]:
    raw = base64.b64decode(s)
    assert len(raw) % 4 == 0
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_mock_embeddings_float_default_dimensions(client, marker):
    r = client.embeddings.create(model="mock-embed", input=f"embed me {marker}", encoding_format="float")
    assert r.object == "list"
    assert r.model == "mock-embed"
    assert len(r.data) == 1
    d = r.data[0]
    assert d.object == "embedding"
    assert d.index == 0
    assert isinstance(d.embedding, list) and len(d.embedding) == 16
    assert _norm(d.embedding) == pytest.approx(1.0, abs=1e-5)
    assert r.usage.prompt_tokens == 3
    assert r.usage.total_tokens == 3


@pytest.mark.parametrize("dims", [8, 64])
def test_mock_embeddings_sdk_default_base64_with_dimensions(client, marker, dims):
    text = f"base64 vector {marker}"
    # SDK default: asks for base64 and decodes it itself
    r = client.embeddings.create(model="mock-embed", input=text, dimensions=dims)
    v_b64 = r.data[0].embedding
    assert len(v_b64) == dims
    assert _norm(v_b64) == pytest.approx(1.0, abs=1e-5)
    f = client.embeddings.create(model="mock-embed", input=text, dimensions=dims, encoding_format="float")
    v_float = f.data[0].embedding
    assert len(v_float) == dims
    # same vector, to float32 precision
    assert v_b64 == pytest.approx(v_float, abs=1e-6)


def test_mock_embeddings_base64_on_the_wire(http, marker):
    body = {"model": "mock-embed", "input": f"wire b64 {marker}", "dimensions": 12, "encoding_format": "base64"}
    r = http.post("/v1/embeddings", json=body, headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200, r.text
    emb = r.json()["data"][0]["embedding"]
    assert isinstance(emb, str), "base64 requested: embedding must be a base64 string"
    assert len(base64.b64decode(emb)) == 12 * 4
    assert _norm(_decode_b64(emb)) == pytest.approx(1.0, abs=1e-5)


def test_mock_embeddings_batch_deterministic_and_ordered(client, marker):
    inputs = [f"alpha {marker}", f"beta gamma {marker}", f"alpha {marker}"]
    r = client.embeddings.create(model="mock-embed", input=inputs, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    a, b, a2 = (d.embedding for d in r.data)
    assert a == a2, "same input must give the same vector"
    assert a != b, "different inputs must give different vectors"
    assert r.usage.prompt_tokens == 2 + 3 + 2
    again = client.embeddings.create(model="mock-embed", input=inputs[1], encoding_format="float")
    assert again.data[0].embedding == b


def test_openai_embeddings_base64_default(client, upstream, marker):
    text = f"upstream embedding {marker}"
    r = client.embeddings.create(model="text-embedding-3-small", input=text, dimensions=8)
    assert r.model == "text-embedding-3-small"
    assert r.data[0].embedding == pytest.approx(upstream_embedding(text, 8), abs=1e-6)
    assert r.usage.prompt_tokens == 3
    recs = upstream.containing(marker)
    assert len(recs) == 1
    assert recs[0]["path"] == "/v1/embeddings"
    sent = json.loads(recs[0]["body"])
    assert sent["dimensions"] == 8
    assert header(recs[0], "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert_no_gateway_key(recs)


def test_openai_embeddings_float(client, upstream, marker):
    texts = [f"one {marker}", f"two words {marker}"]
    r = client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=5, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    for d, t in zip(r.data, texts):
        assert d.embedding == pytest.approx(upstream_embedding(t, 5), abs=1e-6)
    assert r.usage.prompt_tokens == 5
