"""Tracing seen from the outside with the official clients: a request made with the openai SDK
gets its trace id in the configured response header and in the access-log line, and a
Prometheus-style OpenMetrics scrape, read by prometheus_client's strict OpenMetrics parser,
carries that trace id as an exemplar on the latency histogram. The spans themselves are
checked against a decoding OTLP receiver in tests/telemetry.rs."""

from __future__ import annotations

import json
import time

import httpx
import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from helpers import ALICE_KEY, free_port

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def test_trace_id_in_header_access_log_and_openmetrics_exemplar(start_gateway):
    # Nothing listens on the collector port: exports fail (logged), requests are unaffected.
    telemetry = (
        "telemetry:\n"
        f"  otlp_endpoint: \"http://127.0.0.1:{free_port()}\"\n"
        "  response_header: x-trace-id\n"
    )
    gw = start_gateway("tracing", extra=telemetry)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    raw = client.chat.completions.with_raw_response.create(
        model="mock-fast",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-trace-id"] == caller_trace

    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(gw.metrics_url + "/metrics", headers={"accept": OPENMETRICS}, timeout=10)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        families = list(text_string_to_metric_families(r.text))  # raises on invalid OpenMetrics
        exemplars = [
            s.exemplar
            for f in families
            if f.name == "ai_proxy_request_duration_seconds"
            for s in f.samples
            if s.exemplar is not None
        ]
        if any(e.labels.get("trace_id") == caller_trace for e in exemplars) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(e.labels.get("trace_id") == caller_trace for e in exemplars), r.text
    (requests,) = [f for f in families if f.name == "ai_proxy_requests"]
    assert requests.type == "counter"

    lines = [json.loads(l) for l in gw.stdout_path.read_text().splitlines() if l.startswith("{")]
    assert any(l.get("trace_id") == caller_trace for l in lines), lines[-3:]
