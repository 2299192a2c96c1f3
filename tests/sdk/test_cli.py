"""The binary's CLI: `check -c FILE` and graceful stop on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import httpx
import pytest

from helpers import free_port, gateway_bin, render_config

PROBLEM_LINE = re.compile(r"^(server|auth|providers|model_mappings|routing|pricing)[\w.\[\]-]*: \S")


def _problem_lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in stderr.splitlines() if PROBLEM_LINE.match(ln.strip())]


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(gateway_bin()), "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _config(upstream_url: str = "http://127.0.0.1:9") -> str:
    return render_config(
        listen=f"127.0.0.1:{free_port()}", metrics_listen=f"127.0.0.1:{free_port()}", upstream_url=upstream_url
    )


def test_check_accepts_the_test_config(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(_config())
    r = _check(p)
    assert r.returncode == 0, r.stderr


def test_check_accepts_env_default_substitution(tmp_path):
    p = tmp_path / "env.yaml"
    p.write_text(_config().replace("threads: 2", "threads: ${SWITCHYARD_TEST_SURELY_UNSET_VAR:-2}"))
    r = _check(p)
    assert r.returncode == 0, r.stderr


def test_check_rejects_unknown_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(_config().replace("  threads: 2\n", "  threads: 2\n  bogus_setting: 1\n"))
    r = _check(p)
    assert r.returncode == 1
    assert any(ln.startswith("server.bogus_setting: ") for ln in _problem_lines(r.stderr)), r.stderr


def test_check_rejects_bad_regex(tmp_path):
    p = tmp_path / "badre.yaml"
    p.write_text(_config().replace('pattern: "^mock-"', 'pattern: "^mock-(["'))
    r = _check(p)
    assert r.returncode == 1
    assert any(ln.startswith("routing.patterns") for ln in _problem_lines(r.stderr)), r.stderr


BAD_CONFIGS = {
    "unknown_key": lambda c: c.replace("  threads: 2\n", "  threads: 2\n  bogus_setting: 1\n"),
    "bad_regex": lambda c: c.replace('pattern: "^mock-"', 'pattern: "^mock-(["'),
    "unknown_provider": lambda c: c.replace('default_provider: mock}', 'default_provider: nosuchprovider}'),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_one_line_per_problem(tmp_path, case):
    """Contract: exit 1 with one line per problem on stderr, `path.to.key: why`."""
    p = tmp_path / f"{case}.yaml"
    text = BAD_CONFIGS[case](_config())
    assert text != _config()
    p.write_text(text)
    r = _check(p)
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    problems = _problem_lines(r.stderr)
    assert problems, r.stderr
    # at most one header line (e.g. "<file>: configuration is invalid:") besides the problems
    others = [ln for ln in lines if not PROBLEM_LINE.match(ln.strip())]
    assert len(others) <= 1, f"stray lines (a problem spread over several lines?):\n{r.stderr}"


def test_sigterm_graceful_stop(tmp_path):
    listen = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "stop.yaml"
    cfg.write_text(
        render_config(listen=listen, metrics_listen=f"127.0.0.1:{free_port()}", upstream_url="http://127.0.0.1:9")
    )
    with open(tmp_path / "stop.stderr.log", "wb") as err, open(tmp_path / "stop.stdout.log", "wb") as out:
        proc = subprocess.Popen(
            [str(gateway_bin()), "serve", "-c", str(cfg)], stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "stop.stderr.log").read_text()[-3000:]
                try:
                    if httpx.get(f"http://{listen}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "gateway never became healthy"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            # grace_period_seconds is 1 in the test config
            rc = proc.wait(timeout=30)
            assert rc == 0, f"exit code {rc} after SIGTERM"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
