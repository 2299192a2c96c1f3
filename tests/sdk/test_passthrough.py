"""Native passthrough: /providers/openai/<rest> is a byte-exact proxy to {endpoint}/<rest>."""

from __future__ import annotations

import json
import socket

import openai
import pytest

from helpers import (
    ALICE_KEY,
    BOB_KEY,
    UPSTREAM_KEY,
    UPSTREAM_ORG,
    assert_error_envelope,
    assert_no_gateway_key,
)
from mock_upstream import MODELS, UPSTREAM_RETRY_AFTER, header, upstream_chat_reply


@pytest.fixture
def pt_client(gateway):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.url + "/providers/openai/v1", max_retries=0, timeout=20)
    yield c
    c.close()


def _only(upstream, marker) -> dict:
    recs = upstream.containing(marker)
    assert len(recs) == 1, f"expected exactly one upstream request for {marker}, got {len(recs)}"
    return recs[0]


def test_passthrough_sdk_chat(pt_client, upstream, marker):
    user = f"passthrough {marker}"
    r = pt_client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": user}])
    assert r.choices[0].message.content == upstream_chat_reply(user)
    # passthrough does not map models: upstream saw (and echoed) what the client sent
    assert r.model == "gpt-4"
    rec = _only(upstream, marker)
    assert rec["path"] == "/v1/chat/completions"
    assert json.loads(rec["body"])["model"] == "gpt-4"
    assert header(rec, "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert header(rec, "openai-organization") == UPSTREAM_ORG
    assert_no_gateway_key([rec])


def test_passthrough_sdk_stream(pt_client, upstream, marker):
    user = f"passthrough stream {marker}"
    chunks = list(
        pt_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": user}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == upstream_chat_reply(user)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    rec = _only(upstream, marker)
    assert header(rec, "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert_no_gateway_key([rec])


def test_passthrough_sdk_models(pt_client, upstream):
    before = upstream.count()
    ids = [m.id for m in pt_client.models.list().data]
    assert ids == [m["id"] for m in MODELS]
    recs = upstream.since(before)
    assert [r["path"] for r in recs] == ["/v1/models"]
    assert_no_gateway_key(recs)


def test_passthrough_bytes_identical_non_stream(http, upstream, marker):
    # odd but valid JSON formatting: a re-serialising proxy would change these bytes
    sent = (
        '{ "model" :"gpt-4",\n  "messages":[ {"role":"user","content":"bytes %s \\u00e9"} ],'
        '"temperature":1.0 ,"x_unknown_field":{"keep":[1,2.50,"3"]} }' % marker
    ).encode()
    r = http.post(
        "/providers/openai/v1/chat/completions",
        content=sent,
        headers={"Authorization": f"Bearer {ALICE_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    rec = _only(upstream, marker)
    assert rec["body"] == sent, "request body was not forwarded byte-for-byte"
    assert r.content == rec["response_body"], "response body differs from what the upstream sent"
    assert r.headers["content-type"] == header({"headers": rec["response_headers"]}, "content-type")


def test_passthrough_bytes_identical_stream(http, upstream, marker):
    sent = json.dumps(
        {"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": f"stream bytes {marker}"}]}
    ).encode()
    with http.stream(
        "POST",
        "/providers/openai/v1/chat/completions",
        content=sent,
        headers={"Authorization": f"Bearer {ALICE_KEY}", "Content-Type": "application/json"},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = r.read()
    rec = _only(upstream, marker)
    assert rec["body"] == sent
    assert got == rec["response_body"], "SSE bytes differ from what the upstream sent"
    assert got.endswith(b"data: [DONE]\n\n")


def test_passthrough_keeps_query_string(http, upstream):
    before = upstream.count()
    r = http.get("/providers/openai/v1/models?limit=2&after=abc", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200
    recs = upstream.since(before)
    assert [x["path"] for x in recs] == ["/v1/models?limit=2&after=abc"]


def test_transparent_alias(http, upstream, marker):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": f"transparent {marker}"}]}
    r = http.post("/transparent/openai/v1/chat/completions", json=body, headers={"X-API-Key": ALICE_KEY})
    assert r.status_code == 200, r.text
    rec = _only(upstream, marker)
    assert r.content == rec["response_body"]
    assert header(rec, "authorization") == f"Bearer {UPSTREAM_KEY}"
    assert_no_gateway_key([rec])


@pytest.mark.parametrize(
    "hdr,fmt",
    [("Authorization", "Bearer {}"), ("X-API-Key", "{}"), ("api-key", "{}"), ("x-goog-api-key", "{}")],
)
def test_passthrough_strips_every_key_header(http, upstream, marker, hdr, fmt):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": f"strip {marker}"}]}
    r = http.post("/providers/openai/v1/chat/completions", json=body, headers={hdr: fmt.format(BOB_KEY)})
    assert r.status_code == 200, r.text
    rec = _only(upstream, marker)
    assert header(rec, "authorization") == f"Bearer {UPSTREAM_KEY}"
    for h in ("x-api-key", "api-key", "x-goog-api-key"):
        assert header(rec, h) is None, f"{h} forwarded upstream"
    assert_no_gateway_key([rec])


def test_passthrough_requires_gateway_key(http, upstream, marker):
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": f"nokey {marker}"}]}
    r = http.post("/providers/openai/v1/chat/completions", json=body)
    assert r.status_code == 401
    assert_error_envelope(r.json(), type_="invalid_request_error", code="invalid_api_key")
    r = http.post(
        "/providers/openai/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}
    )
    assert r.status_code == 401, "the upstream key is not a gateway key"
    assert upstream.containing(marker) == []


def test_passthrough_upstream_error_kept(pt_client, upstream, marker):
    with pytest.raises(openai.RateLimitError) as ei:
        pt_client.chat.completions.create(
            model="gpt-upstream-error-429", messages=[{"role": "user", "content": f"limit {marker}"}]
        )
    rec = _only(upstream, marker)
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER
    assert ei.value.response.content == rec["response_body"]


def test_passthrough_unknown_provider(http):
    r = http.get("/providers/nosuchprovider/v1/models", headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 404
    assert_error_envelope(r.json())


def _raw_request(gateway, target: str) -> tuple[int, bytes]:
    """Send a request line verbatim (no client-side path normalisation)."""
    host, port = gateway.listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: {gateway.listen}\r\nAuthorization: Bearer {ALICE_KEY}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize(
    "target",
    [
        "/providers/openai/../../v1/models",
        "/providers/openai/v1/../../secret",
        "/providers/openai/v1/%2e%2e/%2e%2e/secret",
        "/providers/openai/v1/..%2f..%2fsecret",
    ],
)
def test_passthrough_traversal_rejected(gateway, upstream, target):
    before = upstream.count()
    status, data = _raw_request(gateway, target)
    assert status == 400, data[:300]
    assert upstream.since(before) == [], "a traversal request reached the upstream"
