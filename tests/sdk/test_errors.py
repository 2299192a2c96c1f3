"""Typed errors: the gateway's error envelope and status codes map onto the SDK's exceptions."""

from __future__ import annotations

import json

import openai
import pytest

from helpers import (
    ALICE_KEY,
    MAX_BODY,
    Gateway,
    assert_error_envelope,
    free_port,
    gateway_bin,
    mock_reply,
    render_config,
)
from mock_upstream import UPSTREAM_RETRY_AFTER

AUTH = {"Authorization": f"Bearer {ALICE_KEY}"}
MSG = [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------------------- 401


def test_bad_key_authentication_error(gateway, upstream, marker):
    c = openai.OpenAI(api_key="sk-not-a-gateway-key", base_url=gateway.url + "/v1", max_retries=0, timeout=20)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"bad key {marker}"}])
    assert ei.value.status_code == 401
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error", code="invalid_api_key")
    assert ei.value.response.json()["error"]["param"] is None
    assert upstream.containing(marker) == []


def test_missing_key(http, upstream, marker):
    r = http.post(
        "/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": f"nokey {marker}"}]}
    )
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    assert_error_envelope(r.json(), type_="invalid_request_error", code="invalid_api_key")
    assert upstream.containing(marker) == []


def test_missing_key_sdk(gateway):
    c = openai.OpenAI(api_key="placeholder", base_url=gateway.url + "/v1", max_retries=0, timeout=20)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.models.list(extra_headers={"Authorization": openai.Omit()})
    assert "authorization" not in ei.value.response.request.headers
    assert_error_envelope(ei.value.response.json(), code="invalid_api_key")


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/v1/models"), ("GET", "/v1/models/gpt-4"), ("POST", "/v1/embeddings"), ("POST", "/v1/completions")],
)
def test_every_api_route_requires_key(http, method, path):
    r = http.request(method, path, json={"model": "mock-x", "input": "x", "prompt": "x"}, headers={"X-API-Key": "nope"})
    assert r.status_code == 401
    assert_error_envelope(r.json(), code="invalid_api_key")


# ---------------------------------------------------------------------------- 404


def test_unknown_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="no-such-model-xyz", messages=MSG)
    assert ei.value.status_code == 404
    assert_error_envelope(ei.value.response.json(), code="model_not_found")


@pytest.mark.parametrize("endpoint", ["embeddings", "completions"])
def test_unknown_model_not_found_other_endpoints(client, endpoint):
    with pytest.raises(openai.NotFoundError) as ei:
        if endpoint == "embeddings":
            client.embeddings.create(model="no-such-embedder", input="x")
        else:
            client.completions.create(model="no-such-instruct", prompt="x")
    assert_error_envelope(ei.value.response.json(), code="model_not_found")


def test_unknown_route_sdk(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.post("/no/such/route", cast_to=object, body={"model": "mock-x"})
    assert ei.value.status_code == 404
    assert_error_envelope(ei.value.response.json())


def test_unknown_route_raw(http):
    r = http.get("/v2/nothing-here", headers=AUTH)
    assert r.status_code == 404
    assert_error_envelope(r.json())


# ---------------------------------------------------------------------------- 400


def test_malformed_json(http):
    r = http.post(
        "/v1/chat/completions",
        content=b'{"model": "mock-x", "messages": [',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert_error_envelope(r.json(), type_="invalid_request_error")


def test_json_not_an_object(http):
    r = http.post("/v1/chat/completions", content=b"[1,2,3]", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert_error_envelope(r.json(), type_="invalid_request_error")


def test_missing_messages(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", cast_to=object, body={"model": "mock-x"})
    assert ei.value.status_code == 400
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


def test_missing_model(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", cast_to=object, body={"messages": MSG})
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


@pytest.mark.parametrize("bad_model", [123, None, ["mock-x"], {"name": "mock-x"}])
def test_wrong_typed_model(client, bad_model):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", cast_to=object, body={"model": bad_model, "messages": MSG})
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


def test_wrong_typed_messages(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", cast_to=object, body={"model": "mock-x", "messages": "hello"})
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


def test_embeddings_missing_input(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/embeddings", cast_to=object, body={"model": "mock-embed"})
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


def test_completions_missing_prompt(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/completions", cast_to=object, body={"model": "mock-instruct"})
    assert_error_envelope(ei.value.response.json(), type_="invalid_request_error")


# ---------------------------------------------------------------------------- 405 / 413


def test_get_chat_completions_405(http):
    r = http.get("/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405
    assert_error_envelope(r.json())


def test_oversize_body_413(http, upstream, marker):
    filler = "x" * (MAX_BODY + 4096)
    body = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": f"{marker} {filler}"}]}).encode()
    assert len(body) > MAX_BODY
    r = http.post("/v1/chat/completions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert_error_envelope(r.json())
    assert upstream.containing(marker) == []


@pytest.mark.parametrize("key", [ALICE_KEY, "sk-wrong-key-123"])
def test_urllib_uploading_11_mib_reads_the_early_refusal(gateway, key):
    # urllib sends the whole body before it reads the answer. The gateway answers 413 (or 401)
    # from the header alone; its lingering close drains the upload, so urllib reads the
    # envelope instead of failing with a broken pipe or a reset.
    import urllib.error
    import urllib.request

    body = b"x" * (11 * 1024 * 1024)
    req = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    expected = 413 if key == ALICE_KEY else 401
    assert e.value.code == expected
    assert_error_envelope(json.loads(e.value.read()))


def test_body_just_under_limit_ok(http):
    # a body just under the limit is accepted
    content = "z" * (MAX_BODY - 200)
    body = json.dumps({"model": "mock-small", "messages": [{"role": "user", "content": content}]}).encode()
    assert len(body) < MAX_BODY
    r = http.post("/v1/chat/completions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:300]


# ---------------------------------------------------------------------------- rate limits / upstream errors


def test_upstream_429_rate_limit_error_keeps_retry_after(client, upstream, marker):
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(
            model="gpt-upstream-error-429", messages=[{"role": "user", "content": f"rl {marker}"}]
        )
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER
    assert_error_envelope(ei.value.response.json())
    assert len(upstream.containing(marker)) == 1, "max_retries=0: exactly one upstream attempt expected"


def test_global_fallback_never_masks_the_primarys_429(upstream, workdir, marker):
    """Issue 20.1: `routing.fallback.providers: [bedrock, anthropic]` must not receive a model
    only OpenAI knows; the SDK sees the primary's 429 (RateLimitError with its Retry-After),
    not a BadRequestError earned by sending `gpt-4o` to Bedrock."""
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    text = render_config(listen=listen, metrics_listen=metrics, upstream_url=upstream.url)
    text = text.replace(
        "  mock: {}\n",
        "  mock: {}\n"
        f"  bedrock:\n    region: us-east-1\n    endpoint: \"{upstream.url}\"\n"
        "    auth: {method: static, config: {access_key_id: AKIDEXAMPLE, secret_access_key: x}}\n"
        f"  anthropic:\n    endpoint: \"{upstream.url}\"\n"
        "    auth: {method: api_key, config: {api_key: sk-ant-x}}\n",
    )
    text = text.replace(
        "model_mappings:\n",
        "model_mappings:\n  gpt-4o-upstream-error-429: {providers: {openai: {}}}\n",
    )
    text = text.replace(
        "fallback: {enabled: false, providers: [openai]}",
        "fallback: {enabled: true, providers: [bedrock, anthropic]}",
    )
    cfg = workdir / "fallback.yaml"
    cfg.write_text(text)
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="fallback").start()
    try:
        c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=30)
        with pytest.raises(openai.RateLimitError) as ei:
            c.chat.completions.create(
                model="gpt-4o-upstream-error-429", messages=[{"role": "user", "content": f"fb {marker}"}]
            )
        assert ei.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER
        assert ei.value.response.headers.get("x-switchyard-provider") == "openai"
        assert_error_envelope(ei.value.response.json())
        assert len(upstream.containing(marker)) == 1, "the model must not go to bedrock or anthropic"
    finally:
        gw.stop()


def test_upstream_429_stream_request(client, upstream, marker):
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(
            model="gpt-upstream-error-429", messages=[{"role": "user", "content": f"rls {marker}"}], stream=True
        )
    assert ei.value.response.headers.get("retry-after") == UPSTREAM_RETRY_AFTER


def test_upstream_500_internal_server_error(client, upstream, marker):
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(
            model="gpt-upstream-error-503", messages=[{"role": "user", "content": f"5xx {marker}"}]
        )
    assert ei.value.status_code == 503
    assert_error_envelope(ei.value.response.json())


def test_mock_error_429(client):
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="mock-error-429", messages=MSG)
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == "1"
    assert_error_envelope(ei.value.response.json())


def test_mock_error_500(client):
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="mock-error-500", messages=MSG)
    assert ei.value.status_code == 500
    assert_error_envelope(ei.value.response.json())


def test_errors_are_json(http):
    r = http.post("/v1/chat/completions", json={"model": "mock-error-500", "messages": MSG}, headers=AUTH)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json(), dict)


# ---------------------------------------------------------------------------- 502


def test_upstream_unreachable_502(start_gateway):
    gw = start_gateway("unreachable", upstream_url=f"http://127.0.0.1:{free_port()}")
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as ei:
        c.chat.completions.create(model="gpt-4", messages=MSG)
    assert ei.value.status_code == 502
    assert_error_envelope(ei.value.response.json())
    with pytest.raises(openai.InternalServerError) as ei:
        c.chat.completions.create(model="gpt-4", messages=MSG, stream=True)
    assert ei.value.status_code == 502
    # passthrough too
    pt = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/providers/openai/v1", max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as ei:
        pt.models.list()
    assert ei.value.status_code == 502
    # the mock provider is unaffected
    r = c.chat.completions.create(model="mock-still-fine", messages=MSG)
    assert r.choices[0].message.content == mock_reply("hi")
