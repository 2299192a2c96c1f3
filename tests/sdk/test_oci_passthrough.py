"""OCI Generative AI native passthrough through the gateway, with httpx and OCI's documented
HTTP API (`POST /20231130/actions/chat`, non-stream and `isStream` SSE).

The caller sends only its gateway key; the gateway signs each request with the OCI API key
(HTTP signature version 1). The mock OCI service here verifies every signature on its own,
with the `cryptography` package and the public key, following OCI's "Request Signatures"
page: keyId `<tenancy>/<user>/<fingerprint>` (fingerprint: MD5 of the DER public key),
`rsa-sha256`, signed headers `date (request-target) host` plus `content-length content-type
x-content-sha256` for bodies, and answers 401 `NotAuthenticated` like OCI otherwise.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from helpers import ALICE_KEY, Gateway, assert_no_gateway_key, free_port, gateway_bin, parse_metrics

TENANCY = "ocid1.tenancy.oc1..aaaaaaaasdktenancy"
USER = "ocid1.user.oc1..aaaaaaaasdkuser"
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaasdkcompartment"
MODEL = "meta.llama-3.3-70b-instruct"
CHAT = "/20231130/actions/chat"
NOT_AUTHENTICATED = {
    "code": "NotAuthenticated",
    "message": "The required information to complete authentication was not provided or was incorrect.",
}


def fingerprint(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


# --------------------------------------------------------------------------- signature check


def verify_signature(method: str, path: str, headers: dict[str, str], body: bytes, public_key, key_id: str) -> str | None:
    """None when the request carries a valid OCI signature, else why not."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Signature "):
        return "no Signature authorization"
    params = {}
    for part in auth[len("Signature "):].split(","):
        k, _, v = part.partition("=")
        if not (v.startswith('"') and v.endswith('"')):
            return f"malformed parameter {k}"
        params[k.strip()] = v[1:-1]
    if params.get("version") != "1" or params.get("algorithm") != "rsa-sha256":
        return "wrong version or algorithm"
    if params.get("keyId") != key_id:
        return "unknown keyId"
    signed = params.get("headers", "").split(" ")
    required = ["date", "(request-target)", "host"]
    if method in ("POST", "PUT", "PATCH"):
        required += ["content-length", "content-type", "x-content-sha256"]
        if headers.get("x-content-sha256") != base64.b64encode(hashlib.sha256(body).digest()).decode():
            return "x-content-sha256 does not match the body"
        if headers.get("content-length") != str(len(body)):
            return "content-length does not match the body"
    if any(h not in signed for h in required):
        return f"missing signed headers: {set(required) - set(signed)}"
    try:
        when = email.utils.parsedate_to_datetime(headers["date"])
    except (KeyError, TypeError, ValueError):
        return "no valid date"
    if abs((datetime.now(timezone.utc) - when).total_seconds()) > 300:
        return "clock skew over 5 minutes"
    lines = []
    for h in signed:
        if h == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {path}")
        elif h in headers:
            lines.append(f"{h}: {headers[h]}")
        else:
            return f"signed header {h} missing"
    try:
        public_key.verify(base64.b64decode(params.get("signature", "")), "\n".join(lines).encode(),
                          padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return "signature does not verify"
    return None


# --------------------------------------------------------------------------- mock OCI service


def chat_response(text: str, prompt: int, completion: int) -> bytes:
    # Odd spacing on purpose: the client must get these exact bytes.
    return ('{"modelId": "%s", "modelVersion":"1.0.0","chatResponse" :{"apiFormat":"GENERIC",'
            '"timeCreated":"2025-01-01T00:00:00.000Z","choices":[{"index":0,"message":{"role":"ASSISTANT",'
            '"content":[{"type":"TEXT","text":%s}]},"finishReason":"stop"}],'
            '"usage":{"promptTokens":%d,"completionTokens":%d,"totalTokens":%d}}}'
            % (MODEL, json.dumps(text), prompt, completion, prompt + completion)).encode()


def stream_events(words: list[str], prompt: int) -> list[bytes]:
    evs = [{"index": 0, "message": {"role": "ASSISTANT", "content": [{"type": "TEXT", "text": w}]}} for w in words]
    evs.append({"index": 0, "message": {"role": "ASSISTANT", "content": [{"type": "TEXT", "text": ""}]},
                "finishReason": "stop"})
    evs.append({"usage": {"promptTokens": prompt, "completionTokens": len(words), "totalTokens": prompt + len(words)}})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in evs]


class MockOci:
    def __init__(self, public_key, key_id: str):
        self.public_key, self.key_id = public_key, key_id
        self.records: list[dict] = []
        self.lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                why = verify_signature("POST", self.path, headers, body, mock.public_key, mock.key_id)
                rec = {"method": "POST", "path": self.path, "headers": list(self.headers.items()),
                       "body": body, "why": why, "sent": b""}
                with mock.lock:
                    mock.records.append(rec)
                if why is not None:
                    return self._send(rec, 401, json.dumps(NOT_AUTHENTICATED).encode())
                if self.path != CHAT:
                    return self._send(rec, 404, b'{"code":"NotAuthorizedOrNotFound","message":"not found"}')
                req = json.loads(body)
                text = req["chatRequest"]["messages"][-1]["content"][0]["text"]
                if req["chatRequest"].get("isStream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("opc-request-id", "opc-sdk-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for piece in stream_events(text.split(), 13):
                        rec["sent"] += piece
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.01)
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                return self._send(rec, 200, chat_response(f"You said: {text}", 21, 4))

            def _send(self, rec, status, body):
                rec["sent"] = body
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("opc-request-id", "opc-sdk-1")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def last(self) -> dict:
        with self.lock:
            return self.records[-1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def oci_stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("oci-gw")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = workdir / "oci_api_key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    fp = fingerprint(key.public_key())
    mock = MockOci(key.public_key(), f"{TENANCY}/{USER}/{fp}")
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = workdir / "oci.yaml"
    cfg.write_text(f"""\
server: {{listen: "{listen}", metrics_listen: "{metrics}", threads: 2, grace_period_seconds: 1}}
auth:
  keys:
    - {{user: alice, key: "{ALICE_KEY}"}}
providers:
  oci:
    endpoint: "{mock.url}"
    compartment_id: {COMPARTMENT}
    auth:
      method: oci_api_key
      config:
        tenancy: {TENANCY}
        user: {USER}
        fingerprint: "{fp}"
        key_file: "{key_file}"
""")
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="oci-gateway").start()
    yield mock, gw
    gw.stop()
    mock.stop()


def chat_body(text: str, stream: bool) -> bytes:
    return json.dumps({
        "compartmentId": COMPARTMENT,
        "servingMode": {"servingType": "ON_DEMAND", "modelId": MODEL},
        "chatRequest": {"apiFormat": "GENERIC", "isStream": stream, "streamOptions": {"isIncludeUsage": True},
                        "maxTokens": 100, "messages": [{"role": "USER", "content": [{"type": "TEXT", "text": text}]}]},
    }, indent=1).encode()


# --------------------------------------------------------------------------- tests


def test_chat_is_signed_by_the_gateway_and_passes_byte_exact(oci_stack):
    mock, gw = oci_stack
    body = chat_body("Hello OCI", stream=False)
    with httpx.Client(timeout=20) as http:
        r = http.post(f"{gw.url}/providers/oci{CHAT}", content=body,
                      headers={"Authorization": f"Bearer {ALICE_KEY}", "Content-Type": "application/json"})
    rec = mock.last()
    assert rec["why"] is None, rec["why"]
    assert r.status_code == 200, r.text
    assert r.content == rec["sent"], "response bytes changed"
    assert r.headers["opc-request-id"] == "opc-sdk-1"
    assert rec["body"] == body, "request bytes changed"
    assert r.json()["chatResponse"]["choices"][0]["message"]["content"][0]["text"] == "You said: Hello OCI"
    assert_no_gateway_key([rec])


def test_stream_events_arrive_unchanged(oci_stack):
    mock, gw = oci_stack
    got = b""
    with httpx.Client(timeout=20) as http:
        with http.stream("POST", f"{gw.url}/transparent/oci{CHAT}", content=chat_body("one two three", stream=True),
                         headers={"X-API-Key": ALICE_KEY, "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for chunk in r.iter_bytes():
                got += chunk
    rec = mock.last()
    assert rec["why"] is None, rec["why"]
    assert got == rec["sent"], "stream bytes changed"
    events = [json.loads(e[len("data: "):]) for e in got.decode().split("\n\n") if e]
    assert "".join(e["message"]["content"][0]["text"] for e in events if "message" in e) == "onetwothree"
    assert events[-1]["usage"]["promptTokens"] == 13
    assert_no_gateway_key([rec])


def test_usage_is_metered(oci_stack):
    mock, gw = oci_stack
    with httpx.Client(timeout=20) as http:
        r = http.post(f"{gw.url}/providers/oci{CHAT}", content=chat_body("meter me", stream=False),
                      headers={"Authorization": f"Bearer {ALICE_KEY}"})
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while True:
            samples = parse_metrics(http.get(f"{gw.metrics_url}/metrics").text)
            tokens = {(lab.get("model"), lab.get("type")): v for name, lab, v in samples
                      if name == "ai_proxy_tokens_total" and lab.get("provider") == "oci"}
            if tokens.get((MODEL, "input"), 0) >= 21 and tokens.get((MODEL, "output"), 0) >= 4:
                break
            assert time.monotonic() < deadline, f"OCI usage never metered: {tokens}"
            time.sleep(0.05)


def test_a_tampered_signature_is_refused_by_the_mock(oci_stack):
    mock, gw = oci_stack
    with httpx.Client(timeout=20) as http:
        r = http.post(f"{gw.url}/providers/oci{CHAT}", content=chat_body("sign me", stream=False),
                      headers={"Authorization": f"Bearer {ALICE_KEY}"})
        assert r.status_code == 200
        good = mock.last()
        headers = {k.lower(): v for k, v in good["headers"] if k.lower() not in ("host", "content-length")}
        # The exact signed request replays fine ...
        assert http.post(mock.url + good["path"], content=good["body"], headers=headers).status_code == 200
        # ... but not with one byte of the body changed, nor with another date.
        tampered = good["body"].replace(b"sign me", b"sign mE")
        r = http.post(mock.url + good["path"], content=tampered, headers=headers)
        assert r.status_code == 401 and r.json() == NOT_AUTHENTICATED
        assert mock.last()["why"] == "x-content-sha256 does not match the body"
        headers_sha = dict(headers, **{"x-content-sha256": base64.b64encode(hashlib.sha256(tampered).digest()).decode()})
        r = http.post(mock.url + good["path"], content=tampered, headers=headers_sha)
        assert r.status_code == 401 and mock.last()["why"] == "signature does not verify"
        r = http.post(mock.url + good["path"], content=good["body"],
                      headers=dict(headers, date=email.utils.formatdate(time.time() + 60, usegmt=True)))
        assert r.status_code == 401 and mock.last()["why"] == "signature does not verify"
