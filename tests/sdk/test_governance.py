"""Governance through the official openai SDK: store keys made with `switchyard keys create`,
scope refusals (PermissionDeniedError), rate limits and spent budgets (RateLimitError, with
OpenAI's codes and headers), revocation, and `switchyard usage` counting every request after
a graceful stop."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest

from helpers import Gateway, free_port, gateway_bin


def cli(store: str, *args: str) -> str:
    out = subprocess.run(
        [str(gateway_bin()), *args, "--store", store],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


def create_key(store: str, *args: str) -> tuple[str, str]:
    v = json.loads(cli(store, "keys", "create", "--json", *args))
    return v["id"], v["key"]


@pytest.fixture(scope="module")
def gov(tmp_path_factory):
    work = tmp_path_factory.mktemp("governance")
    store = f"sqlite:{work}/switchyard.db"
    listen, mlisten = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = work / "gov.yaml"
    cfg.write_text(
        f"""\
server:
  listen: "{listen}"
  metrics_listen: "{mlisten}"
  threads: 2
  grace_period_seconds: 5
  pid_file: "{work}/pid"
  upgrade_sock: "{work}/upgrade.sock"
auth:
  store: "{store}"
  refresh_seconds: 1
audit:
  file: "{work}/audit.jsonl"
providers:
  mock: {{}}
routing:
  patterns:
    - {{pattern: "^mock-", default_provider: mock}}
    - {{pattern: "^other-", default_provider: mock}}
pricing:
  mock-priced: {{input: 100000, output: 100000}}
"""
    )
    # Keys exist before the gateway starts (loaded at start) and after (refreshed).
    keys = {
        "limited": create_key(store, "--user", "sdk-rl", "--rpm", "2"),
        "scoped": create_key(store, "--user", "sdk-scope", "--models", "mock-*"),
    }
    gw = Gateway(binary=gateway_bin(), config=cfg, workdir=work, listen=listen, metrics_listen=mlisten, name="gov").start()
    keys["budget"] = create_key(store, "--user", "sdk-budget", "--budget-usd", "0.5", "--period", "day")
    keys["revoked"] = create_key(store, "--user", "sdk-revoke")
    time.sleep(2.5)  # two refreshes
    yield gw, store, keys, work
    gw.stop()


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gw.url + "/v1", max_retries=0, timeout=20)


def chat(c: openai.OpenAI, model: str = "mock-gov"):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}])


def test_rate_limit_is_a_rate_limit_error_with_openai_headers(gov):
    gw, _, keys, _ = gov
    s = time.time() % 60
    if s > 56:
        time.sleep(61 - s)
    c = sdk(gw, keys["limited"][1])
    raw = c.chat.completions.with_raw_response.create(model="mock-gov", messages=[{"role": "user", "content": "a"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    chat(c)
    with pytest.raises(openai.RateLimitError) as e:
        chat(c)
    assert e.value.code == "rate_limit_exceeded"
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_scope_refusal_is_permission_denied(gov):
    gw, _, keys, _ = gov
    c = sdk(gw, keys["scoped"][1])
    assert chat(c, "mock-fine").choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(c, "other-model")
    assert e.value.status_code == 403
    assert "other-model" in e.value.message


def test_spent_budget_is_insufficient_quota(gov):
    gw, _, keys, _ = gov
    c = sdk(gw, keys["budget"][1])
    chat(c, "mock-priced")  # about 1 USD: over the 0.5 budget once settled
    time.sleep(0.2)
    with pytest.raises(openai.RateLimitError) as e:
        chat(c, "mock-priced")
    assert e.value.code == "insufficient_quota"
    assert "budget" in e.value.message


def test_revocation_takes_effect_within_seconds(gov):
    gw, store, keys, _ = gov
    kid, key = keys["revoked"]
    c = sdk(gw, key)
    chat(c)
    cli(store, "keys", "revoke", kid)
    deadline = time.time() + 5
    while True:
        try:
            chat(c)
        except openai.AuthenticationError:
            break
        assert time.time() < deadline, "revoked key still accepted after 5 s"
        time.sleep(0.2)


def test_usage_report_counts_every_request_after_sigterm(gov):
    gw, store, keys, work = gov
    c = sdk(gw, keys["scoped"][1])
    for _ in range(25):
        chat(c)
    assert gw.stop() == 0
    report = json.loads(cli(store, "usage", "--by", "user", "--since", "1h", "--format", "json"))
    by_user = {r["user"]: r for r in report["data"]}
    # 1 + 1 refused (403) + 25 above.
    assert by_user["sdk-scope"]["requests"] == 27, report
    assert by_user["sdk-budget"]["cost_usd"] > 0.5
    csv = cli(store, "usage", "--by", "model", "--since", "1h", "--format", "csv")
    assert csv.startswith("model,requests,input_tokens,output_tokens,cost_usd\n")
    # Every request's own record, read back from the store's usage blocks.
    records = [json.loads(l) for l in cli(store, "usage", "--records", "--since", "1h").splitlines()]
    scoped = [r for r in records if r["user"] == "sdk-scope"]
    assert len(scoped) == 27, scoped
    assert {r["key_id"] for r in scoped} == {keys["scoped"][0]}
    assert sorted(r["status"] for r in scoped) == [200] * 26 + [403]
    assert all(r["request_id"] and r["route"] == "chat_completions" for r in scoped)
    assert not any(k[1] in json.dumps(records) for k in keys.values())
    audit = (work / "audit.jsonl").read_text().splitlines()
    assert any(json.loads(l)["audit"] == "auth_failure" for l in audit)
    for k in keys.values():
        assert k[1] not in (work / "audit.jsonl").read_text()
