"""OpenAI and Azure OpenAI as native mocks on the shared behaviour (common.decide).

OpenAI wire format: PROTOCOLS.md section 1 (chat.completion / chat.completion.chunk,
`stream_options.include_usage` usage chunk with `choices: []`, `data: [DONE]`, error envelope).
Azure OpenAI (section 5): same bodies under `/openai/deployments/{deployment}/…?api-version=`,
`api-key` header, `prompt_filter_results` / `content_filter_results` annotations, and a first
stream chunk with empty `choices`, empty id/model and no usage (the prompt filter results).
"""

from __future__ import annotations

import base64
import json
import re

import openai_responses

from common import (
    BadRequest,
    Conversation,
    NativeRequest,
    NativeResponse,
    Turn,
    decide,
    embed,
    fail_status,
    json_response,
    openai_json_schema,
    stop_list,
    words,
)

CREATED = 1700000000
FILTER_OK = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}


def _error(status: int, message: str, type_: str, code=None) -> NativeResponse:
    headers = {"retry-after": "3"} if status == 429 else {}
    return json_response(status, {"error": {"message": message, "type": type_, "param": None, "code": code}}, headers)


def _text(content) -> tuple[str, int, list[int]]:
    if content is None:
        return "", 0, []
    if isinstance(content, str):
        return content, 0, []
    if not isinstance(content, list):
        raise BadRequest("content must be a string or an array of parts")
    texts, images, docs = [], 0, []
    for p in content:
        if p.get("type") == "text" and isinstance(p.get("text"), str):
            texts.append(p["text"])
        elif p.get("type") == "image_url" and isinstance(p.get("image_url", {}).get("url"), str):
            images += 1
        elif p.get("type") == "file":
            docs.append(_file(p.get("file")))
        else:
            raise BadRequest(f"invalid content part {p!r}")
    return "\n".join(texts), images, docs


def _file(f) -> int:
    """A `file` part's inline PDF (OpenAI: `file_data` as a data URL beside a `filename`):
    its decoded byte length."""
    if not isinstance(f, dict) or set(f) - {"file_data", "filename", "file_id"}:
        raise BadRequest(f"invalid file part {f!r}")
    data = f.get("file_data")
    if not isinstance(data, str) or not data.startswith("data:application/pdf;base64,"):
        raise BadRequest("file.file_data must be a data:application/pdf;base64 URL")
    if not isinstance(f.get("filename"), str) or not f["filename"]:
        raise BadRequest("Missing required parameter: 'file.filename'.")
    try:
        return len(base64.b64decode(data.split(",", 1)[1], validate=True))
    except Exception:
        raise BadRequest("file.file_data: invalid base64") from None


def conversation(body: dict) -> Conversation:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages must be a non-empty array")
    system, turns = [], []
    for m in msgs:
        role = m.get("role")
        text, images, docs = _text(m.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            turns.append(Turn("user", text, images, documents=docs))
        elif role == "assistant":
            calls = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
                     for c in m.get("tool_calls") or []]
            turns.append(Turn("assistant", text, 0, tool_calls=calls))
        elif role == "tool":
            if turns and turns[-1].role == "tool":
                turns[-1].tool_results.append((m["tool_call_id"], text))
            else:
                turns.append(Turn("tool", "", 0, tool_results=[(m["tool_call_id"], text)]))
        else:
            raise BadRequest(f"invalid role {role!r}")
    tc = body.get("tool_choice")
    if isinstance(tc, dict):
        tc = tc["function"]["name"]
    return Conversation(
        system="\n\n".join(system) or None,
        turns=turns,
        tools=[t["function"]["name"] for t in body.get("tools") or []],
        tool_choice=tc,
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        stop=stop_list(body.get("stop")),
        json_schema=openai_json_schema(body.get("response_format")),
    )


# `reasoning_effort` values OpenAI's chat API accepts (platform.openai.com/docs/api-reference/chat/create),
# and the reasoning tokens the mock reports when one other than `none` is set (OpenAI returns no
# reasoning text in chat completions, only the count in `completion_tokens_details`).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
REASONING_TOKENS = 8


def _chat(req: NativeRequest, body: dict, model: str, azure: bool) -> NativeResponse:
    # Anthropic-style cache markers are no OpenAI field (OpenAI caches prefixes by itself):
    # refused like any unknown parameter, so the gateway must strip them.
    for i, m in enumerate(body.get("messages") or []):
        parts = m.get("content") if isinstance(m.get("content"), list) else []
        if "cache_control" in m or any(isinstance(p, dict) and "cache_control" in p for p in parts):
            raise BadRequest(f"Unrecognized request argument supplied: messages[{i}].cache_control")
    for i, t in enumerate(body.get("tools") or []):
        if "cache_control" in t or "cache_control" in (t.get("function") or {}):
            raise BadRequest(f"Unrecognized request argument supplied: tools[{i}].cache_control")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        return json_response(400, {"error": {
            "message": f"Invalid value: '{effort}'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', and 'xhigh'.",
            "type": "invalid_request_error", "param": "reasoning_effort", "code": "invalid_value"}})
    reasoning = REASONING_TOKENS if effort not in (None, "none") else 0
    d = decide(conversation(body))
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a, separators=(",", ":"))}}
             for i, (n, a) in enumerate(d.tool_calls)]
    usage = {"prompt_tokens": d.prompt_tokens, "completion_tokens": d.completion_tokens + reasoning,
             "total_tokens": d.prompt_tokens + d.completion_tokens + reasoning}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    if not body.get("stream"):
        msg = {"role": "assistant", "content": d.text or None, "refusal": None}
        if calls:
            msg["tool_calls"] = calls
        choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": d.finish}
        out = {"id": "chatcmpl-native1", "object": "chat.completion", "created": CREATED, "model": model,
               "choices": [choice], "usage": usage, "system_fingerprint": "fp_native"}
        if azure:
            choice["content_filter_results"] = FILTER_OK
            out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTER_OK}]
        return json_response(200, out)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = []

    def chunk(delta, finish=None):
        c = {"id": "chatcmpl-native1", "object": "chat.completion.chunk", "created": CREATED, "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        events.append(c)

    if azure:
        events.append({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                       "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTER_OK}]})
    chunk({"role": "assistant", "content": ""})
    for i, piece in enumerate(d.text_pieces()):
        chunk({"content": piece})
        if d.explode and i == 0:
            events.append({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}})
            return _sse(events, done=False)
    for i, (name, args) in enumerate(d.tool_calls):
        for j, piece in enumerate(d.arg_pieces(args)):
            fn = {"arguments": piece}
            tc = {"index": i, "function": fn}
            if j == 0:
                tc.update({"id": f"call_{i}", "type": "function"})
                fn["name"] = name
            chunk({"tool_calls": [tc]})
    chunk({}, d.finish)
    if include_usage:
        events.append({"id": "chatcmpl-native1", "object": "chat.completion.chunk", "created": CREATED, "model": model,
                       "choices": [], "usage": usage})
    return _sse(events)


def _sse(events, done=True) -> NativeResponse:
    chunks = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return NativeResponse(200, {"content-type": "text/event-stream"}, chunks=chunks)


def _completions(body: dict, model: str) -> NativeResponse:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string in this mock")
    d = decide(Conversation(None, [Turn("user", prompt)], max_tokens=body.get("max_tokens", 16)))
    usage = {"prompt_tokens": d.prompt_tokens, "completion_tokens": d.completion_tokens,
             "total_tokens": d.prompt_tokens + d.completion_tokens}
    if not body.get("stream"):
        return json_response(200, {"id": "cmpl-native1", "object": "text_completion", "created": CREATED, "model": model,
                                   "choices": [{"text": d.text, "index": 0, "logprobs": None, "finish_reason": d.finish}],
                                   "usage": usage})
    events = [{"id": "cmpl-native1", "object": "text_completion", "created": CREATED, "model": model,
               "choices": [{"text": p, "index": 0, "logprobs": None, "finish_reason": None}]} for p in d.text_pieces()]
    events.append({"id": "cmpl-native1", "object": "text_completion", "created": CREATED, "model": model,
                   "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": d.finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({"id": "cmpl-native1", "object": "text_completion", "created": CREATED, "model": model,
                       "choices": [], "usage": usage})
    return _sse(events)


def _embeddings(body: dict, model: str) -> NativeResponse:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    data = []
    for i, text in enumerate(inputs):
        vec = embed(text, body.get("dimensions"))
        if body.get("encoding_format") == "base64":
            import base64
            import struct
            vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(words(t) for t in inputs)
    return json_response(200, {"object": "list", "data": data, "model": model,
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _dispatch(req: NativeRequest, op: str, model: str, azure: bool) -> NativeResponse:
    status = fail_status(model)
    if status:
        kinds = {400: "invalid_request_error", 404: "invalid_request_error", 429: "requests"}
        return _error(status, f"Mock failure {status}.", kinds.get(status, "server_error"),
                      "rate_limit_exceeded" if status == 429 else None)
    body = req.json()
    try:
        if op == "chat/completions":
            return _chat(req, body, model, azure)
        if op == "completions":
            return _completions(body, model)
        if op == "embeddings":
            return _embeddings(body, model)
        if op == "responses":
            return openai_responses.respond(body, model)
    except (BadRequest, KeyError, TypeError, ValueError) as e:
        return _error(400, f"Invalid request: {e}", "invalid_request_error")
    return _error(404, f"Unknown operation {op}", "invalid_request_error")


def handle_openai(req: NativeRequest) -> NativeResponse:
    """`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` with a Bearer key."""
    if not req.headers.get("authorization", "").startswith("Bearer "):
        return _error(401, "Missing bearer authentication in header", "invalid_request_error", "invalid_api_key")
    op = req.path.removeprefix("/v1/")
    body = req.json()
    return _dispatch(req, op, body.get("model", ""), azure=False)


AZURE_PATH = re.compile(r"^/openai/deployments/([A-Za-z0-9_.-]+)/(chat/completions|completions|embeddings)$")


def handle_azure(req: NativeRequest) -> NativeResponse:
    """`/openai/deployments/{deployment}/{op}?api-version=` with an `api-key` header."""
    if not req.headers.get("api-key"):
        return json_response(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}})
    if req.path == "/openai/v1/responses":
        # The v1 (OpenAI-compatible) surface: the deployment is the body's `model`, no
        # api-version needed.
        deployment = req.json().get("model", "")
        status = fail_status(deployment)
        if status:
            return json_response(status, {"error": {"code": str(status), "message": f"Mock failure {status}."}})
        return _dispatch(req, "responses", "gpt-4o-2024-08-06", azure=True)
    m = AZURE_PATH.match(req.path)
    if not m:
        return json_response(404, {"error": {"code": "404", "message": "Resource not found"}})
    if not req.query.get("api-version"):
        return json_response(404, {"error": {"code": "404", "message": "Resource not found"}})
    deployment, op = m.groups()
    status = fail_status(deployment)
    if status:
        headers = {"retry-after": "3"} if status == 429 else {}
        code = {404: "DeploymentNotFound", 429: "429"}.get(status, str(status))
        return json_response(status, {"error": {"code": code, "message": f"Mock failure {status}."}}, headers)
    # Azure answers with the underlying model's name, not the deployment's.
    return _dispatch(req, op, "gpt-4o-2024-08-06", azure=True)
