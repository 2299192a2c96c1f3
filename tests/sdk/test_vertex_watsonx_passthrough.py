"""Vertex AI and watsonx.ai native passthrough, driven with httpx over their documented HTTP APIs.

The gateway (the built binary) holds the provider credentials:

* vertex: a service-account JSON key. The gateway signs an RS256 JWT assertion and exchanges it
  at the key file's `token_uri` (Google's documented JWT bearer grant). The mock token endpoint
  here verifies the signature with the account's public key (RSA arithmetic in pure Python, no
  shared code with the gateway), checks the claims and issues short-lived tokens; the mock
  Vertex accepts only a currently valid token it issued.
* watsonx: an IBM Cloud API key exchanged at `{iam_endpoint}/identity/token`
  (`grant_type=urn:ibm:params:oauth:grant-type:apikey`); the mock IAM checks the key, the mock
  watsonx.ai accepts only valid IAM tokens.

Callers use their gateway key (`x-goog-api-key` as google-genai sends it, or a bearer). The
tests check byte-exact relay (SSE included), usage metering, that the gateway key never reaches
a provider, and that a tampered credential ends in a 503 without any upstream call.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from helpers import ALICE_KEY, Gateway, assert_no_gateway_key, free_port, gateway_bin, parse_metrics, sse_events

PROJECT = "switchyard-sdk-test"
LOCATION = "us-central1"
SA_EMAIL = "gateway@switchyard-sdk-test.iam.gserviceaccount.com"
SA_KEY_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GEMINI = "gemini-2.0-flash-001"
CLAUDE = "claude-3-5-sonnet-v2@20241022"
CLAUDE_ID = "claude-3-5-sonnet-v2-20241022"

IBM_API_KEY = "ibm-sdk-apikey-" + "d4" * 12
WX_PROJECT = "9b1c6f9e-4a52-4c1e-8f5e-0d2b7a3c4e51"
WX_VERSION = "2024-05-31"
GRANITE = "ibm/granite-3-8b-instruct"


# --------------------------------------------------------------------------- RSA (pure Python)

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _probable_prime(n: int) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        c = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if (c - 1) % e and _probable_prime(c):
            return c


class RsaKey:
    """An RSA key pair: PKCS#8 PEM export, PKCS#1 v1.5 SHA-256 signing and verification."""

    def __init__(self, bits: int = 2048, e: int = 65537):
        while True:
            p, q = _prime(bits // 2, e), _prime(bits // 2, e)
            n = p * q
            if p != q and n.bit_length() == bits:
                break
        self.n, self.e, self.p, self.q = n, e, p, q
        self.d = pow(e, -1, (p - 1) * (q - 1))
        self.k = (n.bit_length() + 7) // 8

    # DER
    @staticmethod
    def _len(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(b)]) + b

    @classmethod
    def _tlv(cls, tag: int, value: bytes) -> bytes:
        return bytes([tag]) + cls._len(len(value)) + value

    @classmethod
    def _int(cls, x: int) -> bytes:
        return cls._tlv(0x02, x.to_bytes(x.bit_length() // 8 + 1, "big"))

    def pkcs8_pem(self) -> str:
        d, p, q = self.d, self.p, self.q
        rsa_key = self._tlv(
            0x30,
            b"".join(self._int(x) for x in (0, self.n, self.e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))),
        )
        rsa_oid = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"
        info = self._tlv(0x30, self._int(0) + self._tlv(0x30, rsa_oid) + self._tlv(0x04, rsa_key))
        b64 = base64.b64encode(info).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"

    # EMSA-PKCS1-v1_5 with SHA-256 (RFC 8017 section 9.2)
    _SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")

    def _encoded(self, message: bytes) -> bytes:
        t = self._SHA256_PREFIX + hashlib.sha256(message).digest()
        return b"\x00\x01" + b"\xff" * (self.k - len(t) - 3) + b"\x00" + t

    def sign(self, message: bytes) -> bytes:
        m = int.from_bytes(self._encoded(message), "big")
        return pow(m, self.d, self.n).to_bytes(self.k, "big")

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != self.k:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        return pow(s, self.e, self.n).to_bytes(self.k, "big") == self._encoded(message)


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_the_pure_python_rsa_signs_and_verifies():
    key = RsaKey(bits=512)
    sig = key.sign(b"hello")
    assert key.verify(b"hello", sig)
    assert not key.verify(b"hellO", sig)
    tampered = bytearray(sig)
    tampered[5] ^= 1
    assert not key.verify(b"hello", bytes(tampered))
    assert key.pkcs8_pem().startswith("-----BEGIN PRIVATE KEY-----\nMII")


# --------------------------------------------------------------------------- mocks

_ids = itertools.count(1)


class TokenBook:
    """Tokens an identity mock issued and when each expires."""

    def __init__(self, prefix: str, lifetime: int):
        self.prefix, self.lifetime = prefix, lifetime
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}

    def issue(self) -> str:
        token = f"{self.prefix}{next(_ids)}.{secrets.token_hex(8)}"
        with self._lock:
            self._tokens[token] = time.monotonic() + self.lifetime
        return token

    def accepts(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            exp = self._tokens.get(authorization[len("Bearer ") :])
        return exp is not None and time.monotonic() < exp

    def issued(self) -> int:
        with self._lock:
            return len(self._tokens)


class Mock:
    """A threaded HTTP/1.1 mock: `route(handler, rec)` answers; every request is recorded with
    the exact response bytes sent."""

    def __init__(self, name: str, route):
        self.name, self.route = name, route
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body,
                    "response_body": b"",
                }
                with owner._lock:
                    owner.requests.append(rec)
                owner.route(self, rec)

            do_GET = do_POST = _handle

            def send_full(self, rec, status: int, body: bytes, content_type="application/json", extra=None):
                rec["status"], rec["response_body"] = status, body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def send_stream(self, rec, body: bytes, piece: int):
                rec["status"], rec["response_body"] = 200, body
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), piece):
                    chunk = body[i : i + piece]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.002)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name=name, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.requests)

    def last(self) -> dict:
        return self.snapshot()[-1]

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


def _hdr(rec: dict, name: str):
    return next((v for k, v in rec["headers"] if k == name.lower()), None)


def _form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))


def google_token_endpoint(public: RsaKey, lifetime: int) -> tuple[Mock, TokenBook, list[str]]:
    """Google's OAuth 2.0 token endpoint for one service account (JWT bearer grant, RFC 7523)."""
    book, rejected = TokenBook("ya29.sdk-", lifetime), []
    mock_ref: list[Mock] = []

    def check(rec) -> str | None:
        if rec["method"] != "POST" or rec["path"] != "/token":
            return "unexpected request"
        if _hdr(rec, "content-type") != "application/x-www-form-urlencoded":
            return "not form-encoded"
        form = _form(rec["body"])
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return "unsupported grant_type"
        parts = form.get("assertion", "").split(".")
        if len(parts) != 3:
            return "malformed assertion"
        header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
        if header.get("alg") != "RS256" or header.get("kid", SA_KEY_ID) != SA_KEY_ID:
            return "bad JWT header"
        if not public.verify(f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2])):
            return "Invalid JWT Signature."
        now = time.time()
        if claims.get("iss") != SA_EMAIL or claims.get("aud") != mock_ref[0].url + "/token":
            return "bad issuer or audience"
        if SCOPE not in str(claims.get("scope", "")).split(" "):
            return "missing scope"
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if abs(iat - now) > 60 or exp <= now or exp - iat > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes)"
        return None

    def route(h, rec):
        why = check(rec)
        if why:
            rejected.append(why)
            body = json.dumps({"error": "invalid_grant", "error_description": why}).encode()
            h.send_full(rec, 400, body)
            return
        body = {"access_token": book.issue(), "expires_in": book.lifetime, "token_type": "Bearer"}
        h.send_full(rec, 200, json.dumps(body).encode())

    mock = Mock("google-oauth", route)
    mock_ref.append(mock)
    return mock, book, rejected


def gemini_body() -> bytes:
    return (
        '{\n  "candidates": [{"content": {"role": "model", "parts": [{"text": "Salut \u00e0 toi"}]}, '
        '"finishReason": "STOP"}],\n  "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 4, '
        f'"totalTokenCount": 17}},\n  "modelVersion": "{GEMINI}", "responseId": "sdk-1"\n}}\n'
    ).encode()


def gemini_sse() -> bytes:
    out = b""
    for i, text in enumerate(["One", ", two", ", three \u2713"]):
        ev = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}], "modelVersion": GEMINI}
        if i == 2:
            ev["candidates"][0]["finishReason"] = "STOP"
            ev["usageMetadata"] = {"promptTokenCount": 19, "candidatesTokenCount": 6, "totalTokenCount": 25}
        out += b"data: " + json.dumps(ev, ensure_ascii=False).encode() + b"\r\n\r\n"
    return out


def claude_body() -> bytes:
    return json.dumps({
        "id": "msg_sdk_1", "type": "message", "role": "assistant", "model": CLAUDE_ID,
        "content": [{"type": "text", "text": "Hi from Claude"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 4},
    }).encode()


def claude_sse() -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_sdk_2", "type": "message",
            "role": "assistant", "model": CLAUDE_ID, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 14, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Streamed"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)


def vertex_upstream(book: TokenBook) -> Mock:
    base = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/"

    def error(h, rec, code, status, message):
        h.send_full(rec, code, json.dumps({"error": {"code": code, "message": message, "status": status}}).encode())

    def route(h, rec):
        if not book.accepts(_hdr(rec, "authorization")):
            return error(h, rec, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        path = rec["path"]
        if not path.startswith(base) or rec["method"] != "POST":
            return error(h, rec, 404, "NOT_FOUND", "not found")
        rest, body = path[len(base):], json.loads(rec["body"] or b"null")
        if rest == f"google/models/{GEMINI}:generateContent" and body.get("contents"):
            h.send_full(rec, 200, gemini_body())
        elif rest == f"google/models/{GEMINI}:streamGenerateContent?alt=sse":
            h.send_stream(rec, gemini_sse(), 17)
        elif rest in (f"anthropic/models/{CLAUDE}:rawPredict", f"anthropic/models/{CLAUDE}:streamRawPredict"):
            if body.get("anthropic_version") != "vertex-2023-10-16" or "model" in body:
                return error(h, rec, 400, "INVALID_ARGUMENT", "anthropic_version vertex-2023-10-16 required")
            if rest.endswith(":streamRawPredict"):
                h.send_stream(rec, claude_sse(), 29)
            else:
                h.send_full(rec, 200, claude_body())
        else:
            error(h, rec, 404, "NOT_FOUND", "unknown model or method")

    return Mock("vertex", route)


def iam_endpoint(api_key: str, lifetime: int) -> tuple[Mock, TokenBook, list[str]]:
    book, rejected = TokenBook("eyJhbGciOiJIUzI1NiJ9.sdk-iam-", lifetime), []

    def route(h, rec):
        form = _form(rec["body"])
        ok = (
            rec["method"] == "POST"
            and rec["path"] == "/identity/token"
            and _hdr(rec, "content-type") == "application/x-www-form-urlencoded"
            and form.get("grant_type") == "urn:ibm:params:oauth:grant-type:apikey"
        )
        if not ok or form.get("apikey") != api_key:
            rejected.append(rec["path"])
            body = {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found."}
            h.send_full(rec, 400, json.dumps(body).encode())
            return
        now = int(time.time())
        body = {"access_token": book.issue(), "refresh_token": "not_supported", "token_type": "Bearer",
                "expires_in": lifetime, "expiration": now + lifetime, "scope": "ibm openid"}
        h.send_full(rec, 200, json.dumps(body).encode())

    return Mock("ibm-iam", route), book, rejected


def wx_chat_body() -> bytes:
    return (
        f'{{"id": "chatcmpl-sdk-1", "model_id": "{GRANITE}", "model": "{GRANITE}", "created": 1735689600,\n'
        f' "choices": [{{"index": 0, "message": {{"role": "assistant", "content": "Hallo \u2013 watsonx"}}, '
        f'"finish_reason": "stop"}}],\n "usage": {{"completion_tokens": 6, "prompt_tokens": 22, "total_tokens": 28}}}}'
    ).encode()


def wx_chat_sse() -> bytes:
    def chunk(delta, finish=None, usage=None):
        c = {"id": "chatcmpl-sdk-2", "object": "chat.completion.chunk", "model_id": GRANITE, "model": GRANITE,
             "choices": [{"index": 0, "finish_reason": finish, "delta": delta}], "created": 1735689600}
        if usage:
            c["usage"] = usage
        return c

    events = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Eins"}), chunk({"content": ", zwei"}),
              chunk({}, "stop", {"completion_tokens": 3, "prompt_tokens": 18, "total_tokens": 21})]
    return b"".join(f"id: {i}\nevent: message\ndata: {json.dumps(e)}\n\n".encode() for i, e in enumerate(events, 1))


def watsonx_upstream(book: TokenBook) -> Mock:
    def error(h, rec, status, code, message):
        body = {"errors": [{"code": code, "message": message}], "trace": "t-1", "status_code": status}
        h.send_full(rec, status, json.dumps(body).encode())

    def route(h, rec):
        if not book.accepts(_hdr(rec, "authorization")):
            return error(h, rec, 401, "authentication_token_expired", "Failed to authenticate the request")
        path, _, query = rec["path"].partition("?")
        if not urllib.parse.parse_qs(query).get("version"):
            return error(h, rec, 400, "missing_version", "version is required")
        body = json.loads(rec["body"] or b"null")
        if body.get("project_id") != WX_PROJECT or body.get("model_id") != GRANITE:
            return error(h, rec, 400, "invalid_request_entity", "bad project_id or model_id")
        if path == "/ml/v1/text/chat":
            h.send_full(rec, 200, wx_chat_body())
        elif path == "/ml/v1/text/chat_stream":
            h.send_stream(rec, wx_chat_sse(), 13)
        else:
            error(h, rec, 404, "not_found", "unknown path")

    return Mock("watsonx", route)


# --------------------------------------------------------------------------- gateway


def _config(listen: str, metrics: str, vertex_url: str, key_file: str, wx_url: str, iam_url: str, api_key: str) -> str:
    return f"""\
server:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  grace_period_seconds: 1
auth:
  keys:
    - {{user: alice, key: "{ALICE_KEY}"}}
providers:
  vertex:
    project_id: {PROJECT}
    location: {LOCATION}
    endpoint: "{vertex_url}"
    auth:
      method: gcp_service_account
      config: {{credentials_file: "{key_file}"}}
  watsonx:
    endpoint: "{wx_url}"
    project_id: "{WX_PROJECT}"
    auth:
      method: ibm_iam
      config: {{api_key: "{api_key}", iam_endpoint: "{iam_url}"}}
"""


def _key_file(dir_, key: RsaKey, token_uri: str):
    path = dir_ / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": SA_KEY_ID,
        "private_key": key.pkcs8_pem(), "client_email": SA_EMAIL, "client_id": "1",
        "token_uri": token_uri, "universe_domain": "googleapis.com",
    }, indent=2))
    return path


def _start(workdir, name: str, key: RsaKey, public: RsaKey, api_key: str):
    google, gbook, grejected = google_token_endpoint(public, lifetime=3600)
    vertex = vertex_upstream(gbook)
    iam, ibook, irejected = iam_endpoint(IBM_API_KEY, lifetime=3600)
    wx = watsonx_upstream(ibook)
    key_file = _key_file(workdir, key, google.url + "/token")
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(_config(listen, metrics, vertex.url, str(key_file), wx.url, iam.url, api_key))
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name=name).start()
    return {"gw": gw, "google": google, "vertex": vertex, "iam": iam, "wx": wx,
            "google_rejected": grejected, "iam_rejected": irejected, "mocks": [google, vertex, iam, wx]}


@pytest.fixture(scope="module")
def sa_keys():
    return RsaKey(), RsaKey()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sa_keys):
    key, _ = sa_keys
    s = _start(tmp_path_factory.mktemp("vertex-watsonx"), "vertex-watsonx-gateway", key, key, IBM_API_KEY)
    yield s
    s["gw"].stop()
    for m in s["mocks"]:
        m.stop()


@pytest.fixture
def http(stack):
    with httpx.Client(base_url=stack["gw"].url, timeout=20) as c:
        yield c


def vertex_path(publisher: str, model: str, method: str) -> str:
    return f"/providers/vertex/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/{publisher}/models/{model}:{method}"


def _assert_clean(rec: dict, prefix: str):
    auth = _hdr(rec, "authorization") or ""
    assert auth.startswith("Bearer " + prefix), auth
    assert _hdr(rec, "x-goog-api-key") is None
    assert_no_gateway_key([rec])


# --------------------------------------------------------------------------- vertex


def test_vertex_generate_content(http, stack):
    req = {"contents": [{"role": "user", "parts": [{"text": "Bonjour"}]}], "generationConfig": {"maxOutputTokens": 32}}
    r = http.post(vertex_path("google", GEMINI, "generateContent"), json=req, headers={"x-goog-api-key": ALICE_KEY})
    assert r.status_code == 200, r.text
    rec = stack["vertex"].last()
    assert r.content == rec["response_body"] == gemini_body()
    assert r.json()["usageMetadata"]["candidatesTokenCount"] == 4
    assert json.loads(rec["body"]) == req
    _assert_clean(rec, "ya29.sdk-")
    assert stack["google_rejected"] == []


def test_vertex_stream_generate_content_sse(http, stack):
    req = {"contents": [{"role": "user", "parts": [{"text": "count"}]}]}
    with http.stream("POST", vertex_path("google", GEMINI, "streamGenerateContent") + "?alt=sse", json=req,
                     headers={"x-goog-api-key": ALICE_KEY}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_raw())
    assert raw == gemini_sse()
    events = [json.loads(e) for e in sse_events(raw)]
    text = "".join(p["text"] for e in events for c in e["candidates"] for p in c["content"]["parts"])
    assert text == "One, two, three \u2713"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 6
    rec = stack["vertex"].last()
    assert rec["path"].endswith(":streamGenerateContent?alt=sse")
    _assert_clean(rec, "ya29.sdk-")


def test_vertex_claude_raw_predict_and_stream(http, stack):
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post(vertex_path("anthropic", CLAUDE, "rawPredict"), json=body, headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200, r.text
    assert r.content == claude_body()
    assert r.json()["content"][0]["text"] == "Hi from Claude"
    _assert_clean(stack["vertex"].last(), "ya29.sdk-")

    with http.stream("POST", vertex_path("anthropic", CLAUDE, "streamRawPredict"), json={**body, "stream": True},
                     headers={"Authorization": f"Bearer {ALICE_KEY}"}) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
    assert raw == claude_sse()
    names = [ln[len("event: "):] for ln in raw.decode().splitlines() if ln.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    _assert_clean(stack["vertex"].last(), "ya29.sdk-")


# --------------------------------------------------------------------------- watsonx


def wx_request() -> dict:
    return {"model_id": GRANITE, "project_id": WX_PROJECT, "messages": [{"role": "user", "content": "Zähl"}],
            "max_tokens": 20}


def test_watsonx_chat(http, stack):
    r = http.post(f"/providers/watsonx/ml/v1/text/chat?version={WX_VERSION}", json=wx_request(),
                  headers={"Authorization": f"Bearer {ALICE_KEY}"})
    assert r.status_code == 200, r.text
    assert r.content == wx_chat_body()
    assert r.json()["usage"]["prompt_tokens"] == 22
    rec = stack["wx"].last()
    _assert_clean(rec, "eyJhbGciOiJIUzI1NiJ9.sdk-iam-")
    assert IBM_API_KEY not in json.dumps(rec["headers"])
    assert stack["iam_rejected"] == []


def test_watsonx_chat_stream(http, stack):
    with http.stream("POST", f"/providers/watsonx/ml/v1/text/chat_stream?version={WX_VERSION}", json=wx_request(),
                     headers={"x-api-key": ALICE_KEY, "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
    assert raw == wx_chat_sse()
    chunks = [json.loads(e) for e in sse_events(raw)]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Eins, zwei"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    _assert_clean(stack["wx"].last(), "eyJhbGciOiJIUzI1NiJ9.sdk-iam-")


def test_usage_is_metered_for_both(http, stack):
    test_vertex_generate_content(http, stack)
    test_watsonx_chat(http, stack)
    deadline = time.monotonic() + 3
    while True:
        samples = parse_metrics(httpx.get(stack["gw"].metrics_url + "/metrics").text)
        got = {(lbl.get("provider"), lbl.get("model"), lbl.get("type")): v
               for name, lbl, v in samples if name == "ai_proxy_tokens_total"}
        ok = got.get(("vertex", GEMINI, "output"), 0) >= 4 and got.get(("watsonx", GRANITE, "input"), 0) >= 22
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ok, got


# --------------------------------------------------------------------------- tampered credentials


def test_tampered_credentials_are_refused_upstream_and_reported(tmp_path_factory, sa_keys):
    key, impostor = sa_keys
    # The key file holds another private key than Google knows; the IBM key is unknown to IAM.
    s = _start(tmp_path_factory.mktemp("vertex-watsonx-bad"), "vertex-watsonx-bad-gateway", impostor, key,
               "ibm-sdk-apikey-revoked")
    try:
        with httpx.Client(base_url=s["gw"].url, timeout=20) as c:
            r = c.post(vertex_path("google", GEMINI, "generateContent"),
                       json={"contents": [{"parts": [{"text": "x"}]}]}, headers={"x-goog-api-key": ALICE_KEY})
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "provider_unavailable" and "Invalid JWT Signature" in err["message"], err
            r = c.post(f"/providers/watsonx/ml/v1/text/chat?version={WX_VERSION}", json=wx_request(),
                       headers={"Authorization": f"Bearer {ALICE_KEY}"})
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert "BXNIM0415E" in err["message"] and "revoked" not in err["message"], err
            ready = c.get("/ready").json()
            assert ready["providers"]["vertex"]["usable"] is False, ready
            assert ready["providers"]["watsonx"]["usable"] is False, ready
        assert "Invalid JWT Signature." in s["google_rejected"]
        assert s["iam_rejected"]
        assert s["vertex"].snapshot() == [] and s["wx"].snapshot() == []
    finally:
        s["gw"].stop()
        for m in s["mocks"]:
            m.stop()
