"""Bedrock native passthrough with the official boto3 `bedrock-runtime` client.

boto3 points at `https://<gateway>/providers/bedrock` and authenticates with the gateway key
as its Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`); the gateway strips that bearer and signs
each request with SigV4 itself. botocore only sends bearer tokens over HTTPS, so the tests
reach the gateway through a small TLS terminator (as behind any ingress).

The mock Bedrock runtime here speaks the documented wire format (rest-json bodies, and
`application/vnd.amazon.eventstream` frames for the stream operations, sent in odd-sized
chunks) and verifies every signature with botocore's own `SigV4Auth` for the credentials the
gateway is configured with, answering 403 `InvalidSignatureException` like AWS otherwise.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from helpers import ALICE_KEY, Gateway, free_port, gateway_bin, parse_metrics

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIASDKTESTSWITCHYRD"
SECRET_ACCESS_KEY = "sdk/TeSt+SeCrEt/kEy0123456789abcdefghijKLM"
SESSION_TOKEN = "FwoGZXIvYXdzEMockSdkSessionToken//+=="
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"


# --------------------------------------------------------------------------- event stream


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message: prelude (lengths + CRC32), string headers, payload, CRC32."""
    h = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(h) + len(payload), len(h))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    msg = prelude + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg) & 0xFFFFFFFF)


def event(event_type: str, payload: dict) -> bytes:
    return frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload).encode(),
    )


def anthropic_events(input_tokens: int, words: list[str]) -> list[dict]:
    out = len(words)
    evs = [
        {"type": "message_start", "message": {"id": "msg_sdk_1", "type": "message", "role": "assistant",
                                               "model": "claude-3-haiku-20240307", "content": [],
                                               "usage": {"input_tokens": input_tokens, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    evs += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in words]
    evs += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": out}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": input_tokens, "outputTokenCount": out, "invocationLatency": 250, "firstByteLatency": 40}},
    ]
    return evs


STREAM_WORDS = ["Streaming", " through", " Switchyard"]
INVOKE_STREAM_EVENTS = anthropic_events(23, STREAM_WORDS)


def invoke_stream_body() -> bytes:
    return b"".join(
        event("chunk", {"bytes": base64.b64encode(json.dumps(e).encode()).decode(), "p": "abcdefghij"})
        for e in INVOKE_STREAM_EVENTS
    )


CONVERSE_STREAM_EVENTS = (
    [("messageStart", {"role": "assistant"})]
    + [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}) for w in ["Alpha", " beta"]]
    + [
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 29, "outputTokens": 2, "totalTokens": 31}, "metrics": {"latencyMs": 9}}),
    ]
)


def converse_stream_body() -> bytes:
    return b"".join(event(t, p) for t, p in CONVERSE_STREAM_EVENTS)


def test_the_mock_encoder_is_what_botocore_decodes():
    data = invoke_stream_body() + converse_stream_body()
    buf = EventStreamBuffer()
    for i in range(0, len(data), 7):  # botocore's incremental decoder, fed in pieces
        buf.add_data(data[i:i + 7])
    msgs = list(buf)
    assert len(msgs) == len(INVOKE_STREAM_EVENTS) + len(CONVERSE_STREAM_EVENTS)
    assert msgs[0].headers[":event-type"] == "chunk"
    inner = json.loads(base64.b64decode(json.loads(msgs[0].payload)["bytes"]))
    assert inner == INVOKE_STREAM_EVENTS[0]
    assert msgs[-1].headers[":event-type"] == "metadata"


# --------------------------------------------------------------------------- mock Bedrock


def verify_sigv4(method: str, path: str, headers: dict[str, str], body: bytes, secret: str,
                 token: str | None) -> tuple[str, str] | None:
    """None if AWS would accept the request's signature, else (error type, message)."""
    auth = headers.get("authorization", "")
    if not auth:
        return ("MissingAuthenticationTokenException", "Missing Authentication Token")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return ("IncompleteSignatureException", "Authorization header requires 'Credential' parameter.")
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    akid, date, region, service, term = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    if akid != ACCESS_KEY_ID:
        return ("UnrecognizedClientException", "The security token included in the request is invalid.")
    if (region, service, term) != (REGION, "bedrock", "aws4_request"):
        return ("InvalidSignatureException", f"Credential should be scoped to a valid region ({parts['Credential']})")
    amz_date = headers.get("x-amz-date", "")
    if amz_date[:8] != date or "host" not in signed or "x-amz-date" not in signed:
        return ("InvalidSignatureException", "x-amz-date and host must be signed, dates must agree")
    when = time.mktime(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.timezone
    if abs(when - time.time()) > 300:
        return ("InvalidSignatureException", "Signature expired")
    if token is not None and (headers.get("x-amz-security-token") != token or "x-amz-security-token" not in signed):
        return ("UnrecognizedClientException", "The security token included in the request is invalid.")
    # botocore's own signer over the signed headers only, at the request's time.
    req = AWSRequest(method=method, url=f"http://{headers['host']}{path}", data=body,
                     headers={h: headers[h] for h in signed})
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ACCESS_KEY_ID, secret, token), "bedrock", REGION)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != parts["Signature"]:
        return ("InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
    return None


class MockBedrock:
    def __init__(self, secret: str = SECRET_ACCESS_KEY, token: str | None = SESSION_TOKEN):
        self.secret, self.token = secret, token
        self.records: list[dict] = []
        self._lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                refused = verify_sigv4("POST", self.path, headers, body, mock.secret, mock.token)
                rec = {"path": self.path, "headers": list(self.headers.items()), "body": body,
                       "refused": refused, "sent": b""}
                with mock._lock:
                    mock.records.append(rec)
                if refused:
                    kind, message = refused
                    rec["sent"] = json.dumps({"message": message}).encode()
                    return self._full(403, rec["sent"], {
                        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/"})
                op = self.path.split("?")[0].rsplit("/", 1)[-1]
                if op == "invoke":
                    rec["sent"] = json.dumps({
                        "id": "msg_sdk_2", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
                        "content": [{"type": "text", "text": "Hello from Bedrock"}], "stop_reason": "end_turn",
                        "usage": {"input_tokens": 14, "output_tokens": 3}}, indent=1).encode()
                    return self._full(200, rec["sent"], {
                        "X-Amzn-Bedrock-Input-Token-Count": "14", "X-Amzn-Bedrock-Output-Token-Count": "3",
                        "X-Amzn-Bedrock-Invocation-Latency": "99"})
                if op == "converse":
                    rec["sent"] = json.dumps({
                        "output": {"message": {"role": "assistant", "content": [{"text": "Conversing"}]}},
                        "stopReason": "end_turn",
                        "usage": {"inputTokens": 16, "outputTokens": 5, "totalTokens": 21},
                        "metrics": {"latencyMs": 12}}).encode()
                    return self._full(200, rec["sent"], {})
                if op == "invoke-with-response-stream":
                    rec["sent"] = invoke_stream_body()
                    return self._stream(rec["sent"])
                if op == "converse-stream":
                    rec["sent"] = converse_stream_body()
                    return self._stream(rec["sent"])
                self._full(404, b'{"message":"Unknown operation"}', {"x-amzn-ErrorType": "UnknownOperationException"})

            def _full(self, status, body, extra):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-amzn-RequestId", "sdk-mock-req-1")
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, body):
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("X-Amzn-Bedrock-Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", "sdk-mock-req-2")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sizes = [3, 11, 1, 40, 9, 100]  # frames straddle chunk boundaries
                i = k = 0
                while i < len(body):
                    piece = body[i:i + sizes[k % len(sizes)]]
                    i, k = i + len(piece), k + 1
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    time.sleep(0.001)
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self) -> dict:
        with self._lock:
            assert self.records, "the mock received no request"
            return self.records[-1]

    def stop(self):
        self.server.shutdown()


# --------------------------------------------------------------------------- TLS in front


class TlsTerminator:
    """https://127.0.0.1:<port> → the gateway's plain HTTP listener, bytes relayed as they are."""

    def __init__(self, target: str, cert: str, key: str):
        self.target = target
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        host, port = self.target.split(":")
        up = socket.create_connection((host, int(port)))

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(up, tls), daemon=True)
        t.start()
        pump(tls, up)
        t.join(5)
        tls.close()
        up.close()

    def stop(self):
        self.running = False
        self.sock.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bedrock-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def _config(listen: str, metrics: str, endpoint: str, auth: str) -> str:
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
  bedrock:
    region: {REGION}
    endpoint: "{endpoint}"
    auth: {auth}
"""


STATIC_AUTH = (f'{{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: "{SECRET_ACCESS_KEY}", '
               f'session_token: "{SESSION_TOKEN}"}}}}')


@pytest.fixture(scope="module")
def bedrock_stack(tmp_path_factory, tls_files):
    """(mock, gateway, https url) with the gateway signing with the mock's credentials."""
    workdir = tmp_path_factory.mktemp("bedrock-gw")
    mock = MockBedrock()
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = workdir / "bedrock.yaml"
    cfg.write_text(_config(listen, metrics, mock.url, STATIC_AUTH))
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="bedrock-gateway").start()
    tls = TlsTerminator(listen, *tls_files)
    yield mock, gw, tls.url
    tls.stop()
    gw.stop()
    mock.stop()


def bedrock_client(url: str, cert: str, monkeypatch):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", ALICE_KEY)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=f"{url}/providers/bedrock",
        verify=cert,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=20, connect_timeout=5),
    )


@pytest.fixture
def brt(bedrock_stack, tls_files, monkeypatch):
    _, _, url = bedrock_stack
    return bedrock_client(url, tls_files[0], monkeypatch)


def _assert_clean(rec: dict):
    """Verified by the mock's botocore signer; the gateway key went nowhere near AWS."""
    assert rec["refused"] is None, rec["refused"]
    for k, v in rec["headers"]:
        assert ALICE_KEY not in v, f"gateway key leaked upstream in {k}"
    assert ALICE_KEY.encode() not in rec["body"]
    headers = {k.lower(): v for k, v in rec["headers"]}
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
    assert headers["x-amz-security-token"] == SESSION_TOKEN
    assert rec["path"].startswith("/model/anthropic.claude-3-haiku-20240307-v1%3A0/"), rec["path"]


def test_invoke_model(brt, bedrock_stack):
    mock, _, _ = bedrock_stack
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hello"}]}
    r = brt.invoke_model(modelId=MODEL_ID, body=json.dumps(body), contentType="application/json",
                         accept="application/json")
    raw = r["body"].read()
    rec = mock.last()
    _assert_clean(rec)
    assert rec["path"].endswith("/invoke")
    assert json.loads(rec["body"]) == body
    assert raw == rec["sent"], "response bytes changed"
    assert json.loads(raw)["content"][0]["text"] == "Hello from Bedrock"
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "14"


def test_invoke_model_with_response_stream(brt, bedrock_stack):
    mock, _, _ = bedrock_stack
    r = brt.invoke_model_with_response_stream(
        modelId=MODEL_ID,
        body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                         "messages": [{"role": "user", "content": "Stream"}]}),
    )
    events = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert events == INVOKE_STREAM_EVENTS
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "".join(STREAM_WORDS)
    _assert_clean(mock.last())
    assert mock.last()["path"].endswith("/invoke-with-response-stream")


def test_converse(brt, bedrock_stack):
    mock, _, _ = bedrock_stack
    r = brt.converse(modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                     inferenceConfig={"maxTokens": 20})
    assert r["output"]["message"]["content"][0]["text"] == "Conversing"
    assert r["usage"] == {"inputTokens": 16, "outputTokens": 5, "totalTokens": 21}
    rec = mock.last()
    _assert_clean(rec)
    assert json.loads(rec["body"])["inferenceConfig"] == {"maxTokens": 20}


def test_converse_stream(brt, bedrock_stack):
    mock, _, _ = bedrock_stack
    r = brt.converse_stream(modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "Hi"}]}])
    events = list(r["stream"])
    assert [next(iter(e)) for e in events] == [t for t, _ in CONVERSE_STREAM_EVENTS]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Alpha beta"
    assert events[-1]["metadata"]["usage"] == {"inputTokens": 29, "outputTokens": 2, "totalTokens": 31}
    _assert_clean(mock.last())


def test_stream_bytes_are_relayed_unchanged(bedrock_stack):
    """The documented HTTP API directly: the event stream body is byte-identical."""
    mock, gw, _ = bedrock_stack
    with httpx.Client(timeout=20) as c:
        with c.stream("POST", f"{gw.url}/providers/bedrock/model/{MODEL_ID.replace(':', '%3A')}/converse-stream",
                      headers={"x-api-key": ALICE_KEY, "content-type": "application/json"},
                      content=b'{"messages":[{"role":"user","content":[{"text":"raw"}]}]}') as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
            received = b"".join(r.iter_raw())
    rec = mock.last()
    _assert_clean(rec)
    assert received == rec["sent"]


def test_usage_and_legacy_metrics(brt, bedrock_stack):
    _, gw, _ = bedrock_stack
    brt.converse(modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "count me"}]}])
    deadline = time.monotonic() + 5
    while True:
        samples = parse_metrics(httpx.get(gw.metrics_url + "/metrics", timeout=5).text)
        tokens = {
            lbl["type"]: v for name, lbl, v in samples
            if name == "ai_proxy_tokens_total" and lbl.get("provider") == "bedrock" and lbl.get("model") == MODEL_ID
        }
        legacy = [v for name, _, v in samples if name == "bedrock_proxy_requests_total"]
        if tokens.get("input", 0) >= 16 and legacy and legacy[0] >= 1:
            break
        assert time.monotonic() < deadline, f"no bedrock usage in metrics: {tokens} {legacy}"
        time.sleep(0.1)
    assert tokens["output"] >= 5
    assert any(name == "bedrock_proxy_request_duration_seconds_count" and v >= 1 for name, _, v in samples)


def test_a_wrong_secret_is_rejected_by_aws(tmp_path, tls_files, monkeypatch):
    """A gateway configured with the wrong secret: the verifying mock answers 403 like AWS."""
    mock = MockBedrock()
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(_config(listen, metrics, mock.url, STATIC_AUTH.replace(SECRET_ACCESS_KEY, "wrong/secret")))
    gw = Gateway(gateway_bin(), cfg, tmp_path, listen, metrics, name="bedrock-bad-secret").start()
    tls = TlsTerminator(listen, *tls_files)
    try:
        c = bedrock_client(tls.url, tls_files[0], monkeypatch)
        with pytest.raises(ClientError) as e:
            c.converse(modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": "Hi"}]}])
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert mock.last()["refused"][0] == "InvalidSignatureException"
    finally:
        tls.stop()
        gw.stop()
        mock.stop()


def test_converse_with_an_inference_profile_arn(brt, bedrock_stack):
    """ARNs put `/` in the modelId label: boto3 sends it as %2F, the gateway keeps it."""
    mock, _, _ = bedrock_stack
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0"
    r = brt.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "Hi"}]}])
    assert r["output"]["message"]["content"][0]["text"] == "Conversing"
    rec = mock.last()
    assert rec["refused"] is None, rec["refused"]
    assert rec["path"] == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    )
