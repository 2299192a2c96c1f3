"""The official Node `openai` package (tests/sdk/node, pinned by its package-lock.json) against
the gateway: chat, a stream with usage, embeddings, models and a typed 401.

tests/run.sh installs it with `npm ci` into target/sdk-node; SWITCHYARD_NODE_MODULES points
elsewhere. Missing Node.js or packages fail the test (it never skips silently)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from helpers import ALICE_KEY, REPO_ROOT, mock_reply

SCRIPT = REPO_ROOT / "tests" / "sdk" / "node" / "openai_client.cjs"


def node_modules():
    return os.environ.get("SWITCHYARD_NODE_MODULES", str(REPO_ROOT / "target" / "sdk-node" / "node_modules"))


def test_node_openai_package(gateway, marker):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: tests/run.sh installs Node.js (nodejs, npm)", pytrace=False)
    if not os.path.isdir(os.path.join(node_modules(), "openai")):
        pytest.fail(f"the openai npm package is not in {node_modules()}: run tests/run.sh", pytrace=False)
    env = dict(os.environ, NODE_PATH=node_modules())
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(var, None)
    p = subprocess.run(
        [node, str(SCRIPT), gateway.url + "/v1", ALICE_KEY, marker],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["chat"]["content"] == mock_reply(f"hello {marker}")
    assert out["chat"]["model"] == "mock-fast" and out["chat"]["usage"]["total_tokens"] > 0
    assert len(out["stream"]["pieces"]) > 1
    assert "".join(out["stream"]["pieces"]) == mock_reply(f"stream {marker}")
    assert out["stream"]["usage"]["completion_tokens"] > 0
    assert out["embeddings"] == [out["embeddings"][0]] * 2 and out["embeddings"][0] > 0
    assert "gpt-4" in out["models"]
    assert out["error"] == {"status": 401, "type": "invalid_request_error", "code": "invalid_api_key", "isAuth": True}
