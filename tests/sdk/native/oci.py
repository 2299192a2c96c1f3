"""A native OCI Generative AI mock: `POST /20231130/actions/chat`, GENERIC and COHERE formats.

Validates requests strictly against the OCI Generative AI Inference API (field names, enums
and required fields from the OCI SDK models, oracle/oci-python-sdk
`oci/generative_ai_inference/models`: `ChatDetails`, `OnDemandServingMode` /
`DedicatedServingMode`, `GenericChatRequest`, `CohereChatRequest`, message and content types):
an `authorization: Signature …` header and `x-content-sha256` = base64(SHA-256(body)) (the
signature itself is checked by test_oci_passthrough.py, not here), `compartmentId`,
`servingMode`, `chatRequest.apiFormat` matching the model family, upper-case roles and
content-part types, tool calls whose `arguments` are JSON strings, tool results answering an
earlier call, COHERE `TOOL` history entries followed by a `CHATBOT` entry, parameter ranges,
and no unknown fields. Violations answer OCI's `{"code":"InvalidParameter","message":…}` (400),
with an `opc-request-id` header like every OCI answer.

Answers render `common.decide()` as `ChatResult`s; streams are data-only SSE (`data: {…}`),
GENERIC as `ChatChoice`-like events (text pieces, tool-call first fragment then id-less
argument pieces, a finish event, then a usage event when `streamOptions.isIncludeUsage`),
COHERE as `{"apiFormat":"COHERE","text":…}` pieces, a `toolCalls` event, and a final event
repeating the whole answer with `finishReason` (and `usage`). `decision.explode` sends OCI's
error body as an event (GENERIC) or `finishReason: ERROR` with `errorMessage` (COHERE).
`fail-<status>` model ids answer OCI error bodies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

try:  # imported as a package module or with tests/sdk/native on sys.path
    from .common import (
        BadRequest, Conversation, NativeRequest, NativeResponse, Turn, decide, fail_status, json_response,
        stop_list,
    )
except ImportError:  # pragma: no cover
    from common import (  # type: ignore[no-redef]
        BadRequest, Conversation, NativeRequest, NativeResponse, Turn, decide, fail_status, json_response,
        stop_list,
    )

CHAT = "/20231130/actions/chat"


def _json_schema(rf) -> dict | None:
    """`responseFormat` (GENERIC `JSON_SCHEMA.jsonSchema.schema`, `JSON_OBJECT` with or without a
    COHERE `schema`) as `Conversation.json_schema`."""
    if not isinstance(rf, dict) or rf.get("type") == "TEXT":
        return None
    if rf.get("type") == "JSON_SCHEMA":
        return (rf.get("jsonSchema") or {}).get("schema") or {}
    return rf.get("schema") or {}
TIME_CREATED = "2023-11-14T22:13:20.000Z"
NOT_AUTHENTICATED = "The required information to complete authentication was not provided or was incorrect."

GENERIC_FIELDS = {
    "apiFormat", "messages", "reasoningEffort", "verbosity", "metadata", "isStream", "streamOptions",
    "numGenerations", "seed", "isEcho", "topK", "topP", "temperature", "frequencyPenalty",
    "presencePenalty", "stop", "logProbs", "maxTokens", "maxCompletionTokens", "logitBias", "prediction",
    "responseFormat", "toolChoice", "isParallelToolCalls", "tools", "webSearchOptions", "serviceTier",
}
COHERE_FIELDS = {
    "apiFormat", "message", "chatHistory", "documents", "responseFormat", "isSearchQueriesOnly",
    "preambleOverride", "isStream", "streamOptions", "maxTokens", "maxInputTokens", "temperature", "topK",
    "topP", "promptTruncation", "frequencyPenalty", "presencePenalty", "seed", "isEcho", "tools",
    "toolResults", "isForceSingleStep", "stopSequences", "isRawPrompting", "citationQuality", "safetyMode",
}
GENERIC_MESSAGE_FIELDS = {
    "SYSTEM": {"role", "content", "name"},
    "DEVELOPER": {"role", "content", "name"},
    "USER": {"role", "content", "name"},
    "ASSISTANT": {"role", "content", "name", "refusal", "toolCalls", "annotations", "reasoningContent"},
    "TOOL": {"role", "content", "toolCallId"},
}
COHERE_ENTRY_FIELDS = {
    "USER": {"role", "message"},
    "CHATBOT": {"role", "message", "toolCalls"},
    "SYSTEM": {"role", "message"},
    "TOOL": {"role", "toolResults"},
}
FAIL_CODES = {
    400: ("InvalidParameter", "Invalid parameter."),
    401: ("NotAuthenticated", NOT_AUTHENTICATED),
    403: ("NotAuthorized", "Authorization failed or requested resource not found."),
    404: ("NotAuthorizedOrNotFound", "Authorization failed or requested resource not found."),
    409: ("Conflict", "The resource is in a conflicting state."),
    429: ("TooManyRequests", "Too many requests for the user"),
    500: ("InternalServerError", "Internal server error"),
    503: ("ServiceUnavailable", "The service is currently unavailable."),
}


def request_id(body: bytes) -> str:
    return hashlib.md5(body).hexdigest().upper()


def error_response(status: int, code: str, message: str, rid: str,
                   headers: dict[str, str] | None = None) -> NativeResponse:
    h = {"opc-request-id": rid}
    h.update(headers or {})
    return json_response(status, {"code": code, "message": message}, h)


# --------------------------------------------------------------------------- validation helpers


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fields(obj, allowed: set[str], where: str) -> None:
    _need(isinstance(obj, dict), f"{where} must be an object")
    unknown = set(obj) - allowed
    _need(not unknown, f"{where} has unrecognized properties: {sorted(unknown)}")


def _opt_num(obj: dict, key: str, lo: float, hi: float) -> None:
    if key in obj:
        _need(_is_num(obj[key]) and lo <= obj[key] <= hi, f"chatRequest.{key} must be a number in [{lo}, {hi}]")


def _opt_int(obj: dict, key: str, lo: int) -> None:
    if key in obj:
        _need(_is_int(obj[key]) and obj[key] >= lo, f"chatRequest.{key} must be an integer >= {lo}")


def _opt_bool(obj: dict, key: str) -> None:
    if key in obj:
        _need(isinstance(obj[key], bool), f"chatRequest.{key} must be a boolean")


def _str_list(obj: dict, key: str) -> None:
    if key in obj:
        v = obj[key]
        _need(isinstance(v, list) and all(isinstance(s, str) for s in v), f"chatRequest.{key} must be a list of strings")


def _json_object_string(s, where: str) -> dict:
    _need(isinstance(s, str), f"{where} must be a string")
    try:
        v = json.loads(s)
    except ValueError:
        raise BadRequest(f"{where} is not valid JSON") from None
    _need(isinstance(v, dict), f"{where} must encode a JSON object")
    return v


def _stream_options(r: dict) -> bool:
    _opt_bool(r, "isStream")
    if "streamOptions" in r:
        _fields(r["streamOptions"], {"isIncludeUsage"}, "chatRequest.streamOptions")
        _need(r.get("isStream") is True, "chatRequest.streamOptions is only allowed with isStream")
        _opt_bool(r["streamOptions"], "isIncludeUsage")
    return bool(r.get("streamOptions", {}).get("isIncludeUsage"))


# --------------------------------------------------------------------------- GENERIC


def _generic_content(content, role: str, where: str) -> tuple[str, int]:
    _need(isinstance(content, list), f"{where} must be a list of ChatContent")
    texts, images = [], 0
    for j, p in enumerate(content):
        at = f"{where}[{j}]"
        _need(isinstance(p, dict), f"{at} must be an object")
        if p.get("type") == "TEXT":
            _fields(p, {"type", "text"}, at)
            _need(isinstance(p.get("text"), str), f"{at}.text must be a string")
            texts.append(p["text"])
        elif p.get("type") == "IMAGE":
            _need(role == "USER", f"{at}: images are accepted in USER messages only")
            _fields(p, {"type", "imageUrl"}, at)
            img = p.get("imageUrl")
            _fields(img, {"url", "detail"}, f"{at}.imageUrl")
            url = img.get("url")
            _need(isinstance(url, str) and re.match(r"^data:[\w.+-]+/[\w.+-]+;(base64|uri),", url) is not None,
                  f"{at}.imageUrl.url must be a data: URL with base64 image data")
            _need(img.get("detail", "AUTO") in ("AUTO", "HIGH", "LOW"), f"{at}.imageUrl.detail must be AUTO, HIGH or LOW")
            images += 1
        else:
            raise BadRequest(f"{at}.type must be TEXT or IMAGE")
    return "\n".join(texts), images


def parse_generic(r: dict) -> tuple[Conversation, int, bool, bool]:
    """(conversation, numGenerations, isStream, include usage)."""
    _fields(r, GENERIC_FIELDS, "chatRequest")
    msgs = r.get("messages")
    _need(isinstance(msgs, list) and msgs, "chatRequest.messages must be a non-empty list")
    system: list[str] = []
    turns: list[Turn] = []
    call_ids: set[str] = set()
    for i, m in enumerate(msgs):
        at = f"chatRequest.messages[{i}]"
        _need(isinstance(m, dict) and m.get("role") in GENERIC_MESSAGE_FIELDS,
              f"{at}.role must be one of {sorted(GENERIC_MESSAGE_FIELDS)}")
        role = m["role"]
        _fields(m, GENERIC_MESSAGE_FIELDS[role], at)
        if "name" in m:
            _need(isinstance(m["name"], str), f"{at}.name must be a string")
        if role in ("SYSTEM", "DEVELOPER"):
            text, _ = _generic_content(m.get("content"), role, f"{at}.content")
            system.append(text)
        elif role == "USER":
            text, images = _generic_content(m.get("content"), role, f"{at}.content")
            turns.append(Turn("user", text=text, images=images))
        elif role == "ASSISTANT":
            calls = m.get("toolCalls")
            text = ""
            if m.get("content") is not None:
                text, _ = _generic_content(m["content"], role, f"{at}.content")
            _need(m.get("content") is not None or calls, f"{at} needs content or toolCalls")
            parsed = []
            if calls is not None:
                _need(isinstance(calls, list) and calls, f"{at}.toolCalls must be a non-empty list")
                for j, c in enumerate(calls):
                    cat = f"{at}.toolCalls[{j}]"
                    _fields(c, {"type", "id", "name", "arguments"}, cat)
                    _need(c.get("type") == "FUNCTION", f"{cat}.type must be FUNCTION")
                    _need(isinstance(c.get("id"), str) and c["id"], f"{cat}.id is required")
                    _need(isinstance(c.get("name"), str) and c["name"], f"{cat}.name is required")
                    args = _json_object_string(c.get("arguments"), f"{cat}.arguments")
                    call_ids.add(c["id"])
                    parsed.append((c["id"], c["name"], args))
            turns.append(Turn("assistant", text=text, tool_calls=parsed))
        else:  # TOOL
            text, _ = _generic_content(m.get("content"), role, f"{at}.content")
            tcid = m.get("toolCallId")
            _need(isinstance(tcid, str) and tcid in call_ids, f"{at}.toolCallId must answer an earlier ASSISTANT toolCall")
            if turns and turns[-1].role == "tool":
                turns[-1].tool_results.append((tcid, text))
            else:
                turns.append(Turn("tool", tool_results=[(tcid, text)]))

    tools: list[str] = []
    if "tools" in r:
        _need(isinstance(r["tools"], list), "chatRequest.tools must be a list")
        for k, t in enumerate(r["tools"]):
            at = f"chatRequest.tools[{k}]"
            _fields(t, {"type", "name", "description", "parameters"}, at)
            _need(t.get("type") == "FUNCTION", f"{at}.type must be FUNCTION")
            _need(isinstance(t.get("name"), str) and t["name"], f"{at}.name is required")
            _need(isinstance(t.get("description", ""), str), f"{at}.description must be a string")
            _need(isinstance(t.get("parameters", {}), dict), f"{at}.parameters must be an object")
            tools.append(t["name"])
    tool_choice = None
    if "toolChoice" in r:
        tc = r["toolChoice"]
        _need(isinstance(tc, dict) and tc.get("type") in ("NONE", "AUTO", "REQUIRED", "FUNCTION"),
              "chatRequest.toolChoice.type must be NONE, AUTO, REQUIRED or FUNCTION")
        if tc["type"] == "FUNCTION":
            _fields(tc, {"type", "name"}, "chatRequest.toolChoice")
            _need(tc.get("name") in tools, "chatRequest.toolChoice.name must name one of the tools")
            tool_choice = tc["name"]
        else:
            _fields(tc, {"type"}, "chatRequest.toolChoice")
            tool_choice = tc["type"].lower()
    if "responseFormat" in r:
        rf = r["responseFormat"]
        _need(isinstance(rf, dict) and rf.get("type") in ("TEXT", "JSON_OBJECT", "JSON_SCHEMA"),
              "chatRequest.responseFormat.type must be TEXT, JSON_OBJECT or JSON_SCHEMA")
        if rf["type"] == "JSON_SCHEMA":
            _fields(rf, {"type", "jsonSchema"}, "chatRequest.responseFormat")
            js = rf.get("jsonSchema")
            _fields(js, {"name", "description", "schema", "isStrict"}, "chatRequest.responseFormat.jsonSchema")
            _need(isinstance(js.get("name"), str), "chatRequest.responseFormat.jsonSchema.name is required")
            _need(isinstance(js.get("schema", {}), dict), "chatRequest.responseFormat.jsonSchema.schema must be an object")
        else:
            _fields(rf, {"type"}, "chatRequest.responseFormat")
    _opt_int(r, "maxTokens", 1)
    _opt_int(r, "maxCompletionTokens", 1)
    _opt_int(r, "numGenerations", 1)
    _opt_int(r, "topK", -1)
    if "seed" in r:
        _need(_is_int(r["seed"]), "chatRequest.seed must be an integer")
    _opt_num(r, "temperature", 0, 2)
    _opt_num(r, "topP", 0, 1)
    _opt_num(r, "frequencyPenalty", -2, 2)
    _opt_num(r, "presencePenalty", -2, 2)
    _opt_bool(r, "isParallelToolCalls")
    _str_list(r, "stop")
    if "reasoningEffort" in r:
        _need(r["reasoningEffort"] in REASONING_EFFORTS,
              f"chatRequest.reasoningEffort must be one of {', '.join(REASONING_EFFORTS)}")
    include_usage = _stream_options(r)
    _need(any(t.role == "user" for t in turns), "chatRequest.messages needs a USER message")
    conv = Conversation(
        system="\n\n".join(system) if system else None,
        turns=turns,
        tools=tools,
        tool_choice=tool_choice,
        max_tokens=r.get("maxCompletionTokens", r.get("maxTokens")),
        stop=stop_list(r.get("stop")),
        json_schema=_json_schema(r.get("responseFormat")),
    )
    n = r.get("numGenerations", 1)
    _need(not (r.get("isStream") and n > 1), "chatRequest.numGenerations must be 1 when streaming")
    return conv, n, bool(r.get("isStream")), include_usage


# GenericChatRequest.reasoningEffort (the OCI SDKs' REASONING_EFFORT_* constants); reasoning
# models (OpenAI's and xAI's on OCI) answer with `reasoningContent` and count the reasoning
# tokens in `completionTokensDetails.reasoningTokens`; other models refuse the field.
REASONING_EFFORTS = ("NONE", "MINIMAL", "LOW", "MEDIUM", "HIGH")
REASONING_MODELS = ("openai.", "xai.")
REASONING_TEXT = "Considering what the user asked."
REASONING_TOKENS = 6


def reasons(r: dict) -> bool:
    return r.get("reasoningEffort", "NONE") != "NONE"


def _usage(d, reasoning: bool = False) -> dict:
    extra = REASONING_TOKENS if reasoning else 0
    u = {"promptTokens": d.prompt_tokens, "completionTokens": d.completion_tokens + extra,
         "totalTokens": d.prompt_tokens + d.completion_tokens + extra}
    if reasoning:
        u["completionTokensDetails"] = {"reasoningTokens": extra}
    return u


def _call_id(rid: str, k: int) -> str:
    return f"call_{hashlib.md5(f'{rid}:{k}'.encode()).hexdigest()[:24]}"


def generic_response(model: str, conv: Conversation, n: int, rid: str, reasoning: bool = False) -> NativeResponse:
    d = decide(conv)
    message: dict = {"role": "ASSISTANT", "content": None if d.tool_calls else [{"type": "TEXT", "text": d.text}]}
    if reasoning:
        message["reasoningContent"] = REASONING_TEXT
    if d.tool_calls:
        message["toolCalls"] = [
            {"type": "FUNCTION", "id": _call_id(rid, k), "name": name,
             "arguments": json.dumps(args, separators=(",", ":"))}
            for k, (name, args) in enumerate(d.tool_calls)
        ]
    result = {
        "modelId": model,
        "modelVersion": "1.0.0",
        "chatResponse": {
            "apiFormat": "GENERIC",
            "timeCreated": TIME_CREATED,
            "choices": [{"index": i, "message": message, "finishReason": d.finish, "logprobs": {}} for i in range(n)],
            "usage": _usage(d, reasoning),
        },
    }
    return json_response(200, result, {"opc-request-id": rid})


def _data(obj: dict) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def generic_stream(conv: Conversation, include_usage: bool, rid: str, reasoning: bool = False) -> NativeResponse:
    d = decide(conv)
    events: list[bytes] = []

    def choice(message: dict, **extra) -> None:
        events.append(_data({"index": 0, "message": {"role": "ASSISTANT", **message}, **extra}))

    if reasoning:
        choice({"reasoningContent": REASONING_TEXT})

    for k, piece in enumerate(d.text_pieces() if not d.tool_calls else []):
        choice({"content": [{"type": "TEXT", "text": piece}]})
        if d.explode and k == 0:
            events.append(_data({"code": "InternalServerError",
                                 "message": "The model failed while generating the answer."}))
            return NativeResponse(200, {"content-type": "text/event-stream", "opc-request-id": rid}, chunks=events)
    for k, (name, args) in enumerate(d.tool_calls):
        choice({"toolCalls": [{"type": "FUNCTION", "id": _call_id(rid, k), "name": name, "arguments": ""}]})
        for piece in d.arg_pieces(args):
            choice({"toolCalls": [{"arguments": piece}]})
    choice({}, finishReason=d.finish)
    if include_usage:
        events.append(_data({"usage": _usage(d, reasoning)}))
    return NativeResponse(200, {"content-type": "text/event-stream", "opc-request-id": rid}, chunks=events)


# --------------------------------------------------------------------------- COHERE


def _cohere_call(c, where: str) -> tuple[str, dict]:
    _fields(c, {"name", "parameters"}, where)
    _need(isinstance(c.get("name"), str) and c["name"], f"{where}.name is required")
    _need(isinstance(c.get("parameters"), dict), f"{where}.parameters is required (an object)")
    return c["name"], c["parameters"]


def _cohere_results(results, where: str) -> list[tuple[str, str]]:
    _need(isinstance(results, list) and results, f"{where} must be a non-empty list")
    out = []
    for k, tr in enumerate(results):
        at = f"{where}[{k}]"
        _fields(tr, {"call", "outputs"}, at)
        name, _ = _cohere_call(tr.get("call"), f"{at}.call")
        outputs = tr.get("outputs")
        _need(isinstance(outputs, list) and outputs and all(isinstance(o, dict) for o in outputs),
              f"{at}.outputs must be a non-empty list of objects")
        if len(outputs) == 1 and set(outputs[0]) == {"output"} and isinstance(outputs[0]["output"], str):
            text = outputs[0]["output"]
        else:
            text = json.dumps(outputs, separators=(",", ":"))
        out.append((name, text))
    return out


def parse_cohere(r: dict) -> tuple[Conversation, bool, bool]:
    """(conversation, isStream, include usage)."""
    _fields(r, COHERE_FIELDS, "chatRequest")
    _need(isinstance(r.get("message"), str), "chatRequest.message is required")
    system: list[str] = []
    if "preambleOverride" in r:
        _need(isinstance(r["preambleOverride"], str), "chatRequest.preambleOverride must be a string")
        system.append(r["preambleOverride"])
    turns: list[Turn] = []
    history = r.get("chatHistory", [])
    _need(isinstance(history, list), "chatRequest.chatHistory must be a list")
    for i, e in enumerate(history):
        at = f"chatRequest.chatHistory[{i}]"
        _need(isinstance(e, dict) and e.get("role") in COHERE_ENTRY_FIELDS,
              f"{at}.role must be one of {sorted(COHERE_ENTRY_FIELDS)}")
        role = e["role"]
        _fields(e, COHERE_ENTRY_FIELDS[role], at)
        if role == "TOOL":
            _need(i + 1 < len(history) and history[i + 1].get("role") == "CHATBOT",
                  f"{at}: a TOOL message must be followed by a CHATBOT message")
            results = _cohere_results(e.get("toolResults"), f"{at}.toolResults")
            turns.append(Turn("tool", tool_results=results))
            continue
        if role != "CHATBOT" or "message" in e:
            _need(isinstance(e.get("message"), str), f"{at}.message must be a string")
        text = e.get("message", "")
        if role == "USER":
            turns.append(Turn("user", text=text))
        elif role == "SYSTEM":
            system.append(text)
        else:
            calls = []
            if "toolCalls" in e:
                _need(isinstance(e["toolCalls"], list), f"{at}.toolCalls must be a list")
                for k, c in enumerate(e["toolCalls"]):
                    name, params = _cohere_call(c, f"{at}.toolCalls[{k}]")
                    calls.append((f"call_{i}_{k}", name, params))
            turns.append(Turn("assistant", text=text.strip(), tool_calls=calls))
    if "toolResults" in r:
        turns.append(Turn("tool", tool_results=_cohere_results(r["toolResults"], "chatRequest.toolResults")))
    else:
        _need(r["message"] != "", "chatRequest.message must not be empty without toolResults")
        turns.append(Turn("user", text=r["message"]))

    tools: list[str] = []
    if "tools" in r:
        _need(isinstance(r["tools"], list), "chatRequest.tools must be a list")
        for k, t in enumerate(r["tools"]):
            at = f"chatRequest.tools[{k}]"
            _fields(t, {"name", "description", "parameterDefinitions"}, at)
            _need(isinstance(t.get("name"), str) and t["name"], f"{at}.name is required")
            _need(isinstance(t.get("description"), str), f"{at}.description is required")
            defs = t.get("parameterDefinitions", {})
            _need(isinstance(defs, dict), f"{at}.parameterDefinitions must be an object")
            for pname, pdef in defs.items():
                pat = f"{at}.parameterDefinitions.{pname}"
                _fields(pdef, {"type", "description", "isRequired"}, pat)
                _need(isinstance(pdef.get("type"), str) and pdef["type"], f"{pat}.type is required")
                _need(isinstance(pdef.get("description", ""), str), f"{pat}.description must be a string")
                _need(isinstance(pdef.get("isRequired", False), bool), f"{pat}.isRequired must be a boolean")
            tools.append(t["name"])
    if "responseFormat" in r:
        rf = r["responseFormat"]
        _need(isinstance(rf, dict) and rf.get("type") in ("TEXT", "JSON_OBJECT"),
              "chatRequest.responseFormat.type must be TEXT or JSON_OBJECT")
        _fields(rf, {"type", "schema"} if rf["type"] == "JSON_OBJECT" else {"type"}, "chatRequest.responseFormat")
    _opt_int(r, "maxTokens", 1)
    _opt_int(r, "topK", 0)
    if "seed" in r:
        _need(_is_int(r["seed"]), "chatRequest.seed must be an integer")
    _opt_num(r, "temperature", 0, 1)
    _opt_num(r, "topP", 0, 1)
    _opt_num(r, "frequencyPenalty", 0, 1)
    _opt_num(r, "presencePenalty", 0, 1)
    _str_list(r, "stopSequences")
    include_usage = _stream_options(r)
    conv = Conversation(
        system="\n\n".join(system) if system else None,
        turns=turns,
        tools=tools,
        tool_choice=None,
        max_tokens=r.get("maxTokens"),
        stop=stop_list(r.get("stopSequences")),
        json_schema=_json_schema(r.get("responseFormat")),
    )
    return conv, bool(r.get("isStream")), include_usage


COHERE_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "COMPLETE"}


def _cohere_answer(conv: Conversation, d, with_usage: bool) -> dict:
    last_user = next((t.text for t in reversed(conv.turns) if t.role == "user"), "")
    answer = {
        "apiFormat": "COHERE",
        "text": d.text,
        "chatHistory": [{"role": "USER", "message": last_user}, {"role": "CHATBOT", "message": d.text}],
        "finishReason": COHERE_FINISH[d.finish],
    }
    if d.tool_calls:
        answer["toolCalls"] = [{"name": name, "parameters": args} for name, args in d.tool_calls]
    if with_usage:
        answer["usage"] = _usage(d)
    return answer


def cohere_response(model: str, conv: Conversation, rid: str) -> NativeResponse:
    d = decide(conv)
    result = {"modelId": model, "modelVersion": "1.0", "chatResponse": _cohere_answer(conv, d, True)}
    return json_response(200, result, {"opc-request-id": rid})


def cohere_stream(conv: Conversation, include_usage: bool, rid: str) -> NativeResponse:
    d = decide(conv)
    events: list[bytes] = []
    for k, piece in enumerate(d.text_pieces()):
        events.append(_data({"apiFormat": "COHERE", "text": piece}))
        if d.explode and k == 0:
            events.append(_data({"apiFormat": "COHERE", "text": "", "finishReason": "ERROR",
                                 "errorMessage": "The model failed while generating the answer."}))
            return NativeResponse(200, {"content-type": "text/event-stream", "opc-request-id": rid}, chunks=events)
    if d.tool_calls:
        events.append(_data({"apiFormat": "COHERE",
                             "toolCalls": [{"name": name, "parameters": args} for name, args in d.tool_calls]}))
    events.append(_data(_cohere_answer(conv, d, include_usage)))
    return NativeResponse(200, {"content-type": "text/event-stream", "opc-request-id": rid}, chunks=events)


# --------------------------------------------------------------------------- entry point


def _serving_model(body: dict) -> str:
    sm = body.get("servingMode")
    _need(isinstance(sm, dict), "servingMode is required")
    if sm.get("servingType") == "ON_DEMAND":
        _fields(sm, {"servingType", "modelId"}, "servingMode")
        _need(isinstance(sm.get("modelId"), str) and sm["modelId"], "servingMode.modelId is required")
        return sm["modelId"]
    if sm.get("servingType") == "DEDICATED":
        _fields(sm, {"servingType", "endpointId"}, "servingMode")
        _need(isinstance(sm.get("endpointId"), str) and sm["endpointId"].startswith("ocid1.generativeaiendpoint"),
              "servingMode.endpointId must be an endpoint OCID")
        return sm["endpointId"]
    raise BadRequest("servingMode.servingType must be ON_DEMAND or DEDICATED")


def handle(req: NativeRequest) -> NativeResponse:
    rid = request_id(req.body or b"")
    if req.path != CHAT:
        return error_response(404, "NotAuthorizedOrNotFound", f"Resource {req.path} not found", rid)
    if req.method != "POST":
        return error_response(405, "MethodNotAllowed", f"Method {req.method} not allowed", rid)
    auth = req.headers.get("authorization", "")
    digest = base64.b64encode(hashlib.sha256(req.body or b"").digest()).decode()
    if not auth.startswith("Signature ") or req.headers.get("x-content-sha256") != digest:
        return error_response(401, "NotAuthenticated", NOT_AUTHENTICATED, rid)
    try:
        body = req.json()
    except ValueError:
        return error_response(400, "CannotParseRequest", "The request body could not be parsed as JSON.", rid)
    try:
        _fields(body, {"compartmentId", "servingMode", "chatRequest"}, "ChatDetails")
        _need(isinstance(body.get("compartmentId"), str) and body["compartmentId"].startswith("ocid1."),
              "compartmentId must be an OCID")
        model = _serving_model(body)
    except BadRequest as e:
        return error_response(400, "InvalidParameter", str(e), rid)
    status = fail_status(model)
    if status:
        code, message = FAIL_CODES.get(status, (f"Http{status}", f"Failure {status}"))
        headers = {"retry-after": "3"} if status == 429 else None
        return error_response(status, code, message, rid, headers)
    try:
        r = body.get("chatRequest")
        _need(isinstance(r, dict) and r.get("apiFormat") in ("GENERIC", "COHERE"),
              "chatRequest.apiFormat must be GENERIC or COHERE")
        on_demand = body["servingMode"]["servingType"] == "ON_DEMAND"
        if r["apiFormat"] == "COHERE":
            _need(not on_demand or model.startswith("cohere."), f"Model {model} does not support apiFormat COHERE")
            conv, stream, include_usage = parse_cohere(r)
            if stream:
                return cohere_stream(conv, include_usage, rid)
            return cohere_response(model, conv, rid)
        _need(not on_demand or not model.startswith("cohere."), f"Model {model} does not support apiFormat GENERIC")
        conv, n, stream, include_usage = parse_generic(r)
        reasoning = reasons(r)
        _need(not reasoning or not on_demand or model.startswith(REASONING_MODELS),
              f"Model {model} does not support reasoningEffort")
        if stream:
            return generic_stream(conv, include_usage, rid, reasoning)
        return generic_response(model, conv, n, rid, reasoning)
    except BadRequest as e:
        return error_response(400, "InvalidParameter", str(e), rid)


if __name__ == "__main__":
    def show(details: dict, sign: bool = True) -> None:
        raw = json.dumps(details).encode()
        headers = {"content-type": "application/json"}
        if sign:
            headers["authorization"] = 'Signature version="1",keyId="t/u/f",algorithm="rsa-sha256",headers="",signature="x"'
            headers["x-content-sha256"] = base64.b64encode(hashlib.sha256(raw).digest()).decode()
        r = handle(NativeRequest("POST", CHAT, {}, headers, raw))
        print(f"--- {details['chatRequest'].get('apiFormat')} -> {r.status} {r.headers}")
        print(b"".join(r.chunks).decode() if r.chunks is not None else r.body.decode())

    def details(model: str, chat_request: dict) -> dict:
        return {"compartmentId": "ocid1.compartment.oc1..aaaa",
                "servingMode": {"servingType": "ON_DEMAND", "modelId": model}, "chatRequest": chat_request}

    llama = "meta.llama-3.3-70b-instruct"
    command = "cohere.command-r-plus-08-2024"
    text = lambda s: [{"type": "TEXT", "text": s}]  # noqa: E731
    show(details(llama, {"apiFormat": "GENERIC", "messages": [
        {"role": "SYSTEM", "content": text("be brief")}, {"role": "USER", "content": text("hello there")}],
        "maxTokens": 50}))
    show(details(llama, {"apiFormat": "GENERIC", "messages": [{"role": "USER", "content": text("weather in Paris and London?")}],
                         "tools": [{"type": "FUNCTION", "name": "weather", "parameters": {"type": "object"}}],
                         "isStream": True, "streamOptions": {"isIncludeUsage": True}}))
    show(details(llama, {"apiFormat": "GENERIC", "messages": [{"role": "USER", "content": text("please explode mid-stream")}],
                         "isStream": True}))
    show(details(command, {"apiFormat": "COHERE", "message": "hello there", "preambleOverride": "be brief"}))
    show(details(command, {"apiFormat": "COHERE", "message": "",
                           "chatHistory": [{"role": "USER", "message": "weather in Paris?"},
                                           {"role": "CHATBOT", "message": " ",
                                            "toolCalls": [{"name": "weather", "parameters": {"city": "Paris"}}]}],
                           "toolResults": [{"call": {"name": "weather", "parameters": {"city": "Paris"}},
                                            "outputs": [{"output": "sunny"}]}],
                           "tools": [{"name": "weather", "description": "Weather",
                                      "parameterDefinitions": {"city": {"type": "str", "isRequired": True}}}],
                           "isStream": True, "streamOptions": {"isIncludeUsage": True}}))
    show(details(command, {"apiFormat": "COHERE", "message": "weather in London?",
                           "tools": [{"name": "weather", "description": "Weather"}], "isStream": True}))
    show(details(command, {"apiFormat": "COHERE", "message": "explode mid-stream", "isStream": True}))
    show(details(llama, {"apiFormat": "COHERE", "message": "x"}))
    show(details("fail-429", {"apiFormat": "GENERIC", "messages": []}))
    show(details(llama, {"apiFormat": "GENERIC", "messages": [{"role": "user", "content": "x"}]}))
    show(details(llama, {"apiFormat": "GENERIC", "messages": [{"role": "USER", "content": text("x")}]}), sign=False)
