"""Gateway key header variants, hashed keys, and the unauthenticated health endpoints."""

from __future__ import annotations

import openai
import pytest

from helpers import ALICE_KEY, BOB_KEY, assert_error_envelope, mock_reply

VARIANTS = [
    ("Authorization", "Bearer {}"),
    ("X-API-Key", "{}"),
    ("api-key", "{}"),
    ("x-goog-api-key", "{}"),
]


@pytest.mark.parametrize("hdr,fmt", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_key_header_variant_authenticates(http, hdr, fmt, marker):
    user = f"variant {marker}"
    r = http.post(
        "/v1/chat/completions",
        json={"model": "mock-auth", "messages": [{"role": "user", "content": user}]},
        headers={hdr: fmt.format(ALICE_KEY)},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == mock_reply(user)


@pytest.mark.parametrize("hdr,fmt", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_key_header_variant_wrong_key_rejected(http, hdr, fmt):
    r = http.post(
        "/v1/chat/completions",
        json={"model": "mock-auth", "messages": [{"role": "user", "content": "x"}]},
        headers={hdr: fmt.format(ALICE_KEY + "x")},
    )
    assert r.status_code == 401
    assert_error_envelope(r.json(), type_="invalid_request_error", code="invalid_api_key")


def test_hashed_key_user(gateway):
    """bob is configured with key_sha256 only."""
    c = openai.OpenAI(api_key=BOB_KEY, base_url=gateway.url + "/v1", max_retries=0, timeout=20)
    r = c.chat.completions.create(model="mock-bob", messages=[{"role": "user", "content": "hi bob"}])
    assert r.choices[0].message.content == mock_reply("hi bob")


def test_key_prefix_is_not_enough(gateway):
    c = openai.OpenAI(api_key=ALICE_KEY[:-1], base_url=gateway.url + "/v1", max_retries=0, timeout=20)
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="mock-x", messages=[{"role": "user", "content": "hi"}])


def test_health_needs_no_key(http):
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready(http):
    r = http.get("/ready")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
