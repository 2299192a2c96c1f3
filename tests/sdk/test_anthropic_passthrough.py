"""Anthropic native passthrough with the official `anthropic` SDK.

`Anthropic(base_url="http://GW/providers/anthropic", api_key=<gateway key>)` talks to a mock
Anthropic Messages API (standard library only) that follows Anthropic's documented wire
format and checks the credential like api.anthropic.com: `x-api-key` must be the key the
gateway is configured with (401 `authentication_error` otherwise) and `anthropic-version`
must be present (400 otherwise). The gateway key must never reach the mock.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
from anthropic._constants import ANTHROPIC_API_VERSION as SDK_ANTHROPIC_VERSION
import pytest

from helpers import ALICE_KEY, BOB_KEY, Gateway, assert_no_gateway_key, free_port, gateway_bin, parse_metrics

ANTHROPIC_KEY = "sk-ant-api03-upstream-" + "d4" * 10
MODEL = "claude-3-5-sonnet-20241022"
RETRY_AFTER = "13"


def reply_text(user_text: str) -> str:
    return "Claude mock says: " + user_text


def _user_text(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return " ".join(b.get("text", "") for b in c or [] if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "MockAnthropic"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, rec: dict, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", f"req_mock_{rec['n']}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        rec["status"], rec["response_body"] = status, body

    def do_POST(self):
        body = self._read_body()
        with self.server.lock:
            rec = {
                "n": len(self.server.requests) + 1,
                "method": "POST",
                "path": self.path,
                "headers": [(k.lower(), v) for k, v in self.headers.items()],
                "body": body,
            }
            self.server.requests.append(rec)
        # Credential checks, as Anthropic does them.
        if self.headers.get("x-api-key") != ANTHROPIC_KEY or self.headers.get("authorization") is not None:
            rec["verdict"] = "rejected"
            return self._send(rec, 401, _error("authentication_error", "invalid x-api-key"))
        if not self.headers.get("anthropic-version"):
            rec["verdict"] = "rejected"
            return self._send(rec, 400, _error("invalid_request_error", "anthropic-version: header is required"))
        rec["verdict"] = "accepted"
        if self.path != "/v1/messages":
            return self._send(rec, 404, _error("not_found_error", "Not found"))
        try:
            req = json.loads(body)
        except ValueError:
            return self._send(rec, 400, _error("invalid_request_error", "invalid JSON"))
        if str(req.get("model", "")).endswith("error-429"):
            return self._send(
                rec,
                429,
                _error("rate_limit_error", "This request would exceed your rate limit."),
                {"retry-after": RETRY_AFTER},
            )
        text = reply_text(_user_text(req))
        words = text.split(" ")
        input_tokens = len(_user_text(req).split())
        if req.get("stream"):
            return self._stream(rec, words, input_tokens)
        msg = {
            "id": f"msg_mock{rec['n']:04d}",
            "type": "message",
            "role": "assistant",
            "model": req.get("model", MODEL),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": len(words),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        self._send(rec, 200, json.dumps(msg).encode())

    def _stream(self, rec: dict, words: list[str], input_tokens: int):
        events = [
            {"type": "message_start", "message": {"id": f"msg_mock{rec['n']:04d}", "type": "message",
             "role": "assistant", "model": MODEL, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                       "cache_read_input_tokens": 0, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
        ]
        for i, w in enumerate(words):
            events.append({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}})
        events += [
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": len(words)}},
            {"type": "message_stop"},
        ]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", f"req_mock_{rec['n']}")
        self.end_headers()
        sent = b""
        for e in events:
            piece = f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n".encode()
            # Split each event in two so network boundaries fall mid-event.
            for part in (piece[: len(piece) // 2], piece[len(piece) // 2 :]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            sent += piece
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        rec["status"], rec["response_body"] = 200, sent


class MockAnthropic(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def containing(self, marker: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if marker.encode() in r["body"]]


def header(rec: dict, name: str):
    vals = [v for k, v in rec["headers"] if k == name]
    return vals[0] if vals else None


def _config(listen: str, metrics: str, upstream: str) -> str:
    return f"""\
server:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  grace_period_seconds: 1
auth:
  keys:
    - {{user: alice, key: "{ALICE_KEY}"}}
    - {{user: bob, key: "{BOB_KEY}"}}
providers:
  anthropic:
    endpoint: "{upstream}"
    auth:
      method: api_key
      config:
        api_key: "{ANTHROPIC_KEY}"
"""


@pytest.fixture(scope="module")
def mock():
    m = MockAnthropic()
    t = threading.Thread(target=m.serve_forever, daemon=True)
    t.start()
    yield m
    m.shutdown()


@pytest.fixture(scope="module")
def gw(mock, workdir):
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = workdir / "anthropic.yaml"
    cfg.write_text(_config(listen, metrics, mock.url))
    g = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="gateway-anthropic").start()
    yield g
    g.stop()


@pytest.fixture
def sdk(gw):
    c = anthropic.Anthropic(base_url=gw.url + "/providers/anthropic", api_key=ALICE_KEY, max_retries=0, timeout=20)
    yield c
    c.close()


def _only(mock: MockAnthropic, marker: str) -> dict:
    recs = mock.containing(marker)
    assert len(recs) == 1, f"expected one upstream request for {marker}, got {len(recs)}"
    return recs[0]


def test_messages_create(sdk, mock, marker):
    user = f"Hello Claude {marker}"
    msg = sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": user}])
    assert msg.content[0].text == reply_text(user)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 3 and msg.usage.output_tokens == len(reply_text(user).split(" "))
    rec = _only(mock, marker)
    assert rec["verdict"] == "accepted"
    assert rec["path"] == "/v1/messages"
    assert header(rec, "x-api-key") == ANTHROPIC_KEY
    assert header(rec, "authorization") is None
    # the SDK sends its own anthropic-version: the gateway keeps it (adds one only when missing)
    assert [v for k, v in rec["headers"] if k == "anthropic-version"] == [SDK_ANTHROPIC_VERSION]
    assert_no_gateway_key([rec])


def test_messages_stream_text_stream(sdk, mock, marker):
    user = f"Stream to me {marker}"
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": user}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply_text(user)
    assert final.content[0].text == text
    assert final.usage.output_tokens == len(text.split(" "))
    assert final.usage.input_tokens == 4
    rec = _only(mock, marker)
    assert header(rec, "x-api-key") == ANTHROPIC_KEY
    assert_no_gateway_key([rec])


def test_stream_bytes_are_identical(gw, mock, marker):
    sent = json.dumps(
        {"model": MODEL, "max_tokens": 32, "stream": True, "messages": [{"role": "user", "content": f"raw {marker}"}]}
    ).encode()
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST",
            gw.url + "/providers/anthropic/v1/messages",
            content=sent,
            headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            got = r.read()
    rec = _only(mock, marker)
    assert rec["body"] == sent
    assert got == rec["response_body"], "SSE bytes differ from what the upstream sent"
    names = [ln[len("event: "):] for ln in got.decode().splitlines() if ln.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]


def test_beta_and_other_headers_pass_through(sdk, mock, marker):
    sdk.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=[{"role": "user", "content": f"beta {marker}"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "x-trace": "t-1"},
    )
    rec = _only(mock, marker)
    assert header(rec, "anthropic-beta") == "prompt-caching-2024-07-31"
    assert header(rec, "x-trace") == "t-1"


def test_anthropic_version_added_only_when_missing(gw, mock, marker):
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": f"nover {marker}"}]}
    r = httpx.post(gw.url + "/providers/anthropic/v1/messages", json=body, headers={"x-api-key": ALICE_KEY}, timeout=20)
    assert r.status_code == 200, r.text
    assert header(_only(mock, marker), "anthropic-version") == "2023-06-01"
    body["messages"][0]["content"] = f"withver {marker}x"
    r = httpx.post(
        gw.url + "/providers/anthropic/v1/messages",
        json=body,
        headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-01-01"},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    rec = _only(mock, f"{marker}x")
    assert [v for k, v in rec["headers"] if k == "anthropic-version"] == ["2023-01-01"]


def test_rate_limit_error_is_the_sdk_error(sdk, mock, marker):
    with pytest.raises(anthropic.RateLimitError) as ei:
        sdk.messages.create(
            model="claude-error-429", max_tokens=8, messages=[{"role": "user", "content": f"limit {marker}"}]
        )
    rec = _only(mock, marker)
    assert ei.value.status_code == 429
    assert ei.value.response.headers.get("retry-after") == RETRY_AFTER
    assert ei.value.response.content == rec["response_body"]
    assert ei.value.body["error"]["type"] == "rate_limit_error"


def test_wrong_gateway_key_never_reaches_anthropic(gw, mock, marker):
    c = anthropic.Anthropic(base_url=gw.url + "/providers/anthropic", api_key=ANTHROPIC_KEY, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": f"nokey {marker}"}])
    assert mock.containing(marker) == []


def test_usage_is_metered(gw, sdk, marker):
    def tokens():
        out = {}
        for name, labels, value in parse_metrics(httpx.get(gw.metrics_url + "/metrics", timeout=5).text):
            if name == "ai_proxy_tokens_total" and labels.get("provider") == "anthropic":
                out[labels["type"]] = out.get(labels["type"], 0) + value
        return out

    before = tokens()
    user = f"count these four {marker}"
    sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": user}])
    deadline = time.monotonic() + 3
    while True:
        after = tokens()
        if after.get("input", 0) - before.get("input", 0) == 4:
            break
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.05)
    assert after["output"] - before.get("output", 0) == len(reply_text(user).split(" "))
