"""Prometheus metrics on the metrics listener agree with the traffic and the usage returned."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from helpers import PRICE_IN, PRICE_OUT, PRICED_MODEL, mock_reply, parse_metrics, word_count
from mock_upstream import upstream_chat_reply


def scrape(gateway) -> list[tuple[str, dict, float]]:
    r = httpx.get(gateway.metrics_url + "/metrics", timeout=10)
    assert r.status_code == 200
    return parse_metrics(r.text)


def total(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (a value may be a tuple of options)."""
    out = 0.0
    for n, lab, v in samples:
        if n != name:
            continue
        ok = True
        for k, want in labels.items():
            options = want if isinstance(want, tuple) else (want,)
            if lab.get(k) not in options:
                ok = False
                break
        if ok:
            out += v
    return out


def wait_for(gateway, predicate, timeout: float = 10.0):
    """Metrics may be recorded just after the response ends (logging phase): poll briefly."""
    deadline = time.monotonic() + timeout
    samples = scrape(gateway)
    while not predicate(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(gateway)
    return samples


def test_metrics_endpoint_exposes_families(gateway, client):
    client.chat.completions.create(model="mock-families", messages=[{"role": "user", "content": "hi"}])
    text = httpx.get(gateway.metrics_url + "/metrics", timeout=10).text
    for family in (
        "ai_proxy_requests_total",
        "ai_proxy_request_duration_seconds",
        "ai_proxy_tokens_total",
    ):
        assert family in text, f"{family} missing from /metrics"


def test_requests_tokens_and_cost_for_mock(gateway, client, marker):
    before = scrape(gateway)
    usages = []
    for text in (f"first {marker}", f"second one {marker}"):
        r = client.chat.completions.create(model=PRICED_MODEL, messages=[{"role": "user", "content": text}])
        usages.append((r.usage.prompt_tokens, r.usage.completion_tokens))
    chunks = list(
        client.chat.completions.create(
            model=PRICED_MODEL,
            messages=[{"role": "user", "content": f"streamed three words {marker}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usages.append((chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens))
    # a stream without include_usage still counts tokens (the mock is deterministic: compute them)
    silent = f"silent stream {marker}"
    list(
        client.chat.completions.create(
            model=PRICED_MODEL, messages=[{"role": "user", "content": silent}], stream=True
        )
    )
    usages.append((word_count(silent), word_count(mock_reply(silent))))
    exp_in = sum(u[0] for u in usages)
    exp_out = sum(u[1] for u in usages)

    def delta(samples, name, **labels):
        return total(samples, name, **labels) - total(before, name, **labels)

    lab = {"provider": "mock", "model": PRICED_MODEL}
    after = wait_for(
        gateway,
        lambda s: delta(s, "ai_proxy_requests_total", **lab) >= 4
        and delta(s, "ai_proxy_tokens_total", type="output", **lab) >= exp_out,
    )
    assert delta(after, "ai_proxy_requests_total", status="200", **lab) == 4
    assert delta(after, "ai_proxy_requests_total", **lab) == 4
    assert delta(after, "ai_proxy_tokens_total", type="input", **lab) == exp_in
    assert delta(after, "ai_proxy_tokens_total", type="output", **lab) == exp_out
    assert delta(after, "ai_proxy_request_duration_seconds_count", **lab) == 4
    cost = delta(after, "ai_proxy_cost_usd_total", **lab)
    assert cost == pytest.approx((exp_in * PRICE_IN + exp_out * PRICE_OUT) / 1e6, rel=1e-6)


def test_openai_route_counts_tokens_for_hidden_usage(gateway, client, marker):
    """Stream without include_usage: the gateway still accounts the usage it asked upstream for."""
    before = scrape(gateway)
    user = f"count me {marker}"
    list(client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": user}], stream=True))
    lab = {"provider": "openai", "model": ("gpt-4", "gpt-4-0125-preview")}
    exp_in, exp_out = word_count(user), word_count(upstream_chat_reply(user))

    def delta(samples, name, **labels):
        return total(samples, name, **labels) - total(before, name, **labels)

    after = wait_for(gateway, lambda s: delta(s, "ai_proxy_tokens_total", type="output", **lab) >= exp_out)
    assert delta(after, "ai_proxy_requests_total", status="200", **lab) == 1
    assert delta(after, "ai_proxy_tokens_total", type="input", **lab) == exp_in
    assert delta(after, "ai_proxy_tokens_total", type="output", **lab) == exp_out


def test_error_status_label(gateway, client):
    before = scrape(gateway)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="mock-error-429", messages=[{"role": "user", "content": "x"}])
    # A name a pattern let through is labelled by the pattern (callers cannot add series).
    lab = {"provider": "mock", "model": "^mock-", "status": "429"}
    after = wait_for(
        gateway,
        lambda s: total(s, "ai_proxy_requests_total", **lab) > total(before, "ai_proxy_requests_total", **lab),
    )
    assert total(after, "ai_proxy_requests_total", **lab) - total(before, "ai_proxy_requests_total", **lab) == 1


def test_upstream_error_counts_provider_error(gateway, client):
    before = scrape(gateway)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-upstream-error-503", messages=[{"role": "user", "content": "x"}])
    after = wait_for(
        gateway,
        lambda s: total(s, "ai_proxy_provider_errors_total", provider="openai")
        > total(before, "ai_proxy_provider_errors_total", provider="openai"),
    )
    assert total(after, "ai_proxy_provider_errors_total", provider="openai") > total(
        before, "ai_proxy_provider_errors_total", provider="openai"
    )
    lab = {"provider": "openai", "status": "503"}
    assert total(after, "ai_proxy_requests_total", **lab) - total(before, "ai_proxy_requests_total", **lab) == 1


def test_openai_compat_requests_by_target_provider(gateway, client):
    before = scrape(gateway)
    client.chat.completions.create(model="mock-target", messages=[{"role": "user", "content": "x"}])
    name = "ai_proxy_openai_requests_total"
    after = wait_for(gateway, lambda s: total(s, name, target_provider="mock") > total(before, name, target_provider="mock"))
    assert total(after, name, target_provider="mock") - total(before, name, target_provider="mock") == 1
