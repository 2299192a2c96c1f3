"""A native IBM watsonx.ai mock: `/ml/v1/text/chat`, `/ml/v1/text/chat_stream`, `/ml/v1/text/embeddings`.

Validates requests strictly against watsonx.ai's documented chat format (IBM watsonx.ai API
reference; IBM watsonx-ai-node-sdk `TextChatParams` / `TextChatMessages`, watsonx-ai-java-sdk
`TextChatRequest`): `version` query, `Authorization: Bearer …`, `model_id`, exactly one of
`project_id` / `space_id`, lower-case roles with their allowed fields, string contents except
user parts (`text`, `image_url` with base64 `data:` URLs), tool calls whose `arguments` are JSON
strings, tool results answering an earlier call, never both `tool_choice_option` and
`tool_choice`, parameter ranges, and no unknown top-level fields. Violations answer watsonx's
400 body `{"errors":[{"code","message","more_info"}],"trace","status_code"}`.

Answers render `common.decide()` as watsonx chat completions; streams are `id:` / `event:
message` / `data:` SSE events shaped like the service's (role chunk, content pieces, the last
piece together with `finish_reason`, tool calls as first fragment + argument pieces, then a
usage chunk with `choices: []`; no `[DONE]`), and `event: error` mid-stream when
`decision.explode`. `fail-<status>` model ids answer watsonx error bodies.
"""

from __future__ import annotations

import hashlib
import json
import re

try:  # imported as a package module or with tests/sdk/native on sys.path
    from .common import (
        BadRequest, Conversation, NativeRequest, NativeResponse, Turn, decide, embed, fail_status,
        json_response, openai_json_schema, stop_list, words,
    )
except ImportError:  # pragma: no cover
    from common import (  # type: ignore[no-redef]
        BadRequest, Conversation, NativeRequest, NativeResponse, Turn, decide, embed, fail_status,
        json_response, openai_json_schema, stop_list, words,
    )

CHAT = "/ml/v1/text/chat"
CHAT_STREAM = "/ml/v1/text/chat_stream"
EMBEDDINGS = "/ml/v1/text/embeddings"
MORE_INFO = "https://cloud.ibm.com/apidocs/watsonx-ai#text-chat"
VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CREATED = 1700000000
CREATED_AT = "2023-11-14T22:13:20.000Z"

CHAT_FIELDS = {
    "model_id", "model", "project_id", "space_id", "messages", "tools", "tool_choice_option",
    "tool_choice", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop",
    "temperature", "top_p", "time_limit", "repetition_penalty", "length_penalty",
    "include_reasoning", "reasoning_effort", "chat_template_kwargs", "guided_choice",
    "guided_regex", "guided_grammar", "guided_json", "context", "moderations", "crypto",
}
MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "refusal", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
    "control": {"role", "content", "name"},
}
EMBED_FIELDS = {"model_id", "project_id", "space_id", "inputs", "parameters"}

FAIL_CODES = {
    400: ("invalid_input_argument", "Invalid input argument."),
    401: ("authentication_token_expired", "Failed to authenticate the request due to an expired token"),
    403: ("user_authorization_failed", "You are not authorized to work with this project."),
    404: ("model_not_supported", "Model 'x' is not supported"),
    413: ("request_entity_too_large", "The request is too large."),
    429: ("token_quota_reached", "You have reached the token quota for this month."),
    500: ("internal_server_error", "Internal server error."),
    503: ("service_unavailable", "The service is unavailable."),
}


def _trace(seed: bytes) -> str:
    return hashlib.md5(seed).hexdigest()


def error_body(status: int, code: str, message: str, trace: str = "0" * 32) -> dict:
    return {
        "errors": [{"code": code, "message": message, "more_info": MORE_INFO}],
        "trace": trace,
        "status_code": status,
    }


def error_response(status: int, code: str, message: str, trace: str = "0" * 32,
                   headers: dict[str, str] | None = None) -> NativeResponse:
    return json_response(status, error_body(status, code, message, trace), headers)


# --------------------------------------------------------------------------- validation helpers


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_num(body: dict, key: str, lo: float, hi: float) -> None:
    if key in body:
        v = body[key]
        _need(_is_num(v), f"Json field '{key}' must be a number")
        _need(lo <= v <= hi, f"Json field '{key}' must be between {lo} and {hi}")


def _opt_int(body: dict, key: str, lo: int = 0) -> None:
    if key in body:
        _need(_is_int(body[key]) and body[key] >= lo, f"Json field '{key}' must be an integer >= {lo}")


def _scope(body: dict) -> None:
    has_project, has_space = "project_id" in body, "space_id" in body
    _need(has_project != has_space, "Either 'space_id' or 'project_id' has to be provided (exactly one)")
    key = "project_id" if has_project else "space_id"
    _need(isinstance(body[key], str) and body[key] != "", f"Json field '{key}' must be a non-empty string")


def _json_object_string(s, where: str) -> dict:
    _need(isinstance(s, str), f"'{where}' must be a string")
    try:
        v = json.loads(s)
    except ValueError:
        raise BadRequest(f"'{where}' is not valid JSON") from None
    _need(isinstance(v, dict), f"'{where}' must encode a JSON object")
    return v


def _parts_text_images(content, where: str) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    _need(isinstance(content, list) and content, f"'{where}' must be a string or a non-empty array")
    texts, images = [], 0
    for j, p in enumerate(content):
        at = f"{where}[{j}]"
        _need(isinstance(p, dict), f"'{at}' must be an object")
        kind = p.get("type")
        if kind == "text":
            _need(set(p) <= {"type", "text"}, f"'{at}' has unknown fields")
            _need(isinstance(p.get("text"), str), f"'{at}.text' must be a string")
            texts.append(p["text"])
        elif kind == "image_url":
            _need(set(p) <= {"type", "image_url", "data_asset"}, f"'{at}' has unknown fields")
            img = p.get("image_url")
            _need(isinstance(img, dict) and set(img) <= {"url", "detail"}, f"'{at}.image_url' must be an object")
            url = img.get("url")
            _need(isinstance(url, str) and re.match(r"^data:[\w.+-]+/[\w.+-]+;base64,", url) is not None,
                  f"'{at}.image_url.url' must be a base64 data URL")
            _need(img.get("detail", "auto") in ("low", "high", "auto"), f"'{at}.image_url.detail' is invalid")
            images += 1
        else:
            raise BadRequest(f"'{at}.type' must be 'text' or 'image_url'")
    return "\n".join(texts), images


# --------------------------------------------------------------------------- chat


def parse_chat(body) -> tuple[Conversation, int]:
    """The conversation and `n`."""
    _need(isinstance(body, dict), "The request body must be a JSON object")
    unknown = set(body) - CHAT_FIELDS
    _need(not unknown, f"Json fields {sorted(unknown)} are not allowed")
    _need(isinstance(body.get("model_id"), str) and body["model_id"], "Json field 'model_id' is required")
    _scope(body)
    msgs = body.get("messages")
    _need(isinstance(msgs, list) and msgs, "Json field 'messages' must be a non-empty array")

    system: list[str] = []
    turns: list[Turn] = []
    call_ids: set[str] = set()
    for i, m in enumerate(msgs):
        at = f"messages[{i}]"
        _need(isinstance(m, dict), f"'{at}' must be an object")
        role = m.get("role")
        _need(role in MESSAGE_FIELDS, f"'{at}.role' must be one of {sorted(MESSAGE_FIELDS)} (lower case)")
        unknown = set(m) - MESSAGE_FIELDS[role]
        _need(not unknown, f"'{at}' has fields not allowed for role '{role}': {sorted(unknown)}")
        if "name" in m:
            _need(isinstance(m["name"], str), f"'{at}.name' must be a string")
        content = m.get("content")
        if role in ("system", "control"):
            _need(isinstance(content, str), f"'{at}.content' must be a string")
            if role == "system":
                system.append(content)
        elif role == "user":
            text, images = _parts_text_images(content, f"{at}.content")
            turns.append(Turn("user", text=text, images=images))
        elif role == "assistant":
            calls = m.get("tool_calls")
            _need(content is None or isinstance(content, str), f"'{at}.content' must be a string")
            _need(content is not None or calls, f"'{at}.content' is required unless 'tool_calls' is given")
            parsed_calls = []
            if calls is not None:
                _need(isinstance(calls, list) and calls, f"'{at}.tool_calls' must be a non-empty array")
                for j, c in enumerate(calls):
                    cat = f"{at}.tool_calls[{j}]"
                    _need(isinstance(c, dict) and set(c) <= {"id", "type", "function"}, f"'{cat}' is invalid")
                    _need(isinstance(c.get("id"), str) and c["id"], f"'{cat}.id' is required")
                    _need(c.get("type") == "function", f"'{cat}.type' must be 'function'")
                    f = c.get("function")
                    _need(isinstance(f, dict) and set(f) <= {"name", "arguments"}, f"'{cat}.function' is invalid")
                    _need(isinstance(f.get("name"), str) and f["name"], f"'{cat}.function.name' is required")
                    args = _json_object_string(f.get("arguments"), f"{cat}.function.arguments")
                    call_ids.add(c["id"])
                    parsed_calls.append((c["id"], f["name"], args))
            turns.append(Turn("assistant", text=content or "", tool_calls=parsed_calls))
        else:  # tool
            _need(isinstance(content, str), f"'{at}.content' must be a string")
            tcid = m.get("tool_call_id")
            _need(isinstance(tcid, str) and tcid, f"'{at}.tool_call_id' is required")
            _need(tcid in call_ids, f"'{at}.tool_call_id' does not answer an earlier assistant tool call")
            if turns and turns[-1].role == "tool":
                turns[-1].tool_results.append((tcid, content))
            else:
                turns.append(Turn("tool", tool_results=[(tcid, content)]))

    tools: list[str] = []
    if "tools" in body:
        _need(isinstance(body["tools"], list), "Json field 'tools' must be an array")
        for k, t in enumerate(body["tools"]):
            at = f"tools[{k}]"
            _need(isinstance(t, dict) and set(t) <= {"type", "function"} and t.get("type") == "function",
                  f"'{at}' must be {{type:'function', function:{{…}}}}")
            f = t.get("function")
            _need(isinstance(f, dict) and set(f) <= {"name", "description", "parameters"},
                  f"'{at}.function' has unknown fields")
            _need(isinstance(f.get("name"), str) and f["name"], f"'{at}.function.name' is required")
            _need(isinstance(f.get("description", ""), str), f"'{at}.function.description' must be a string")
            _need(isinstance(f.get("parameters", {}), dict), f"'{at}.function.parameters' must be an object")
            tools.append(f["name"])

    _need(not ("tool_choice_option" in body and "tool_choice" in body),
          "Only one of 'tool_choice_option' or 'tool_choice' must be present")
    tool_choice = None
    if "tool_choice_option" in body:
        _need(body["tool_choice_option"] in ("none", "auto", "required"),
              "Json field 'tool_choice_option' must be one of none, auto, required")
        tool_choice = body["tool_choice_option"]
    if "tool_choice" in body:
        tc = body["tool_choice"]
        _need(isinstance(tc, dict) and tc.get("type") == "function" and isinstance(tc.get("function"), dict)
              and isinstance(tc["function"].get("name"), str), "Json field 'tool_choice' is invalid")
        _need(tc["function"]["name"] in tools, "Json field 'tool_choice' names a function not in 'tools'")
        tool_choice = tc["function"]["name"]

    for key in ("max_tokens", "max_completion_tokens", "seed", "time_limit", "top_logprobs"):
        _opt_int(body, key)
    _opt_int(body, "n", 1)
    _opt_num(body, "temperature", 0, 2)
    _opt_num(body, "top_p", 0, 1)
    _opt_num(body, "frequency_penalty", -2, 2)
    _opt_num(body, "presence_penalty", -2, 2)
    if "stop" in body:
        stop = body["stop"]
        _need(isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop),
              "Json field 'stop' must be an array of at most 4 strings")
    if "response_format" in body:
        rf = body["response_format"]
        _need(isinstance(rf, dict) and rf.get("type") in ("text", "json_object", "json_schema"),
              "Json field 'response_format.type' must be text, json_object or json_schema")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            _need(isinstance(js, dict) and isinstance(js.get("name"), str) and isinstance(js.get("schema"), dict),
                  "Json field 'response_format.json_schema' needs 'name' and 'schema'")
            _need(set(rf) <= {"type", "json_schema"}, "Json field 'response_format' has unknown fields")
        else:
            _need(set(rf) == {"type"}, "Json field 'response_format' has unknown fields")

    _need(turns and any(t.role == "user" for t in turns), "'messages' needs at least one user message")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    conv = Conversation(
        system="\n\n".join(system) if system else None,
        turns=turns,
        tools=tools,
        tool_choice=tool_choice,
        max_tokens=max_tokens or None,  # 0 means the model's configured maximum
        stop=stop_list(body.get("stop")),
        json_schema=openai_json_schema(body.get("response_format")),
    )
    return conv, body.get("n", 1)


def _ids(body: bytes) -> tuple[str, str]:
    digest = hashlib.md5(body).hexdigest()
    return f"chatcmpl-{digest}", digest


def _call_id(digest: str, k: int) -> str:
    return f"chatcmpl-tool-{hashlib.md5(f'{digest}:{k}'.encode()).hexdigest()}"


def _usage(d) -> dict:
    return {
        "completion_tokens": d.completion_tokens,
        "prompt_tokens": d.prompt_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
    }


def _head(chat_id: str, model_id: str) -> dict:
    return {"id": chat_id, "object": "chat.completion.chunk", "model_id": model_id, "model": model_id}


def _tail() -> dict:
    return {"created": CREATED, "model_version": "1.1.0", "created_at": CREATED_AT}


def chat_response(req: NativeRequest, body: dict, conv: Conversation, n: int) -> NativeResponse:
    d = decide(conv)
    chat_id, digest = _ids(req.body)
    message: dict = {"role": "assistant"}
    if d.tool_calls:
        message["content"] = ""
        message["tool_calls"] = [
            {"id": _call_id(digest, k), "type": "function",
             "function": {"name": name, "arguments": json.dumps(args, separators=(",", ":"))}}
            for k, (name, args) in enumerate(d.tool_calls)
        ]
    else:
        message["content"] = d.text
    answer = {
        "id": chat_id,
        "object": "chat.completion",
        "model_id": body["model_id"],
        "model": body["model_id"],
        "choices": [{"index": i, "message": message, "finish_reason": d.finish} for i in range(n)],
        **_tail(),
        "usage": _usage(d),
        "system": {"warnings": [{"message": "This model is a mock.", "id": "disclaimer_warning",
                                 "more_info": MORE_INFO}]},
    }
    return json_response(200, answer)


def _sse(i: int, data: dict, event: str = "message") -> bytes:
    return f"id: {i}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def chat_stream_response(req: NativeRequest, body: dict, conv: Conversation) -> NativeResponse:
    d = decide(conv)
    chat_id, digest = _ids(req.body)
    model = body["model_id"]
    events: list[bytes] = []

    def emit(delta: dict, finish: str | None) -> None:
        chunk = {**_head(chat_id, model),
                 "choices": [{"index": 0, "finish_reason": finish, "delta": delta}], **_tail()}
        events.append(_sse(len(events) + 1, chunk))

    pieces: list[dict] = []
    for k, (name, args) in enumerate(d.tool_calls):
        pieces.append({"tool_calls": [{"index": k, "id": _call_id(digest, k), "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        pieces += [{"tool_calls": [{"index": k, "function": {"name": "", "arguments": a}}]}
                   for a in d.arg_pieces(args)]
    if not d.tool_calls:
        pieces += [{"content": p} for p in d.text_pieces()]
    emit({"role": "assistant", "content": ""}, None)
    if not pieces:
        pieces.append({})
    for idx, delta in enumerate(pieces):
        last = idx == len(pieces) - 1
        emit(delta, d.finish if last else None)
        if d.explode and idx == 0:
            err = error_body(500, "model_inference_failed", "The model failed while generating the answer.",
                             _trace(req.body))
            events.append(_sse(len(events) + 1, err, event="error"))
            return NativeResponse(200, {"content-type": "text/event-stream"}, chunks=events)
    usage_chunk = {**_head(chat_id, model), "choices": [], **_tail(), "usage": _usage(d)}
    events.append(_sse(len(events) + 1, usage_chunk))
    return NativeResponse(200, {"content-type": "text/event-stream"}, chunks=events)


# --------------------------------------------------------------------------- embeddings


def embeddings_response(body) -> NativeResponse:
    _need(isinstance(body, dict), "The request body must be a JSON object")
    unknown = set(body) - EMBED_FIELDS
    _need(not unknown, f"Json fields {sorted(unknown)} are not allowed")
    _need(isinstance(body.get("model_id"), str) and body["model_id"], "Json field 'model_id' is required")
    _scope(body)
    inputs = body.get("inputs")
    _need(isinstance(inputs, list) and inputs and all(isinstance(s, str) and s for s in inputs),
          "Json field 'inputs' must be a non-empty array of non-empty strings")
    params = body.get("parameters", {})
    _need(isinstance(params, dict) and set(params) <= {"truncate_input_tokens", "return_options"},
          "Json field 'parameters' is invalid")
    return_text = bool(params.get("return_options", {}).get("input_text"))
    results = []
    for text in inputs:
        r = {"embedding": embed(text, None)}
        if return_text:
            r["input"] = text
        results.append(r)
    return json_response(200, {
        "model_id": body["model_id"],
        "results": results,
        "created_at": CREATED_AT,
        "input_token_count": sum(words(t) for t in inputs),
    })


# --------------------------------------------------------------------------- entry point


def handle(req: NativeRequest) -> NativeResponse:
    trace = _trace(req.body or b"")
    if req.path not in (CHAT, CHAT_STREAM, EMBEDDINGS):
        return error_response(404, "not_found", f"Path {req.path} is not found", trace)
    if req.method != "POST":
        return error_response(405, "method_not_allowed", f"Method {req.method} is not allowed", trace)
    if not VERSION_RE.match(req.query.get("version", "")):
        return error_response(400, "invalid_request_entity",
                              "Missing or invalid query parameter 'version' (YYYY-MM-DD)", trace)
    auth = req.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[len("Bearer "):].strip():
        return error_response(401, "authentication_token_not_valid",
                              "Failed to authenticate the request due to invalid token", trace)
    try:
        body = req.json()
    except ValueError:
        return error_response(400, "json_type_error", "The request body is not valid JSON", trace)
    model_id = body.get("model_id", "") if isinstance(body, dict) else ""
    status = fail_status(model_id)
    if status:
        code, message = FAIL_CODES.get(status, (f"http_{status}", f"Failure {status}"))
        headers = {"retry-after": "3"} if status == 429 else None
        return error_response(status, code, message, trace, headers)
    try:
        if req.path == EMBEDDINGS:
            return embeddings_response(body)
        conv, n = parse_chat(body)
        if req.path == CHAT_STREAM:
            _need(n == 1, "Json field 'n' must be 1 for streams")
            return chat_stream_response(req, body, conv)
        return chat_response(req, body, conv, n)
    except BadRequest as e:
        return error_response(400, "json_validation_error", str(e), trace)


if __name__ == "__main__":
    auth = {"authorization": "Bearer token", "content-type": "application/json"}
    q = {"version": "2024-05-31"}

    def show(path: str, body: dict, headers=None, query=None) -> None:
        req = NativeRequest("POST", path, q if query is None else query, auth if headers is None else headers,
                            json.dumps(body).encode())
        r = handle(req)
        print(f"--- {path} -> {r.status} {r.headers}")
        print(b"".join(r.chunks).decode() if r.chunks is not None else r.body.decode())

    base = {"model_id": "ibm/granite-3-8b-instruct", "project_id": "p-1"}
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    show(CHAT, {**base, "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "hello there"}], "max_tokens": 50})
    show(CHAT, {**base, "messages": [{"role": "user", "content": "weather in Paris and London?"}],
                "tools": [weather]})
    show(CHAT, {**base, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], "tools": [weather]})
    show(CHAT_STREAM, {**base, "messages": [{"role": "user", "content": "stream this please"}]})
    show(CHAT_STREAM, {**base, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [weather],
                       "tool_choice_option": "required"})
    show(CHAT_STREAM, {**base, "messages": [{"role": "user", "content": "please explode mid-stream now"}]})
    show(EMBEDDINGS, {**base, "inputs": ["a b", "c"]})
    show(CHAT, {**base, "messages": [{"role": "user", "content": "x"}], "user": "u"})
    show(CHAT, {**base, "messages": [{"role": "user", "content": "x"}], "tool_choice_option": "auto",
                "tool_choice": {"type": "function", "function": {"name": "weather"}}, "tools": [weather]})
    show(CHAT, {**base, "model_id": "fail-429", "messages": [{"role": "user", "content": "x"}]})
    show(CHAT, {**base, "messages": [{"role": "user", "content": "x"}]}, headers={})
    show(CHAT, {**base, "messages": [{"role": "user", "content": "x"}]}, query={})
