"""Azure OpenAI native passthrough with the official `openai.AzureOpenAI` client.

`AzureOpenAI(azure_endpoint="http://GW/providers/<name>", api_key=<gateway key>, api_version=...)`
sends the gateway key as `api-key`; the gateway strips it and authenticates to a mock Azure
OpenAI data plane (standard library only) that checks credentials like Azure does:

* provider `azure`: `auth.method: api_key`, the mock requires `api-key: AZURE_KEY`;
* provider `azure-sp`: Entra ID service principal (client secret) against a mock Microsoft
  identity platform token endpoint served over TLS with the test CA in tests/fixtures/tls,
  trusted by the gateway through `SSL_CERT_FILE`;
* provider `azure-mi`: managed identity (App Service flavour: `IDENTITY_ENDPOINT` /
  `IDENTITY_HEADER`) with a user-assigned client id;
* provider `azure-wi`: AKS workload identity from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
  `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`.

The data-plane mock accepts a bearer only if one of the identity mocks issued it and it has
not expired; it requires exactly one `api-version` query parameter (404 otherwise, as Azure).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from helpers import ALICE_KEY, REPO_ROOT, Gateway, assert_no_gateway_key, free_port, gateway_bin, parse_metrics

AZURE_KEY = "az-upstream-key-" + "e5" * 8
API_VERSION = "2024-10-21"  # the gateway's default
SDK_API_VERSION = "2024-06-01"  # what the SDK client sends
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SP_CLIENT_ID = "sp-client-0001"
SP_SECRET = "entra-sp-secret~" + "f6" * 6
WI_CLIENT_ID = "wi-client-0002"
WI_ASSERTION = "eyJhbGciOiJSUzI1NiJ9.k8s-service-account-token.sig"
MI_CLIENT_ID = "mi-client-0003"
MI_HEADER = "msi-header-" + secrets.token_hex(8)
SCOPE = "https://cognitiveservices.azure.com/.default"
RESOURCE = "https://cognitiveservices.azure.com"
TOKEN_LIFETIME = 3600
DEPLOYMENT = "gpt-4o-prod"
UNDERLYING_MODEL = "gpt-4o-2024-08-06"
TLS_DIR = REPO_ROOT / "tests" / "fixtures" / "tls"


def reply_text(user: str) -> str:
    return "Azure mock says: " + user


# ------------------------------------------------------------------------- shared mock state


class Tokens:
    """Tokens issued by the identity mocks: value -> (how, expires_at)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issued: dict[str, tuple[str, float]] = {}
        self.log: list[dict] = []

    def issue(self, how: str) -> str:
        token = f"eyJ0eXAiOiJKV1QifQ.{how}.{secrets.token_urlsafe(16)}"
        with self.lock:
            self.issued[token] = (how, time.time() + TOKEN_LIFETIME)
        return token

    def check(self, token: str) -> str | None:
        with self.lock:
            entry = self.issued.get(token)
        if entry is None or time.time() >= entry[1]:
            return None
        return entry[0]


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, obj, extra: dict | None = None) -> bytes:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        return body


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------------- identity mocks


def entra_server(tokens: Tokens, wi_token_file: str) -> ThreadingHTTPServer:
    """Microsoft identity platform v2.0 token endpoint (client credentials), over TLS."""

    class Entra(_Base):
        def do_POST(self):
            form = dict(urllib.parse.parse_qsl(self._body().decode()))
            entry = {"path": self.path, "form": {k: v for k, v in form.items() if k != "client_secret"}}
            tokens.log.append(entry)

            def refuse(status, error, description, code):
                entry["refused"] = description
                self._json(status, {"error": error, "error_description": description, "error_codes": [code]})

            if self.path != f"/{TENANT}/oauth2/v2.0/token":
                return refuse(400, "invalid_request", "AADSTS90002: Tenant not found.", 90002)
            if not (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                return refuse(400, "invalid_request", "AADSTS900144: grant_type missing.", 900144)
            if form.get("grant_type") != "client_credentials":
                return refuse(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type.", 70003)
            if form.get("scope") != SCOPE:
                return refuse(400, "invalid_scope", "AADSTS70011: invalid scope.", 70011)
            cid = form.get("client_id")
            if cid == SP_CLIENT_ID:
                if form.get("client_secret") != SP_SECRET:
                    return refuse(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.", 7000215)
                how = "service-principal"
            elif cid == WI_CLIENT_ID:
                expected = open(wi_token_file).read()
                if (
                    form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    or form.get("client_assertion") != expected
                ):
                    return refuse(401, "invalid_client", "AADSTS700213: No matching federated identity record found.", 700213)
                how = "workload-identity"
            else:
                return refuse(400, "unauthorized_client", "AADSTS700016: Application not found.", 700016)
            token = tokens.issue(how)
            entry["issued"] = how
            self._json(200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                             "ext_expires_in": TOKEN_LIFETIME, "access_token": token})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Entra)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(TLS_DIR / "localhost.pem"), str(TLS_DIR / "localhost.key"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return _serve(server)


def msi_server(tokens: Tokens) -> ThreadingHTTPServer:
    """App Service managed identity endpoint (IDENTITY_ENDPOINT, api-version 2019-08-01)."""

    class Msi(_Base):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            entry = {"path": url.path, "query": q, "header_ok": self.headers.get("X-IDENTITY-HEADER") == MI_HEADER}
            tokens.log.append(entry)
            if not entry["header_ok"]:
                return self._json(401, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"})
            if q.get("api-version") != "2019-08-01" or q.get("resource") != RESOURCE:
                return self._json(400, {"statusCode": 400, "message": "bad api-version or resource"})
            if q.get("client_id") != MI_CLIENT_ID:
                return self._json(400, {"statusCode": 400, "message": "identity not assigned"})
            token = tokens.issue("managed-identity")
            entry["issued"] = "managed-identity"
            self._json(200, {"access_token": token, "expires_on": str(int(time.time()) + TOKEN_LIFETIME),
                             "resource": RESOURCE, "token_type": "Bearer", "client_id": MI_CLIENT_ID})

    return _serve(ThreadingHTTPServer(("127.0.0.1", 0), Msi))


# ------------------------------------------------------------------------- Azure OpenAI mock


def azure_server(tokens: Tokens) -> ThreadingHTTPServer:
    requests: list[dict] = []
    lock = threading.Lock()

    class Azure(_Base):
        def do_POST(self):
            body = self._body()
            rec = {"path": self.path, "headers": [(k.lower(), v) for k, v in self.headers.items()], "body": body}
            with lock:
                requests.append(rec)
            url = urllib.parse.urlsplit(self.path)
            versions = [v for k, v in urllib.parse.parse_qsl(url.query) if k == "api-version"]
            if not url.path.startswith("/openai/deployments/") or len(versions) != 1:
                rec["verdict"] = "no api-version"
                rec["response_body"] = self._json(404, {"error": {"code": "404", "message": "Resource not found"}})
                return
            auth = self.headers.get("Authorization") or ""
            key = self.headers.get("api-key")
            if auth.startswith("Bearer ") and key is None:
                rec["verdict"] = tokens.check(auth[len("Bearer "):])
            elif key == AZURE_KEY and not auth:
                rec["verdict"] = "api-key"
            else:
                rec["verdict"] = None
            if rec["verdict"] is None:
                rec["response_body"] = self._json(401, {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."}})
                return
            req = json.loads(body)
            user = next((m["content"] for m in reversed(req["messages"]) if m["role"] == "user"), "")
            text = reply_text(user)
            words = text.split(" ")
            usage = {"prompt_tokens": len(user.split()), "completion_tokens": len(words),
                     "total_tokens": len(user.split()) + len(words)}
            if req.get("stream"):
                return self._stream(rec, words, usage, bool((req.get("stream_options") or {}).get("include_usage")))
            rec["response_body"] = self._json(200, {
                "id": "chatcmpl-azmock", "object": "chat.completion", "created": 1732467600,
                "model": UNDERLYING_MODEL, "system_fingerprint": "fp_az",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "content_filter_results": {},
                             "message": {"role": "assistant", "content": text, "refusal": None}}],
                "usage": usage,
            }, {"apim-request-id": "az-mock-1"})

        def _stream(self, rec, words, usage, include_usage):
            base = {"id": "chatcmpl-azstream", "object": "chat.completion.chunk", "created": 1732467600,
                    "model": UNDERLYING_MODEL, "system_fingerprint": "fp_az"}
            events = [{"choices": [], "created": 0, "id": "", "model": "", "object": "",
                       "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}]
            events.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None, "content_filter_results": {}}]})
            for i, w in enumerate(words):
                events.append({**base, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w},
                                                    "finish_reason": None, "content_filter_results": {}}]})
            events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if include_usage:
                events.append({**base, "choices": [], "usage": usage})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = b""
            for e in events + ["[DONE]"]:
                piece = f"data: {e if isinstance(e, str) else json.dumps(e, separators=(',', ':'))}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                sent += piece
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            rec["response_body"] = sent

    server = ThreadingHTTPServer(("127.0.0.1", 0), Azure)
    server.requests = requests  # type: ignore[attr-defined]
    server.lock = lock  # type: ignore[attr-defined]
    return _serve(server)


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(workdir):
    tokens = Tokens()
    wi_file = workdir / "azure-federated-token"
    wi_file.write_text(WI_ASSERTION)  # projected service-account tokens have no newline
    entra = entra_server(tokens, str(wi_file))
    msi = msi_server(tokens)
    azure = azure_server(tokens)
    authority = f"https://127.0.0.1:{entra.server_address[1]}"
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    up = _url(azure)
    cfg = workdir / "azure.yaml"
    cfg.write_text(f"""\
server:
  listen: "{listen}"
  metrics_listen: "{metrics}"
  threads: 2
  grace_period_seconds: 1
auth:
  keys:
    - {{user: alice, key: "{ALICE_KEY}"}}
providers:
  azure:
    endpoint: "{up}"
    api_version: "{API_VERSION}"
    auth: {{method: api_key, config: {{api_key: "{AZURE_KEY}"}}}}
  azure-sp:
    type: azure
    endpoint: "{up}"
    api_version: "{API_VERSION}"
    auth:
      method: azure_ad_token
      config: {{tenant_id: "{TENANT}", client_id: "{SP_CLIENT_ID}", client_secret: "{SP_SECRET}", authority_host: "{authority}"}}
  azure-mi:
    type: azure
    endpoint: "{up}"
    api_version: "{API_VERSION}"
    auth: {{method: azure_ad_token, config: {{client_id: "{MI_CLIENT_ID}"}}}}
  azure-wi:
    type: azure
    endpoint: "{up}"
    api_version: "{API_VERSION}"
    auth: {{method: azure_ad_token, config: {{workload_identity: true}}}}
""")
    gw = Gateway(gateway_bin(), cfg, workdir, listen, metrics, name="gateway-azure")
    env = {
        # the identity mock's TLS certificate is signed by the test CA
        "SSL_CERT_FILE": str(TLS_DIR / "ca.pem"),
        "IDENTITY_ENDPOINT": _url(msi) + "/msi/token",
        "IDENTITY_HEADER": MI_HEADER,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": WI_CLIENT_ID,
        "AZURE_FEDERATED_TOKEN_FILE": str(wi_file),
        "AZURE_AUTHORITY_HOST": authority,
    }
    with _env(**env):
        gw.start()
    yield {"gw": gw, "azure": azure, "tokens": tokens}
    gw.stop()
    for s in (entra, msi, azure):
        s.shutdown()


def _client(world, provider: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{world['gw'].url}/providers/{provider}",
        api_key=ALICE_KEY,
        api_version=SDK_API_VERSION,
        max_retries=0,
        timeout=20,
    )


def _only(world, marker: str) -> dict:
    srv = world["azure"]
    with srv.lock:
        recs = [r for r in srv.requests if marker.encode() in r["body"]]
    assert len(recs) == 1, f"expected one upstream request for {marker}, got {len(recs)}"
    return recs[0]


def header(rec: dict, name: str):
    vals = [v for k, v in rec["headers"] if k == name]
    return vals[0] if vals else None


# ------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "provider,verdict",
    [
        ("azure", "api-key"),
        ("azure-sp", "service-principal"),
        ("azure-mi", "managed-identity"),
        ("azure-wi", "workload-identity"),
    ],
)
def test_sdk_chat(world, marker, provider, verdict):
    user = f"hello azure {marker}"
    with _client(world, provider) as c:
        r = c.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": user}])
    assert r.choices[0].message.content == reply_text(user)
    assert r.usage.prompt_tokens == 3
    rec = _only(world, marker)
    assert rec["verdict"] == verdict, rec["verdict"]
    assert rec["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version={SDK_API_VERSION}"
    if verdict == "api-key":
        assert header(rec, "api-key") == AZURE_KEY and header(rec, "authorization") is None
    else:
        assert header(rec, "api-key") is None and header(rec, "authorization").startswith("Bearer ")
    assert_no_gateway_key([rec])
    assert SP_SECRET.encode() not in rec["body"] and all(SP_SECRET not in v for _, v in rec["headers"])


@pytest.mark.parametrize("provider", ["azure", "azure-sp"])
def test_sdk_stream(world, marker, provider):
    user = f"stream azure {marker}"
    with _client(world, provider) as c:
        chunks = list(
            c.chat.completions.create(
                model=DEPLOYMENT,
                messages=[{"role": "user", "content": user}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == reply_text(user)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split(" "))
    rec = _only(world, marker)
    assert rec["verdict"] in ("api-key", "service-principal")
    assert_no_gateway_key([rec])


def test_stream_bytes_identical_and_api_version_added(world, marker):
    sent = json.dumps({"stream": True, "messages": [{"role": "user", "content": f"raw {marker}"}]}).encode()
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST",
            f"{world['gw'].url}/providers/azure-sp/openai/deployments/{DEPLOYMENT}/chat/completions",
            content=sent,
            headers={"api-key": ALICE_KEY, "content-type": "application/json"},
        ) as r:
            assert r.status_code == 200
            got = r.read()
    rec = _only(world, marker)
    assert rec["path"].endswith(f"?api-version={API_VERSION}"), "api-version is added when missing"
    assert rec["body"] == sent
    assert got == rec["response_body"], "SSE bytes differ from what Azure sent"
    assert got.endswith(b"data: [DONE]\n\n")


def test_identity_requests_were_the_documented_ones(world):
    log = world["tokens"].log
    sp = [e for e in log if e.get("form", {}).get("client_id") == SP_CLIENT_ID]
    assert sp and sp[0]["path"] == f"/{TENANT}/oauth2/v2.0/token"
    assert sp[0]["form"]["grant_type"] == "client_credentials" and sp[0]["form"]["scope"] == SCOPE
    wi = [e for e in log if e.get("form", {}).get("client_id") == WI_CLIENT_ID]
    assert wi and wi[0].get("issued") == "workload-identity"
    assert wi[0]["form"]["client_assertion"] == WI_ASSERTION
    mi = [e for e in log if "query" in e]
    assert mi and mi[0]["header_ok"] and mi[0]["query"]["client_id"] == MI_CLIENT_ID
    assert mi[0]["query"]["resource"] == RESOURCE
    # one token per identity serves every request (cached, refreshed only before expiry)
    assert sum(1 for e in log if e.get("issued") == "service-principal") == 1


def test_ready_lists_every_azure_identity(world):
    r = httpx.get(world["gw"].url + "/ready", timeout=5)
    assert r.status_code == 200
    providers = r.json()["providers"]
    for name in ("azure", "azure-sp", "azure-mi", "azure-wi"):
        assert providers[name]["usable"] is True, providers[name]


def test_usage_is_metered(world, marker):
    def output_tokens():
        text = httpx.get(world["gw"].metrics_url + "/metrics", timeout=5).text
        return sum(
            v
            for n, labels, v in parse_metrics(text)
            if n == "ai_proxy_tokens_total" and labels.get("provider") == "azure-sp" and labels.get("type") == "output"
        )

    before = output_tokens()
    user = f"metered {marker}"
    with _client(world, "azure-sp") as c:
        c.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": user}])
    deadline = time.monotonic() + 3
    while output_tokens() - before != len(reply_text(user).split(" ")):
        assert time.monotonic() < deadline, (before, output_tokens())
        time.sleep(0.05)
