"""Session fixtures: a mock OpenAI upstream, a generated gateway config and a running gateway.

Environment:
  SWITCHYARD_BIN            gateway binary (default: <repo>/target/debug/switchyard)
  SWITCHYARD_START_TIMEOUT  seconds to wait for GET /health (default 60)
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from helpers import ALICE_KEY, UPSTREAM_KEY, Gateway, _gateways, free_port, gateway_bin, render_config
from mock_upstream import MockUpstream

# tests/sdk/clients (LangChain, LlamaIndex, litellm, ...) needs its own venv (see its conftest.py);
# tests/run.sh runs it separately. Collected here only from a venv that has those libraries.
collect_ignore = [] if importlib.util.find_spec("langchain_openai") else ["clients"]

# Everything here talks to loopback: never route it through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get(_var, "")) if x)


@pytest.fixture(scope="module")
def native():
    """The native provider mocks (tests/sdk/native/) for one module of provider-table tests."""
    from provider_table import NativeServer  # needs the SDK venv's cryptography: imported lazily

    s = NativeServer()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def upstream():
    up = MockUpstream(UPSTREAM_KEY).start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("switchyard")


@pytest.fixture(scope="session")
def gateway(upstream, workdir):
    listen = f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    cfg = workdir / "gateway.yaml"
    cfg.write_text(render_config(listen=listen, metrics_listen=metrics, upstream_url=upstream.url))
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics)
    try:
        gw.start()
    except pytest.fail.Exception as e:
        # Every test needs it: stop here with one clear message instead of one error per test.
        pytest.exit(f"cannot start the gateway under test: {e}", returncode=3)
    yield gw
    gw.stop()
    print(f"\ngateway logs kept in {workdir}")


@pytest.fixture(scope="session")
def start_gateway(upstream, workdir):
    """Factory for extra gateway instances (own ports and config); stopped at session end."""
    started: list[Gateway] = []

    def _start(name: str, **overrides) -> Gateway:
        listen = f"127.0.0.1:{free_port()}"
        metrics = f"127.0.0.1:{free_port()}"
        cfg = workdir / f"{name}.yaml"
        overrides.setdefault("upstream_url", upstream.url)
        cfg.write_text(render_config(listen=listen, metrics_listen=metrics, **overrides))
        gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name=name).start()
        started.append(gw)
        return gw

    yield _start
    for gw in started:
        gw.stop()


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


@pytest.fixture
def http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=20) as c:
        yield c


@pytest.fixture
def marker() -> str:
    """A unique single word to find this test's requests in the upstream log."""
    return "m" + uuid.uuid4().hex[:16]


# ---------------------------------------------------------------------------- failure output


_setup_logs_shown = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the gateway's log tails to every failing test (once for repeated setup errors)."""
    global _setup_logs_shown
    outcome = yield
    rep = outcome.get_result()
    if not (rep.failed and _gateways):
        return
    if not {"gateway", "start_gateway"} & set(getattr(item, "fixturenames", ())):
        return
    if rep.when == "setup":
        if _setup_logs_shown:
            return
        _setup_logs_shown = True
    for gw in _gateways:
        rep.sections.append((f"{gw.name} logs", gw.logs(60)))


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 and _gateways:
        for gw in _gateways:
            print(f"\n{gw.name} logs: {gw.stderr_path} {gw.stdout_path}")
