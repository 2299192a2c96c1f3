"""Native mock of Vertex AI Gemini (PROTOCOLS.md section 4): generateContent,
streamGenerateContent?alt=sse and text-embedding :predict.

Entry point: `handle(req)` for

    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:streamGenerateContent?alt=sse
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predict

Requests are validated the way Vertex does (every violation answers Google's documented
`{"error":{"code","message","status","details"}}` body with 400 INVALID_ARGUMENT): an OAuth
bearer token, unknown fields at any level ("Invalid JSON payload received. Unknown name ..."),
roles `user`/`model` only and alternating, exactly one data field per part, no empty text
parts, base64 inline data, `functionCall` only in model turns and `functionResponse` (with an
object `response`) only in user turns answering as many calls as the previous model turn made,
`generationConfig` field types and ranges, the OpenAPI-subset `Schema` (upper-case type names,
string enums, no `$ref`/`$schema`), function names, and `toolConfig` rules.

Answers follow GenerateContentResponse: `candidates[]` (no `index` for candidate 0, as proto3
JSON omits defaults), `finishReason`, `usageMetadata`, `modelVersion`, `createTime`,
`responseId`. Streams are `data: <GenerateContentResponse>\\r\\n\\r\\n` events (Google uses CRLF):
one text piece per event, function calls whole in one event (Gemini does not stream partial
arguments), `finishReason` and the full usage on the last event, no `[DONE]`; when
`decision.explode`, a `data: {"error":{...}}` event follows the first piece and the stream
ends. Embeddings answer `predictions[].embeddings.{values, statistics.token_count}`.

Thought signatures (ai.google.dev/gemini-api/docs/thought-signatures, Vertex AI
cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures): for models whose id contains
"gemini-3" the answer's first `functionCall` part carries a `thoughtSignature` (only the first
of a parallel batch, as documented), and a text-only answer carries one on its last part. Any
`thoughtSignature` in a request must be base64 (standard or URL-safe, proto3 JSON; else the
TYPE_BYTES 400) and either one this mock issued for that very part (same function name and
arguments; else "Corrupted thought signature.") or one of the documented bypass values
`skip_thought_signature_validator` / `context_engineering_is_the_way_to_go`. For "gemini-3"
models the first `functionCall` part of every model turn in the current turn (the turns after
the last user turn with content other than `functionResponse`) must carry one, else 400
INVALID_ARGUMENT "Unable to submit request because function call `<name>` in the <N>. content
block is missing a `thought_signature`. ..." (Vertex's wording; N is 1-based as Vertex reports
it, the Gemini API guide shows the same message form).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
import zlib

from common import (
    BadRequest,
    Conversation,
    Decision,
    NativeRequest,
    NativeResponse,
    Turn,
    decide,
    embed,
    fail_status,
    json_response,
    stop_list,
    words,
)

PATH_RE = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):"
    r"(generateContent|streamGenerateContent|predict)$"
)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _status_name(code: int) -> str:
    if code in STATUS_NAMES:
        return STATUS_NAMES[code]
    return "INTERNAL" if code >= 500 else "FAILED_PRECONDITION"


def error_body(code: int, message: str, details: list | None = None) -> dict:
    """Google's error JSON (google.rpc.Status as returned by Vertex AI)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "status": _status_name(code),
            "details": details or [],
        }
    }


def error_response(code: int, message: str, details: list | None = None) -> NativeResponse:
    headers = {"retry-after": "3"} if code == 429 else None
    return json_response(code, error_body(code, message, details), headers)


def _bad(message: str) -> BadRequest:
    return BadRequest(message)


def _unknown(name: str) -> BadRequest:
    return BadRequest(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')


def _failure_message(code: int, resource: str) -> str:
    return {
        401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        403: f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/{resource}' "
        "(or it may not exist).",
        404: f"Publisher Model `{resource}` not found.",
        429: "Resource exhausted. Please try again later. Please refer to "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
        500: "Internal error encountered.",
        503: "The service is currently unavailable.",
        504: "Deadline expired before operation could complete.",
    }.get(code, f"Request failed with status {_status_name(code)}.")


# ------------------------------------------------------------------------------------------
# Field checks. Vertex accepts lowerCamelCase and snake_case field names.


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _fields(obj, where: str, allowed: set[str]) -> dict:
    """The object's fields under their camelCase names; unknown names are rejected."""
    if not isinstance(obj, dict):
        raise _bad(f"Invalid value at '{where}': expected an object.")
    out = {}
    for k, v in obj.items():
        c = _camel(k)
        if c not in allowed:
            raise _unknown(k)
        out[c] = v
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "default", "items", "minItems",
    "maxItems", "enum", "properties", "propertyOrdering", "required", "minProperties",
    "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "minimum",
    "maximum", "additionalProperties",
}
SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED"}


def check_schema(s, where: str) -> dict:
    s = _fields(s, where, SCHEMA_FIELDS)
    t = s.get("type")
    if t is not None and t not in SCHEMA_TYPES:
        raise _bad(f"Invalid value at '{where}.type' (type.googleapis.com/google.cloud.aiplatform.v1.Type), \"{t}\"")
    if "enum" in s:
        if not isinstance(s["enum"], list) or not all(isinstance(e, str) for e in s["enum"]):
            raise _bad(f"Invalid value at '{where}.enum': enum values must be strings.")
    if "properties" in s:
        if not isinstance(s["properties"], dict):
            raise _bad(f"Invalid value at '{where}.properties': expected an object.")
        for name, sub in s["properties"].items():
            check_schema(sub, f"{where}.properties[{name}].value")
    if "items" in s:
        check_schema(s["items"], f"{where}.items")
    if "anyOf" in s:
        if not isinstance(s["anyOf"], list):
            raise _bad(f"Invalid value at '{where}.any_of': expected a list.")
        for i, sub in enumerate(s["anyOf"]):
            check_schema(sub, f"{where}.any_of[{i}]")
    if "required" in s:
        if not isinstance(s["required"], list) or not all(isinstance(r, str) for r in s["required"]):
            raise _bad(f"Invalid value at '{where}.required': expected a list of strings.")
        missing = [r for r in s["required"] if r not in s.get("properties", {})]
        if missing:
            raise _bad(f"{where}.required[0]: property is not defined")
    if "nullable" in s and not isinstance(s["nullable"], bool):
        raise _bad(f"Invalid value at '{where}.nullable': expected a boolean.")
    if isinstance(s.get("additionalProperties"), dict):
        check_schema(s["additionalProperties"], f"{where}.additional_properties")
    return s


PART_FIELDS = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "thought",
    "thoughtSignature", "videoMetadata", "executableCode", "codeExecutionResult",
}
DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult")
# Thought signatures: opaque bytes; this mock's are a fixed prefix (with bytes that make `+`
# and `/` in standard base64) + the function name + a CRC-32 of name and arguments.
SIGNATURE_PREFIX = b"\x0a\x24\x01\xfb\xff\xbfmock-thought-signature:"
BYPASS_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")
THOUGHT_SIGNATURE_DOCS = "https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures"


def _signs(model: str) -> bool:
    return "gemini-3" in model


def _signature_bytes(name: str, args) -> bytes:
    digest = zlib.crc32(json.dumps([name, args], sort_keys=True, separators=(",", ":")).encode())
    return SIGNATURE_PREFIX + name.encode() + b":" + digest.to_bytes(4, "big")


def _signature(name: str, args) -> str:
    return base64.b64encode(_signature_bytes(name, args)).decode()


def _text_signature(text: str) -> str:
    return base64.b64encode(SIGNATURE_PREFIX + zlib.crc32(text.encode()).to_bytes(4, "big")).decode()


def _bytes_field(value: str) -> bytes:
    """proto3 JSON `bytes`: standard or URL-safe base64, with or without padding."""
    if not isinstance(value, str):
        raise ValueError(value)
    v = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(v + "=" * (-len(v) % 4), validate=True)


def _check_signature(sig, where: str, call: tuple[str, dict] | None) -> None:
    if sig in BYPASS_SIGNATURES:
        return
    try:
        raw = _bytes_field(sig)
    except (binascii.Error, ValueError):
        raise _bad(f"Invalid value at '{where}.thought_signature' (TYPE_BYTES), Base64 decoding failed for {json.dumps(sig)}")
    if call is not None:
        ok = raw == _signature_bytes(*call)
    else:
        ok = raw.startswith(SIGNATURE_PREFIX)
    if not ok:
        raise _bad("Corrupted thought signature.")


NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")

GENERATION_FIELDS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
    "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities",
    "mediaResolution", "speechConfig", "audioTimestamp", "routingConfig",
}


def check_generation_config(g, model: str = "") -> dict:
    g = _fields(g, "generation_config", GENERATION_FIELDS)
    for name, lo, hi in (("temperature", 0, 2), ("topP", 0, 1)):
        if name in g:
            if not _is_num(g[name]):
                raise _bad(f"Invalid value at 'generation_config.{name}' (TYPE_FLOAT), {json.dumps(g[name])}")
            if not lo <= g[name] <= hi:
                raise _bad(f"Unable to submit request because it has a {name} value of {g[name]} but the supported range is from {lo} (inclusive) to {hi + 0.000001} (exclusive). Update the value and try again.")
    for name in ("presencePenalty", "frequencyPenalty", "topK"):
        if name in g and not _is_num(g[name]):
            raise _bad(f"Invalid value at 'generation_config.{name}' (TYPE_FLOAT), {json.dumps(g[name])}")
    for name in ("candidateCount", "maxOutputTokens", "seed"):
        if name in g:
            if not _is_int(g[name]) or not -(2**31) <= g[name] < 2**31:
                raise _bad(f"Invalid value at 'generation_config.{name}' (TYPE_INT32), {json.dumps(g[name])}")
    if "candidateCount" in g and not 1 <= g["candidateCount"] <= 8:
        raise _bad("Unable to submit request because candidateCount must be in the range [1, 8].")
    if "maxOutputTokens" in g and g["maxOutputTokens"] < 1:
        raise _bad("Unable to submit request because max_output_tokens must be positive.")
    if "stopSequences" in g:
        st = g["stopSequences"]
        if not isinstance(st, list) or not all(isinstance(s, str) for s in st):
            raise _bad("Invalid value at 'generation_config.stop_sequences': expected a list of strings.")
        if len(st) > 5:
            raise _bad("Unable to submit request because it has more than 5 stop sequences.")
    mime = g.get("responseMimeType")
    if mime is not None and mime not in ("text/plain", "application/json", "text/x.enum"):
        raise _bad(f"Unable to submit request because response_mime_type {mime} is not supported.")
    if "responseSchema" in g:
        if mime not in ("application/json", "text/x.enum"):
            raise _bad("Unable to submit request because response_schema requires response_mime_type application/json.")
        check_schema(g["responseSchema"], "generation_config.response_schema")
    if "thinkingConfig" in g:
        check_thinking_config(g["thinkingConfig"], model)
    return g


THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
# Thought summary the mock answers with when `includeThoughts` is on, and its token count.
THOUGHT_TEXT = "Considering what the user asked."
THOUGHT_TOKENS = 5


def _model_name(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def check_thinking_config(t, model: str) -> dict:
    """`generationConfig.thinkingConfig` as the Gemini thinking guide documents it
    (ai.google.dev/gemini-api/docs/thinking): `thinkingLevel` on Gemini 3 models (Pro: LOW and
    HIGH only), `thinkingBudget` on 2.5 (Pro 128–32768, Flash 0–24576, Flash-Lite 512–24576,
    -1 dynamic), never both; models before 2.5 do not think."""
    t = _fields(t, "generation_config.thinking_config", {"includeThoughts", "thinkingBudget", "thinkingLevel"})
    name = _model_name(model)
    if name.startswith(("gemini-1", "gemini-2.0")):
        raise _bad(f"Unable to submit request because thinking is not supported by this model ({name}).")
    if "thinkingBudget" in t and "thinkingLevel" in t:
        raise _bad("Unable to submit request because thinking_budget and thinking_level are both set. Set one of them.")
    if "includeThoughts" in t and not isinstance(t["includeThoughts"], bool):
        raise _bad(f"Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL), {json.dumps(t['includeThoughts'])}")
    if "thinkingLevel" in t:
        level = t["thinkingLevel"]
        if level not in THINKING_LEVELS:
            raise _bad(f"Invalid value at 'generation_config.thinking_config.thinking_level' (type.googleapis.com/google.cloud.aiplatform.v1.GenerationConfig.ThinkingConfig.ThinkingLevel), {json.dumps(level)}")
        if not name.startswith("gemini-3"):
            raise _bad("Unable to submit request because thinking_level is not supported by this model. Use thinking_budget.")
        if "-pro" in name and level not in ("LOW", "HIGH"):
            raise _bad(f"Unable to submit request because thinking_level {level} is not supported by this model (LOW, HIGH).")
    if "thinkingBudget" in t:
        b = t["thinkingBudget"]
        if not _is_int(b):
            raise _bad(f"Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), {json.dumps(b)}")
        lo, hi = (128, 32768) if "-pro" in name else (512, 24576) if "-lite" in name else (0, 24576)
        if b != -1 and not lo <= b <= hi:
            raise _bad(f"Unable to submit request because the thinking budget {b} is invalid. The thinking budget must be between {lo} and {hi}.")
    return t


def thinks(gen: dict) -> bool:
    """Whether the answer carries thought summaries (`includeThoughts: true`)."""
    return bool(gen.get("thinkingConfig", {}).get("includeThoughts"))


# ------------------------------------------------------------------------------------------
# generateContent


def _check_auth(req: NativeRequest) -> None:
    auth = req.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
        raise PermissionError(_failure_message(401, ""))


def parse_generate(body, model: str = "") -> tuple[Conversation, dict]:
    """Validates a GenerateContentRequest (for `model`) and returns the Conversation and
    generationConfig."""
    if not isinstance(body, dict):
        raise _bad("Invalid JSON payload received. Expected an object.")
    top = _fields(
        body,
        "",
        {"contents", "systemInstruction", "cachedContent", "tools", "toolConfig", "labels",
         "safetySettings", "generationConfig", "modelArmorConfig"},
    )
    contents = top.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("Unable to submit request because it must include at least one parts field, which describes the prompt input.")

    system = None
    if "systemInstruction" in top:
        si = _fields(top["systemInstruction"], "system_instruction", {"role", "parts"})
        parts = si.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _bad("Unable to submit request because system_instruction has no parts.")
        texts = []
        for j, p in enumerate(parts):
            p = _fields(p, f"system_instruction.parts[{j}]", {"text"})
            if not isinstance(p.get("text"), str):
                raise _bad(f"Invalid value at 'system_instruction.parts[{j}].text': expected a string.")
            texts.append(p["text"])
        system = "\n".join(texts)

    # Tools and tool config.
    tool_names: list[str] = []
    for i, t in enumerate(top.get("tools") or []):
        t = _fields(t, f"tools[{i}]", {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "retrieval", "urlContext", "enterpriseWebSearch"})
        for k, d in enumerate(t.get("functionDeclarations") or []):
            where = f"tools[{i}].function_declarations[{k}]"
            d = _fields(d, where, {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"})
            name = d.get("name")
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise _bad(f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.) or dashes (-), with a maximum length of 64.")
            if "description" in d and not isinstance(d["description"], str):
                raise _bad(f"Invalid value at '{where}.description': expected a string.")
            if "parameters" in d:
                params = check_schema(d["parameters"], f"{where}.parameters")
                if params.get("type") == "OBJECT" and not params.get("properties"):
                    raise _bad(f"* GenerateContentRequest.{where}.parameters.properties: should be non-empty for OBJECT type")
            tool_names.append(name)
    tool_choice = None
    if "toolConfig" in top:
        tc = _fields(top["toolConfig"], "tool_config", {"functionCallingConfig", "retrievalConfig"})
        fcc = _fields(tc.get("functionCallingConfig", {}), "tool_config.function_calling_config", {"mode", "allowedFunctionNames"})
        mode = fcc.get("mode", "AUTO")
        if mode not in ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"):
            raise _bad(f"Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.cloud.aiplatform.v1.FunctionCallingConfig.Mode), \"{mode}\"")
        allowed = fcc.get("allowedFunctionNames")
        if allowed is not None:
            if mode != "ANY":
                raise _bad("Unable to submit request because function_calling_config.allowed_function_names should only be set when the mode is ANY.")
            if not isinstance(allowed, list) or not all(isinstance(a, str) and a in tool_names for a in allowed):
                raise _bad("Unable to submit request because function_calling_config.allowed_function_names contains a name that is not declared.")
        if mode in ("ANY", "VALIDATED") and not tool_names:
            raise _bad("Unable to submit request because function calling mode ANY requires function declarations.")
        tool_choice = {"NONE": "none", "AUTO": "auto", "MODE_UNSPECIFIED": "auto", "VALIDATED": "auto"}.get(mode)
        if mode == "ANY":
            tool_choice = allowed[0] if allowed and len(allowed) == 1 else "required"

    gen = check_generation_config(top["generationConfig"], model) if "generationConfig" in top else {}
    for i, s in enumerate(top.get("safetySettings") or []):
        _fields(s, f"safety_settings[{i}]", {"category", "threshold", "method"})

    # Contents -> turns.
    turns: list[Turn] = []
    prev_role = None
    prev_calls: list[str] = []
    call_no = 0
    # Thought-signature validation: the last user content with standard content, and per model
    # content its first functionCall (name, signed?).
    turn_start = -1
    first_calls: list[tuple[int, str, bool]] = []
    for i, c in enumerate(contents):
        c = _fields(c, f"contents[{i}]", {"role", "parts"})
        role = c.get("role")
        if role not in ("user", "model"):
            raise _bad(f"Please use a valid role: user, model. (contents[{i}].role = {json.dumps(role)})")
        if role == prev_role:
            raise _bad("Please ensure that multiturn requests alternate between user and model.")
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _bad(f"Unable to submit request because it must include at least one parts field, which describes the prompt input. (contents[{i}])")
        calls_here: list[str] = []
        responses_here: list[str] = []
        current: Turn | None = None

        def turn(kind: str) -> Turn:
            nonlocal current
            if current is None or current.role != kind:
                current = Turn(kind)
                turns.append(current)
            return current

        for j, p in enumerate(parts):
            where = f"contents[{i}].parts[{j}]"
            p = _fields(p, where, PART_FIELDS)
            data = [k for k in DATA_FIELDS if k in p]
            if len(data) != 1:
                raise _bad(f"Invalid value at '{where}': a part must contain exactly one data field (got {data or 'none'}).")
            kind = data[0]
            if role == "user" and kind != "functionResponse":
                turn_start = i
            signature = p.get("thoughtSignature")
            if signature is not None and kind != "functionCall":
                _check_signature(signature, where, None)
            if kind == "text":
                if not isinstance(p["text"], str):
                    raise _bad(f"Invalid value at '{where}.text' (TYPE_STRING), {json.dumps(p['text'])}")
                if p["text"] == "":
                    raise _bad("Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again.")
                t = turn("user" if role == "user" else "assistant")
                if not p.get("thought"):
                    t.text = (t.text + "\n" + p["text"]) if t.text else p["text"]
            elif kind in ("inlineData", "fileData"):
                if role != "user":
                    raise _bad(f"Invalid value at '{where}': media parts are only accepted in user turns by this mock.")
                if kind == "inlineData":
                    blob = _fields(p[kind], f"{where}.inline_data", {"mimeType", "data", "displayName"})
                    if not isinstance(blob.get("mimeType"), str) or "/" not in blob["mimeType"]:
                        raise _bad(f"Unable to submit request because {where}.inline_data.mime_type is missing or invalid.")
                    try:
                        base64.b64decode(blob.get("data", ""), validate=True)
                    except (binascii.Error, TypeError, ValueError):
                        raise _bad(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed.")
                else:
                    fd = _fields(p[kind], f"{where}.file_data", {"mimeType", "fileUri", "displayName"})
                    if not isinstance(fd.get("mimeType"), str) or "/" not in fd["mimeType"]:
                        raise _bad(f"Unable to submit request because {where}.file_data.mime_type is missing. Add a value to the parameter and try again.")
                    if not isinstance(fd.get("fileUri"), str) or not re.match(r"^(gs|https?)://", fd["fileUri"]):
                        raise _bad(f"Unable to submit request because {where}.file_data.file_uri is not a gs:// or http(s):// URI.")
                if kind == "inlineData" and p[kind]["mimeType"] == "application/pdf":
                    turn("user").documents.append(len(base64.b64decode(p[kind].get("data", ""))))
                else:
                    turn("user").images += 1
            elif kind == "functionCall":
                if role != "model":
                    raise _bad(f"Invalid value at '{where}': function_call parts are only allowed in model turns.")
                fc = _fields(p[kind], f"{where}.function_call", {"id", "name", "args", "partialArgs", "willContinue"})
                if not isinstance(fc.get("name"), str) or not fc["name"]:
                    raise _bad(f"Unable to submit request because {where}.function_call.name is missing.")
                args = fc.get("args", {})
                if not isinstance(args, dict):
                    raise _bad(f"Invalid value at '{where}.function_call.args' (type.googleapis.com/google.protobuf.Struct), {json.dumps(args)}")
                if signature is not None:
                    _check_signature(signature, where, (fc["name"], args))
                if not calls_here:
                    first_calls.append((i, fc["name"], signature is not None))
                cid = fc.get("id") or f"call_{call_no}"
                call_no += 1
                turn("assistant").tool_calls.append((cid, fc["name"], args))
                calls_here.append(fc["name"])
            elif kind == "functionResponse":
                if role != "user":
                    raise _bad(f"Invalid value at '{where}': function_response parts are only allowed in user turns.")
                fr = _fields(p[kind], f"{where}.function_response", {"id", "name", "response", "parts", "willContinue", "scheduling"})
                if not isinstance(fr.get("name"), str) or not fr["name"]:
                    raise _bad(f"Unable to submit request because {where}.function_response.name is missing.")
                resp = fr.get("response")
                if not isinstance(resp, dict):
                    raise _bad(f"Invalid value at '{where}.function_response.response' (type.googleapis.com/google.protobuf.Struct), {json.dumps(resp)}")
                if set(resp) == {"content"} and isinstance(resp["content"], str):
                    result = resp["content"]
                else:
                    result = json.dumps(resp, separators=(",", ":"))
                turn("tool").tool_results.append((fr.get("id") or fr["name"], result))
                responses_here.append(fr["name"])
            else:
                raise _bad(f"Invalid value at '{where}': {kind} parts are not supported by this mock.")
        if responses_here:
            if sorted(responses_here) != sorted(prev_calls):
                raise _bad(
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn."
                )
        prev_calls = calls_here
        prev_role = role

    if _signs(model):
        for i, name, signed in first_calls:
            if i > turn_start and not signed:
                raise _bad(
                    f"Unable to submit request because function call `{name}` in the {i + 1}. content "
                    f"block is missing a `thought_signature`. Learn more: {THOUGHT_SIGNATURE_DOCS}"
                )

    max_tokens = gen.get("maxOutputTokens")
    return (
        Conversation(system=system, turns=turns, tools=tool_names, tool_choice=tool_choice, max_tokens=max_tokens,
                     stop=stop_list(gen.get("stopSequences")),
                     json_schema=(gen.get("responseSchema") or gen.get("responseJsonSchema") or {})
                     if gen.get("responseMimeType") == "application/json" else None),
        gen,
    )


def _response_id(body: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.crc32(body).to_bytes(4, "big") * 4).decode().rstrip("=")


CREATE_TIME = "2025-01-01T00:00:00.000000Z"


def _finish_reason(d: Decision) -> str:
    return {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}[d.finish]


def _call_parts(d: Decision, model: str) -> list[dict]:
    parts = [{"functionCall": {"name": name, "args": args}} for name, args in d.tool_calls]
    if parts and _signs(model):
        # Parallel calls: only the first part carries the signature.
        parts[0]["thoughtSignature"] = _signature(*d.tool_calls[0])
    return parts


def _sign_last_text(parts: list[dict], model: str, text: str) -> list[dict]:
    if parts and _signs(model) and "functionCall" not in parts[-1]:
        parts[-1]["thoughtSignature"] = _text_signature(text)
    return parts


def _usage(d: Decision, n: int, thoughts: bool = False) -> dict:
    completion = d.completion_tokens * n
    thought_tokens = THOUGHT_TOKENS * n if thoughts else 0
    u = {
        "promptTokenCount": d.prompt_tokens,
        "candidatesTokenCount": completion,
        "totalTokenCount": d.prompt_tokens + completion + thought_tokens,
        "trafficType": "ON_DEMAND",
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": d.prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": completion}],
    }
    if thoughts:
        u["thoughtsTokenCount"] = thought_tokens
    return u


def _candidate(index: int, parts: list[dict], finish: str | None) -> dict:
    c: dict = {"content": {"role": "model", "parts": parts}}
    if finish:
        c["finishReason"] = finish
    if index:
        c["index"] = index  # proto3 JSON leaves out the default 0
    return c


def generate(d: Decision, model: str, n: int, rid: str, thoughts: bool = False) -> dict:
    parts = ([{"text": THOUGHT_TEXT, "thought": True}] if thoughts else []) + \
        ([{"text": d.text}] if d.text else []) + _call_parts(d, model)
    _sign_last_text(parts, model, d.text)
    cands = []
    for i in range(n):
        c = _candidate(i, parts, _finish_reason(d))
        c["avgLogprobs"] = -0.05
        cands.append(c)
    return {
        "candidates": cands,
        "usageMetadata": _usage(d, n, thoughts),
        "modelVersion": model,
        "createTime": CREATE_TIME,
        "responseId": rid,
    }


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\r\n\r\n"


def stream_events(d: Decision, model: str, rid: str, thoughts: bool = False) -> list[bytes]:
    meta = {"modelVersion": model, "createTime": CREATE_TIME, "responseId": rid}
    events: list[bytes] = []
    partial_usage = {"usageMetadata": {"trafficType": "ON_DEMAND"}}
    if thoughts:
        events.append(_sse({"candidates": [_candidate(0, [{"text": THOUGHT_TEXT, "thought": True}], None)],
                            **partial_usage, **meta}))
    for k, piece in enumerate(d.text_pieces()):
        events.append(_sse({"candidates": [_candidate(0, [{"text": piece}], None)], **partial_usage, **meta}))
        if k == 0 and d.explode:
            events.append(_sse(error_body(500, "Internal error encountered.")))
            return events
    if d.tool_calls:
        last = _candidate(0, _call_parts(d, model), _finish_reason(d))
    else:
        # Gemini 3 puts a text answer's signature on a last, empty text part when streaming.
        last = _candidate(0, _sign_last_text([{"text": ""}], model, d.text), _finish_reason(d))
    events.append(_sse({"candidates": [last], "usageMetadata": _usage(d, 1, thoughts), **meta}))
    return events


# ------------------------------------------------------------------------------------------
# :predict (text embeddings)


def predict(body, model: str) -> dict:
    if not isinstance(body, dict):
        raise _bad("Invalid JSON payload received. Expected an object.")
    top = _fields(body, "", {"instances", "parameters", "labels"})
    instances = top.get("instances")
    if not isinstance(instances, list) or not instances:
        raise _bad("Unable to submit request because instances is empty.")
    limit = 1 if model.startswith("gemini-embedding") else 250
    if len(instances) > limit:
        raise _bad(f"Unable to submit request because {model} supports up to {limit} instances per request; got {len(instances)}.")
    params = top.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("Invalid value at 'parameters': expected an object.")
    for k in params:
        if _camel(k) not in ("outputDimensionality", "autoTruncate"):
            raise _unknown(k)
    params = {_camel(k): v for k, v in params.items()}
    dims = params.get("outputDimensionality")
    if dims is not None and (not _is_int(dims) or dims < 1):
        raise _bad("Invalid value at 'parameters.output_dimensionality': expected a positive integer.")
    if "autoTruncate" in params and not isinstance(params["autoTruncate"], bool):
        raise _bad("Invalid value at 'parameters.auto_truncate': expected a boolean.")
    predictions = []
    chars = 0
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise _bad(f"Invalid value at 'instances[{i}]': expected an object.")
        for k in inst:
            if k not in ("content", "task_type", "title", "taskType"):
                raise _unknown(k)
        text = inst.get("content")
        if not isinstance(text, str) or not text:
            raise _bad(f"Unable to submit request because instances[{i}].content is missing or empty.")
        chars += len(text)
        predictions.append(
            {"embeddings": {"values": embed(text, dims), "statistics": {"token_count": words(text), "truncated": False}}}
        )
    return {"predictions": predictions, "metadata": {"billableCharacterCount": chars}}


# ------------------------------------------------------------------------------------------
# Entry point


def handle(req: NativeRequest) -> NativeResponse:
    m = PATH_RE.match(req.path)
    if req.method != "POST" or not m:
        return error_response(404, f"The requested URL {req.path} was not found on this server.")
    project, location, model, method = (urllib.parse.unquote(g) for g in m.groups())
    resource = f"projects/{project}/locations/{location}/publishers/google/models/{model}"
    try:
        _check_auth(req)
    except PermissionError as e:
        return error_response(401, str(e))
    if "application/json" not in req.headers.get("content-type", ""):
        return error_response(400, "Invalid JSON payload received. Content-Type must be application/json.")
    status = fail_status(model)
    if status:
        return error_response(status, _failure_message(status, resource))
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "Invalid JSON payload received. Unexpected token.")
    try:
        if method == "predict":
            return json_response(200, predict(body, model))
        conv, gen = parse_generate(body, model)
        n = gen.get("candidateCount", 1)
        rid = _response_id(req.body)
        d = decide(conv)
        if method == "generateContent":
            return json_response(200, generate(d, model, n, rid, thinks(gen)))
        if req.query.get("alt") != "sse":
            raise _bad("This mock serves streamGenerateContent only with alt=sse.")
        chunks = stream_events(d, model, rid, thinks(gen))
        return NativeResponse(200, {"content-type": "text/event-stream"}, b"".join(chunks), chunks)
    except BadRequest as e:
        msg = str(e)
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"description": msg}]}]
        return error_response(400, msg, details)


if __name__ == "__main__":
    base = "/v1/projects/p/locations/us-central1/publishers/google/models/"
    hdrs = {"authorization": "Bearer test-token", "content-type": "application/json"}

    def call(model_method: str, body: dict, query: dict | None = None) -> NativeResponse:
        r = handle(NativeRequest("POST", base + model_method, query or {}, hdrs, json.dumps(body).encode()))
        print(f"--- {model_method} {query or ''} -> {r.status} {r.headers}")
        print(r.body.decode())
        return r

    chat = {
        "contents": [{"role": "user", "parts": [{"text": "Hello there"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.2},
    }
    assert call("gemini-2.5-flash:generateContent", chat).status == 200
    assert call("gemini-2.5-flash:streamGenerateContent", chat, {"alt": "sse"}).status == 200
    tools = {
        "contents": [{"role": "user", "parts": [{"text": "weather in Paris and London"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    }
    assert call("gemini-2.5-flash:streamGenerateContent", tools, {"alt": "sse"}).status == 200
    results = {
        "contents": tools["contents"] + [
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]},
        ],
        "tools": tools["tools"],
    }
    assert call("gemini-2.5-flash:generateContent", results).status == 200
    explode = {"contents": [{"role": "user", "parts": [{"text": "please explode mid-stream now"}]}]}
    assert call("gemini-2.5-flash:streamGenerateContent", explode, {"alt": "sse"}).status == 200
    assert call("gemini-2.5-flash:generateContent", {**chat, "frequency": 1}).status == 400
    assert call("gemini-2.5-flash:generateContent", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}).status == 400
    assert call("gemini-fail-429:generateContent", chat).status == 429
    assert call("text-embedding-005:predict", {"instances": [{"content": "hello world"}, {"content": "bye"}], "parameters": {"outputDimensionality": 3}}).status == 200
    assert call("gemini-embedding-001:predict", {"instances": [{"content": "a"}, {"content": "b"}]}).status == 400

    # Gemini 3: signed function calls, and the follow-up must bring the signature back.
    r = call("gemini-3-pro-preview:generateContent", tools)
    first, second = json.loads(r.body)["candidates"][0]["content"]["parts"]
    assert "thoughtSignature" in first and "thoughtSignature" not in second, "only the first parallel call is signed"
    s = call("gemini-3-pro-preview:streamGenerateContent", tools, {"alt": "sse"})
    assert json.loads(s.chunks[-1][len(b"data: "):])["candidates"][0]["content"]["parts"][0]["thoughtSignature"] == first["thoughtSignature"]

    def follow_up(model_parts: list[dict]) -> dict:
        return {
            "contents": tools["contents"] + [
                {"role": "model", "parts": model_parts},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "rain"}}},
                ]},
            ],
            "tools": tools["tools"],
        }

    assert call("gemini-3-pro-preview:generateContent", follow_up([first, second])).status == 200
    unsigned = {"functionCall": first["functionCall"]}
    r = call("gemini-3-pro-preview:generateContent", follow_up([unsigned, second]))
    assert r.status == 400 and "in the 2. content block is missing a `thought_signature`" in r.body.decode()
    assert call("gemini-2.5-flash:generateContent", follow_up([unsigned, second])).status == 200
    bypass = {**unsigned, "thoughtSignature": "skip_thought_signature_validator"}
    assert call("gemini-3-pro-preview:generateContent", follow_up([bypass, second])).status == 200
    moved = [unsigned, {**second, "thoughtSignature": first["thoughtSignature"]}]
    assert call("gemini-3-pro-preview:generateContent", follow_up(moved)).status == 400
    urlsafe = {**first, "thoughtSignature": first["thoughtSignature"].replace("+", "-").replace("/", "_").rstrip("=")}
    assert call("gemini-3-pro-preview:generateContent", follow_up([urlsafe, second])).status == 200
    garbage = {**first, "thoughtSignature": "not base64!"}
    assert call("gemini-3-pro-preview:generateContent", follow_up([garbage, second])).status == 400
    # An older turn (before the last user text) is not validated.
    older = follow_up([unsigned, second])
    older["contents"] += [{"role": "model", "parts": [{"text": "Sunny and rainy."}]}, {"role": "user", "parts": [{"text": "thanks"}]}]
    assert call("gemini-3-pro-preview:generateContent", older).status == 200
    print("self-check ok")
