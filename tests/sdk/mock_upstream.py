"""A mock OpenAI upstream written with the Python standard library only.

It follows OpenAI's documented wire format (see shared PROTOCOLS.md section 1):

* POST /v1/chat/completions  non-stream JSON, or SSE (`data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`);
  with stream_options.include_usage every chunk carries "usage": null and one last chunk with
  "choices": [] carries the usage.
* POST /v1/completions       same, object "text_completion".
* POST /v1/embeddings        float or base64 (packed little-endian float32) vectors.
* GET  /v1/models, GET /v1/models/{id}

Every request must carry `Authorization: Bearer <api_key>` (401 with an OpenAI error envelope
otherwise). Every request received is recorded (method, path, headers, raw body, and the exact
bytes of the response body that was sent) so tests can inspect what the gateway forwarded.

Tools and structured output (what client libraries such as LangChain, instructor and the
Agents SDK send): a request with `tools` (and `tool_choice` not "none") whose last message is
not a tool result is answered with one call of the chosen (or first) tool, its arguments made
from the tool's JSON schema (see `schema_value`), `finish_reason: "tool_calls"`; after a tool
result the answer is text quoting it (`tool_result_reply`). `response_format` json_schema is
answered with JSON made from the schema, json_object with `{"reply": ...}`.

A model whose name contains `fragmented` gets its SSE stream written in 5-byte pieces.

A model whose name ends with `error-<status>` (e.g. `gpt-upstream-error-429`) is answered with
that status and an OpenAI error envelope; 429 carries `Retry-After: 7` (deliberately different
from the gateway's built-in mock provider, which uses 1).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATED = 1700000000
SYSTEM_FINGERPRINT = "fp_upstream_mock"
UPSTREAM_RETRY_AFTER = "7"
ERROR_MODEL_RE = re.compile(r"error-(\d{3})$")

MODELS = [
    {"id": "gpt-4-0125-preview", "object": "model", "created": 1706037612, "owned_by": "system"},
    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
    {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
]

_ids = itertools.count(1)


# --------------------------------------------------------------------------- content helpers


def words(text: str) -> list[str]:
    return text.split()


def message_text(content) -> str:
    """Text of an OpenAI message `content` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages) -> str:
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def upstream_chat_reply(user_text: str) -> str:
    """The content the mock upstream answers to a chat request."""
    return "Upstream mock says: " + user_text


def upstream_completion_text(prompt: str) -> str:
    return "Upstream completion for: " + prompt


def tool_result_reply(tool_text: str) -> str:
    """The content the mock upstream answers after a tool result."""
    return "Upstream mock used the tool: " + tool_text


def schema_value(schema, text: str, defs: dict | None = None):
    """A deterministic value valid for a JSON schema: strings are `text`, integers its word
    count, numbers 1.5, booleans true, arrays one item, enums their first member."""
    if not isinstance(schema, dict):
        return text
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return schema_value(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), text, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")]
            return schema_value(options[0] if options else {}, text, defs)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t == "object" or "properties" in schema:
        return {k: schema_value(v, text, defs) for k, v in (schema.get("properties") or {}).items()}
    if t == "array":
        return [schema_value(schema.get("items", {}), text, defs)]
    if t == "integer":
        return len(words(text))
    if t == "number":
        return 1.5
    if t == "boolean":
        return True
    return text


def chosen_tool(body: dict):
    """The function tool the request forces (`tool_choice`) or its first; None: answer text."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for t in tools:
            if t["function"].get("name") == name:
                return t["function"]
    return tools[0]["function"]


def chat_prompt_tokens(messages) -> int:
    return sum(len(words(message_text(m.get("content")))) for m in messages or [] if isinstance(m, dict))


def upstream_embedding(text: str, dims: int) -> list[float]:
    """Deterministic unit vector, already rounded to float32 so float and base64 agree exactly."""
    raw = []
    for i in range(dims):
        h = hashlib.sha256(f"{i}:{text}".encode()).digest()
        raw.append(int.from_bytes(h[:4], "little") / 2**32 * 2.0 - 1.0)
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    vec = [x / norm for x in raw]
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *vec)))


def f32_base64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def limit_words(text: str, body: dict) -> tuple[list[str], str]:
    ws = words(text)
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, int) and limit < len(ws):
        return ws[:limit], "length"
    return ws, "stop"


def error_envelope(message: str, type_: str, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-openai-upstream/1.0"

    # silence default stderr logging
    def log_message(self, format, *args):  # noqa: A002
        pass

    # ---- plumbing

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()  # CRLF after chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, body: bytes) -> dict:
        rec = {
            "method": self.command,
            "path": self.path,
            "headers": [(k.lower(), v) for k, v in self.headers.items()],
            "body": body,
            "status": None,
            "response_headers": [],
            "response_body": b"",
        }
        self.server.owner._add(rec)
        return rec

    def _send_json(self, rec: dict, status: int, obj, extra_headers: dict | None = None):
        payload = json.dumps(obj, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(payload)),
            "x-request-id": f"req_upstream_{next(_ids)}",
            "openai-processing-ms": "5",
        }
        headers.update(extra_headers or {})
        rec["status"] = status
        rec["response_headers"] = [(k.lower(), v) for k, v in headers.items()]
        rec["response_body"] = payload
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_sse(self, rec: dict, events: list[dict | str]):
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Transfer-Encoding": "chunked",
            "Cache-Control": "no-cache",
            "x-request-id": f"req_upstream_{next(_ids)}",
        }
        frames = []
        for ev in events:
            data = ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))
            frames.append(f"data: {data}\n\n".encode())
        # record before sending: the client may finish reading before this thread resumes
        rec["status"] = 200
        rec["response_headers"] = [(k.lower(), v) for k, v in headers.items()]
        rec["response_body"] = b"".join(frames)
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.server.owner.fragment_next_stream(rec):
            # adversarial framing: 5-byte pieces, so events and UTF-8 sequences split anywhere
            blob = b"".join(frames)
            pieces = [blob[i : i + 5] for i in range(0, len(blob), 5)]
        else:
            pieces = frames
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _authorized(self, rec: dict) -> bool:
        expected = f"Bearer {self.server.owner.api_key}"
        if self.headers.get("Authorization") == expected:
            return True
        self._send_json(
            rec,
            401,
            error_envelope(
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
                "invalid_api_key",
            ),
        )
        return False

    def _json_body(self, rec: dict, body: bytes):
        try:
            obj = json.loads(body or b"null")
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self._send_json(
                rec,
                400,
                error_envelope("We could not parse the JSON body of your request.", "invalid_request_error"),
            )
            return None
        if not isinstance(obj.get("model"), str):
            self._send_json(
                rec, 400, error_envelope("you must provide a model parameter", "invalid_request_error", "model")
            )
            return None
        m = ERROR_MODEL_RE.search(obj["model"])
        if m:
            status = int(m.group(1))
            extra = {}
            if status == 429:
                extra = {
                    "Retry-After": UPSTREAM_RETRY_AFTER,
                    "x-ratelimit-remaining-requests": "0",
                }
                env = error_envelope(
                    "Rate limit reached for requests (upstream mock).", "requests", None, "rate_limit_exceeded"
                )
            elif status >= 500:
                env = error_envelope("The server had an error (upstream mock).", "server_error")
            else:
                env = error_envelope(f"Upstream mock error {status}.", "invalid_request_error")
            self._send_json(rec, status, env, extra)
            return None
        return obj

    # ---- verbs

    def do_GET(self):
        rec = self._record(b"")
        if not self._authorized(rec):
            return
        path = self.path.split("?", 1)[0]
        if path == "/v1/models":
            self._send_json(rec, 200, {"object": "list", "data": MODELS})
            return
        if path.startswith("/v1/models/"):
            mid = path[len("/v1/models/"):]
            for m in MODELS:
                if m["id"] == mid:
                    self._send_json(rec, 200, m)
                    return
            self._send_json(
                rec,
                404,
                error_envelope(
                    f"The model '{mid}' does not exist", "invalid_request_error", "model", "model_not_found"
                ),
            )
            return
        if path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            self._send_json(rec, 405, error_envelope("Method not allowed.", "invalid_request_error"))
            return
        self._send_json(rec, 404, error_envelope(f"Invalid URL (GET {path})", "invalid_request_error"))

    def do_POST(self):
        body = self._read_body()
        rec = self._record(body)
        if not self._authorized(rec):
            return
        path = self.path.split("?", 1)[0]
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }.get(path)
        if handler is None:
            self._send_json(rec, 404, error_envelope(f"Invalid URL (POST {path})", "invalid_request_error"))
            return
        obj = self._json_body(rec, body)
        if obj is None:
            return
        handler(rec, obj)

    def do_PUT(self):
        body = self._read_body()
        rec = self._record(body)
        if not self._authorized(rec):
            return
        self._send_json(rec, 404, error_envelope(f"Invalid URL (PUT {self.path})", "invalid_request_error"))

    do_DELETE = do_PUT
    do_PATCH = do_PUT

    # ---- endpoints

    def _chat(self, rec: dict, body: dict):
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._send_json(
                rec, 400, error_envelope("'messages' is a required property", "invalid_request_error", "messages")
            )
            return
        user_text = last_user_text(messages)
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        tool = None if last.get("role") == "tool" else chosen_tool(body)
        fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
        if last.get("role") == "tool":
            reply = tool_result_reply(message_text(last.get("content")))
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            reply = json.dumps(schema_value(schema, user_text))
        elif fmt.get("type") == "json_object":
            reply = json.dumps({"reply": user_text})
        else:
            reply = upstream_chat_reply(user_text)
        if tool is not None:
            arguments = json.dumps(schema_value(tool.get("parameters") or {}, user_text))
            call_id = f"call_upstream{next(_ids)}"
            ws, finish = words(arguments), "tool_calls"
        elif fmt.get("type") in ("json_schema", "json_object"):
            ws, finish = [reply], "stop"  # one piece: JSON must not be cut at max_tokens here
        else:
            ws, finish = limit_words(reply, body)
        usage = {
            "prompt_tokens": chat_prompt_tokens(messages),
            "completion_tokens": len(ws),
            "total_tokens": chat_prompt_tokens(messages) + len(ws),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        cid = f"chatcmpl-upstream{next(_ids)}"
        model = body["model"]
        if tool is not None:
            message = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": tool["name"], "arguments": arguments}}
                ],
            }
        else:
            message = {"role": "assistant", "content": " ".join(ws), "refusal": None, "annotations": []}
        if not body.get("stream"):
            self._send_json(
                rec,
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                c["usage"] = None
            return c

        if tool is not None:
            head = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool["name"], "arguments": ""}}
            events: list = [chunk({"role": "assistant", "content": None, "tool_calls": [head]})]
            for i, w in enumerate(ws):
                piece = w if i == 0 else " " + w
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            events = [chunk({"role": "assistant", "content": "", "refusal": None})]
            for i, w in enumerate(ws):
                events.append(chunk({"content": w if i == 0 else " " + w}))
        events.append(chunk({}, finish))
        if include_usage:
            events.append(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )
        events.append("[DONE]")
        self._send_sse(rec, events)

    def _completions(self, rec: dict, body: dict):
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(p for p in prompt if isinstance(p, str))
        if not isinstance(prompt, str):
            self._send_json(rec, 400, error_envelope("'prompt' is required", "invalid_request_error", "prompt"))
            return
        text = upstream_completion_text(prompt)
        ws, finish = limit_words(text, {"max_tokens": body.get("max_tokens", 16)})
        usage = {
            "prompt_tokens": len(words(prompt)),
            "completion_tokens": len(ws),
            "total_tokens": len(words(prompt)) + len(ws),
        }
        cid = f"cmpl-upstream{next(_ids)}"
        model = body["model"]
        if not body.get("stream"):
            self._send_json(
                rec,
                200,
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [{"text": " ".join(ws), "index": 0, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events: list = []
        for i, w in enumerate(ws):
            events.append(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "text": w if i == 0 else " " + w,
                            "index": 0,
                            "logprobs": None,
                            "finish_reason": finish if i == len(ws) - 1 else None,
                        }
                    ],
                }
            )
        if include_usage:
            events.append(
                {"id": cid, "object": "text_completion", "created": CREATED, "model": model, "choices": [], "usage": usage}
            )
        events.append("[DONE]")
        self._send_sse(rec, events)

    def _embeddings(self, rec: dict, body: dict):
        inp = body.get("input")
        if isinstance(inp, str):
            inputs = [inp]
        elif isinstance(inp, list) and all(isinstance(x, str) for x in inp):
            inputs = inp
        else:
            self._send_json(rec, 400, error_envelope("'input' is invalid", "invalid_request_error", "input"))
            return
        dims = body.get("dimensions") or 8
        fmt = body.get("encoding_format") or "float"
        data = []
        for i, text in enumerate(inputs):
            vec = upstream_embedding(text, dims)
            data.append({"object": "embedding", "index": i, "embedding": f32_base64(vec) if fmt == "base64" else vec})
        tokens = sum(len(words(t)) for t in inputs)
        self._send_json(
            rec,
            200,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


class MockUpstream:
    """Threaded mock OpenAI server; `requests` holds every request received."""

    def __init__(self, api_key: str, host: str = "127.0.0.1", port: int = 0):
        self.api_key = api_key
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MockUpstream":
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def fragment_next_stream(self, rec: dict) -> bool:
        """Models containing `fragmented` get their SSE body written in tiny pieces."""
        return b"fragmented" in rec["body"]

    def _add(self, rec: dict):
        with self._lock:
            self.requests.append(rec)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.requests)

    def containing(self, marker: str) -> list[dict]:
        """Requests whose raw body or path contains `marker`."""
        m = marker.encode()
        return [r for r in self.snapshot() if m in r["body"] or marker in r["path"]]

    def since(self, index: int) -> list[dict]:
        with self._lock:
            return list(self.requests[index:])

    def count(self) -> int:
        with self._lock:
            return len(self.requests)


def header(rec: dict, name: str):
    """First value of a header in a recorded request (case-insensitive), or None."""
    name = name.lower()
    for k, v in rec["headers"]:
        if k == name:
            return v
    return None
