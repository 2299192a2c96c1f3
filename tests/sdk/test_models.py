"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

import openai
import pytest

from helpers import ALICE_KEY, assert_error_envelope


def test_models_list(client):
    page = client.models.list()
    models = {m.id: m for m in page.data}
    assert "gpt-4" in models, sorted(models)
    assert "text-embedding-3-small" in models, sorted(models)
    for m in page.data:
        assert m.object == "model"
        assert isinstance(m.created, int)
        assert m.owned_by in ("openai", "mock"), m
    assert models["gpt-4"].owned_by == "openai"


def test_models_list_wire_shape(http):
    r = http.get("/v1/models", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "list"
    assert isinstance(body["data"], list) and body["data"]
    for m in body["data"]:
        assert set(m) >= {"id", "object", "created", "owned_by"}, m


def test_models_retrieve(client):
    m = client.models.retrieve("gpt-4")
    assert m.id == "gpt-4"
    assert m.object == "model"
    assert m.owned_by == "openai"


def test_models_retrieve_unknown(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.models.retrieve("no-such-model-anywhere")
    assert ei.value.status_code == 404
    assert_error_envelope(ei.value.response.json())


def test_models_list_every_usable_name_with_real_timestamps(client):
    """Issue 20.6: the mock's own models (used in the README's examples) are listed beside the
    mappings, and `created` is a real Unix time, never 0."""
    models = {m.id: m for m in client.models.list().data}
    for name in ("mock-fast", "mock-embed", "gpt-4"):
        assert name in models, sorted(models)
    assert models["mock-fast"].owned_by == "mock"
    for m in models.values():
        assert m.created > 1_700_000_000, m
    assert client.models.retrieve("mock-embed").created == models["mock-embed"].created
