"""One HTTP server for every native mock provider, routed by path prefix.

  /openai/…    openai_like.handle_openai        /azure/…   openai_like.handle_azure
  /anthropic/… anthropic.handle_messages        /bedrock/… bedrock.handle, or
               anthropic.handle_bedrock_invoke for InvokeModel on `anthropic.*` model ids
               (handle_bedrock_count_tokens for their CountTokens)
  /vertex/…    gemini.handle, or anthropic.handle_vertex for `publishers/anthropic`
  /watsonx/…   watsonx.handle                   /oci/…     oci.handle
  /google/token    the service-account JWT exchange (issues Vertex bearer tokens)
  /iam/identity/token  the IBM IAM API-key exchange (issues watsonx bearer tokens)

Vertex and watsonx requests must carry a bearer token issued here. Every exchange is recorded
(provider, request, response) for the tests to inspect.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anthropic_messages as anthropic_mock  # noqa: E402
import bedrock  # noqa: E402
import gemini  # noqa: E402
import oci  # noqa: E402
import openai_like  # noqa: E402
import watsonx  # noqa: E402
from common import NativeRequest, NativeResponse, json_response  # noqa: E402


class NativeServer:
    def __init__(self):
        self.records: list[tuple[str, NativeRequest, NativeResponse]] = []
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def _serve(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                prefix, _, rest = url.path.lstrip("/").partition("/")
                req = NativeRequest(
                    method=self.command,
                    path="/" + rest,
                    query=dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                try:
                    resp = owner.route(prefix, req)
                except Exception as e:  # a mock bug must show up, not hang the gateway
                    resp = json_response(500, {"mock_exception": repr(e)})
                with owner._lock:
                    owner.records.append((prefix, req, resp))
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                if resp.chunks is None:
                    self.send_header("content-length", str(len(resp.body)))
                    self.end_headers()
                    self.wfile.write(resp.body)
                else:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for c in resp.chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _issue(self) -> NativeResponse:
        token = "ya29.native-" + secrets.token_hex(8)
        self.tokens.add(token)
        return json_response(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                                   "expiration": 4102444800, "refresh_token": "not_supported"})

    def _bearer_ok(self, req: NativeRequest) -> bool:
        auth = req.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def route(self, prefix: str, req: NativeRequest) -> NativeResponse:
        if prefix == "google" and req.path == "/token":
            return self._issue()
        if prefix == "iam" and req.path == "/identity/token":
            return self._issue()
        if prefix == "openai":
            return openai_like.handle_openai(req)
        if prefix == "azure":
            return openai_like.handle_azure(req)
        if prefix == "anthropic":
            return anthropic_mock.handle_messages(req)
        if prefix == "bedrock":
            parts = req.path.split("/")
            model = urllib.parse.unquote(parts[2]) if len(parts) > 3 else ""
            if parts[-1] in ("invoke", "invoke-with-response-stream") and model.startswith("anthropic."):
                return anthropic_mock.handle_bedrock_invoke(req)
            if parts[-1] == "count-tokens" and model.startswith("anthropic."):
                return anthropic_mock.handle_bedrock_count_tokens(req)
            return bedrock.handle(req)
        if prefix == "vertex":
            if not self._bearer_ok(req):
                return json_response(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})
            if "/publishers/anthropic/" in req.path:
                return anthropic_mock.handle_vertex(req)
            return gemini.handle(req)
        if prefix == "watsonx":
            if not self._bearer_ok(req):
                return json_response(401, {"errors": [{"code": "authentication_token_expired", "message": "Failed to authenticate the request due to an expired token"}], "trace": "t", "status_code": 401})
            return watsonx.handle(req)
        if prefix == "oci":
            return oci.handle(req)
        return json_response(404, {"error": f"no mock for /{prefix}"})

    def last(self, prefix: str) -> tuple[NativeRequest, NativeResponse]:
        for p, req, resp in reversed(self.records):
            if p == prefix:
                return req, resp
        raise AssertionError(f"no request reached /{prefix}")
