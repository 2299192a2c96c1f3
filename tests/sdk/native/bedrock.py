"""Native mock of the AWS Bedrock runtime: Converse, ConverseStream and InvokeModel for
embedding models (Titan text embeddings V1/G1/V2, Cohere embed v3/v4).

Entry point: `handle(req)` for `POST /model/{modelId}/converse`, `/model/{modelId}/converse-stream`
and `/model/{modelId}/invoke` (embedding models only: Anthropic-on-Bedrock InvokeModel chat
lives in anthropic.py; `is_embedding_model()` tells a router which one to use).

Wire formats (PROTOCOLS.md §3; AWS API reference for Converse/ConverseStream, botocore's
bedrock-runtime 2023-09-30 service model, Bedrock user guide pages for Titan and Cohere
embeddings):
* the model id is one percent-encoded path label (`:` → `%3A`, `/` → `%2F`), exactly as the
  AWS SDKs send it; a label that is not in that form is rejected;
* requests are validated strictly: unknown top-level keys ("extraneous key"), content blocks
  with exactly one key, non-blank text, image `format`/`source.bytes` (base64), toolUse only in
  assistant turns and toolResult only in user turns, toolResult ids pairing with the previous
  assistant turn's toolUse ids (and every toolUse answered in the next turn), roles
  alternating and starting with `user`, `toolConfig` present whenever toolUse/toolResult
  blocks are, `inferenceConfig` types and ranges (temperature and topP 0–1, ≤4 stop sequences);
* errors are `{"message": …}` with `x-amzn-errortype: <Name>:http://internal.amazon.com/coral/com.amazon.bedrock/`;
* ConverseStream answers are AWS event streams (eventstream.py): messageStart,
  contentBlockDelta (text, word by word, with a "p" padding field as Bedrock adds),
  contentBlockStop, contentBlockStart + toolUse input deltas per tool call, messageStop,
  metadata (usage); `decision.explode` → a `modelStreamErrorException` frame after the first
  text piece;
* Cohere embeddings answer with `x-amzn-bedrock-input-token-count` (Titan too, and Titan also
  reports `inputTextTokenCount` in the body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from urllib.parse import quote, unquote

try:  # imported as part of a package
    from . import eventstream
    from .common import (
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
        prompt_cache,
        stop_list,
        words,
    )
except ImportError:  # imported with tests/sdk/native on sys.path
    import eventstream  # type: ignore[no-redef]
    from common import (  # type: ignore[no-redef]
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
        prompt_cache,
        stop_list,
        words,
    )

ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
REQUEST_ID = "5f3b2c1e-0000-4000-8000-00000000b5e1"
PATH_RE = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")

# HTTP status -> (exception name, message) for `fail-<status>` models (§3.6).
FAILURES = {
    400: ("ValidationException", "The provided request is not valid."),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "Received error from the model while processing the request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error while processing the request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}

CONVERSE_KEYS = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
}
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
TOOL_USE_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# ------------------------------------------------------------------------------------------
# Responses
# ------------------------------------------------------------------------------------------


def aws_error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> NativeResponse:
    h = {"x-amzn-errortype": name + ERROR_NAMESPACE, "x-amzn-requestid": REQUEST_ID}
    h.update(headers or {})
    return json_response(status, {"message": message}, h)


def validation_error(message: str) -> NativeResponse:
    return aws_error(400, "ValidationException", message)


def failure(status: int) -> NativeResponse:
    name, message = FAILURES.get(
        status,
        ("ValidationException", "The provided request is not valid.")
        if status < 500
        else ("InternalServerException", "The server encountered an internal error."),
    )
    headers = {"retry-after": "3"} if status == 429 else None
    return aws_error(status, name, message, headers)


def handle(req: NativeRequest) -> NativeResponse:
    """Routes one Bedrock runtime request."""
    m = PATH_RE.match(req.path)
    if req.method != "POST" or not m:
        return aws_error(404, "UnknownOperationException", f"Unknown operation {req.method} {req.path}")
    label, op = m.group(1), m.group(2)
    model_id = unquote(label)
    if quote(model_id, safe="") != label:
        return validation_error(
            f"The model identifier path label '{label}' is not percent-encoded as one URI label "
            f"(expected '{quote(model_id, safe='')}')."
        )
    status = fail_status(model_id)
    if status:
        return failure(status)
    try:
        body = req.json()
    except ValueError:
        return aws_error(400, "SerializationException", "Could not parse the request body as JSON.")
    try:
        if op == "invoke":
            return invoke(model_id, body)
        conv = parse_converse(body)
        thinking = check_thinking(model_id, body)
        points = check_cache_points(model_id, body)
    except BadRequest as e:
        return validation_error(str(e))
    d = decide(conv)
    cache = converse_cache(body, d.prompt_tokens) if points else (0, 0)
    if op == "converse":
        return json_response(200, converse_body(d, thinking, cache), {"x-amzn-requestid": REQUEST_ID})
    return NativeResponse(
        200,
        {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": REQUEST_ID},
        chunks=converse_stream_frames(d, thinking, cache),
    )


CACHE_POINT = {"cachePoint": {"type": "default"}}


def _cache_pieces(body: dict) -> list:
    """The prompt's pieces in prompt order (tools, system, message blocks), cache points
    included."""
    pieces = list(body.get("toolConfig", {}).get("tools", []))
    pieces += body.get("system", [])
    for m in body.get("messages", []):
        pieces += m.get("content", [])
    return pieces


def check_cache_points(model_id: str, body: dict) -> int:
    """`cachePoint` blocks (Bedrock prompt caching): exactly {"type": "default"}, after some
    content, at most 4, only on the models with prompt caching (Claude everywhere, Nova in
    system and messages, not in tools). Returns how many."""
    n = 0
    tools = body.get("toolConfig", {}).get("tools", [])
    for where, blocks in [("toolConfig.tools", tools), ("system", body.get("system", []))] + [
        (f"messages.{i}.content", m.get("content", [])) for i, m in enumerate(body.get("messages", []))
    ]:
        for j, b in enumerate(blocks):
            if not (isinstance(b, dict) and "cachePoint" in b):
                continue
            _require(b == CACHE_POINT, f"{where}.{j}.cachePoint must be {{\"type\": \"default\"}}.")
            _require(j > 0, f"{where}.{j}: a cachePoint must follow the content it caches.")
            cached = _is_claude(model_id) or ("nova" in model_id and where != "toolConfig.tools")
            _require(cached, f"The model {model_id} does not support prompt caching at {where}.")
            n += 1
    _require(n <= 4, f"A maximum of 4 cache points may be provided. Found {n}.")
    return n


def converse_cache(body: dict, prompt_tokens: int) -> tuple[int, int]:
    """(cacheWriteInputTokens, cacheReadInputTokens) for the request's cache points."""
    elements, marked = [], []
    for p in _cache_pieces(body):
        if isinstance(p, dict) and "cachePoint" in p:
            if marked:
                marked[-1] = True
        else:
            elements.append(p)
            marked.append(False)
    return prompt_cache(elements, marked, prompt_tokens)


# Reasoning text the mock answers with when Claude's extended thinking is on; its signature is
# `reasoning_signature(REASONING_TEXT)` (a reasoningText block sent back must carry it).
REASONING_TEXT = "Considering what the user asked."


def _is_claude(model_id: str) -> bool:
    return "anthropic." in model_id or "claude" in model_id


def _reasoning_block(v, where: str) -> None:
    """A `reasoningContent` block sent back (ReasoningContentBlock, a union): `reasoningText`
    {text, signature} must be this mock's, unmodified ("include the text and its signature
    unmodified"), as Claude verifies them; `redactedContent` must be base64."""
    key, inner = _one_key(v, {"reasoningText", "redactedContent"}, where)
    if key == "redactedContent":
        _require(isinstance(inner, str) and inner, f"{where}.redactedContent must be base64 bytes.")
        try:
            base64.b64decode(inner, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}.redactedContent must be base64 bytes.")
        return
    _only_keys(inner, {"text", "signature"}, f"{where}.reasoningText", {"text"})
    _require(inner.get("signature") == reasoning_signature(inner["text"]),
             f"The model returned the following errors: {where.rsplit('.', 1)[0]}: Invalid `signature` in `thinking` block")


def reasoning_signature(text: str) -> str:
    """The signature this mock issues with (and expects back with) a reasoning text."""
    return base64.b64encode(hashlib.sha256(b"converse-mock-reasoning:" + text.encode()).digest()).decode()


def check_final_thinking(body: dict) -> None:
    """With thinking on, Claude wants the assistant turn answered by the final tool results to
    start with its reasoning (Bedrock relays Anthropic's error)."""
    messages = body.get("messages", [])
    if len(messages) < 2 or messages[-1].get("role") != "user":
        return
    last = messages[-1].get("content", [])
    if not any(isinstance(b, dict) and "toolResult" in b for b in last):
        return
    i = len(messages) - 2
    first = messages[i].get("content", [{}])[0]
    if isinstance(first, dict) and "reasoningContent" not in first:
        kind = "tool_use" if "toolUse" in first else "text"
        raise BadRequest(
            f"The model returned the following errors: messages.{i}.content.0.type: Expected `thinking` or "
            f"`redacted_thinking`, but found `{kind}`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
            "recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
            "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking")


def check_thinking(model_id: str, body: dict) -> bool:
    """`additionalModelRequestFields.thinking` (Bedrock user guide, "Extended thinking"): Claude
    models only, with Anthropic's rules — `{type: enabled, budget_tokens ≥ 1024}`,
    `inferenceConfig.maxTokens` > budget, temperature only 1, no forced tool choice. Returns
    whether thinking is on."""
    extra = body.get("additionalModelRequestFields")
    if extra is None:
        return False
    _require(isinstance(extra, dict), "additionalModelRequestFields must be an object.")
    if "thinking" not in extra:
        return False
    _require(_is_claude(model_id),
             "The model returned the following errors: Malformed input request: extraneous key [thinking] is not permitted, please reformat your input and try again.")
    th = extra["thinking"]
    _require(isinstance(th, dict) and th.get("type") in ("enabled", "disabled"),
             "The model returned the following errors: thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled'")
    if th["type"] == "disabled":
        return False
    _only_keys(th, {"type", "budget_tokens"}, "additionalModelRequestFields.thinking", {"budget_tokens"})
    budget = th["budget_tokens"]
    _require(_is_int(budget) and budget >= 1024,
             "The model returned the following errors: thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    ic = body.get("inferenceConfig", {})
    _require("maxTokens" in ic and ic["maxTokens"] > budget,
             "The model returned the following errors: `max_tokens` must be greater than `thinking.budget_tokens`.")
    _require(ic.get("temperature", 1) == 1,
             "The model returned the following errors: `temperature` may only be set to 1 when thinking is enabled.")
    choice = body.get("toolConfig", {}).get("toolChoice", {})
    _require(not ({"any", "tool"} & set(choice)),
             "The model returned the following errors: Thinking may not be enabled when tool_choice forces tool use.")
    check_final_thinking(body)
    return True


def tool_use_id(k: int, name: str, args: dict) -> str:
    digest = hashlib.sha256(f"{k}:{name}:{json.dumps(args, sort_keys=True)}".encode()).digest()
    return "tooluse_" + base64.urlsafe_b64encode(digest).decode()[:22].replace("-", "x").replace("_", "y")


def stop_reason(d: Decision) -> str:
    """Converse's StopReason: `stop_sequence` says a stop sequence ended the text (not which)."""
    return "stop_sequence" if d.stop_sequence else STOP_REASONS[d.finish]


def _usage(d: Decision, cache: tuple[int, int] = (0, 0)) -> dict:
    u = {
        "inputTokens": d.prompt_tokens - cache[0] - cache[1],
        "outputTokens": d.completion_tokens,
        "totalTokens": d.prompt_tokens + d.completion_tokens,
    }
    if cache != (0, 0):
        u["cacheWriteInputTokens"], u["cacheReadInputTokens"] = cache
    return u


def converse_body(d: Decision, thinking: bool = False, cache: tuple[int, int] = (0, 0)) -> dict:
    content: list[dict] = []
    if thinking:
        content.append({"reasoningContent": {"reasoningText": {"text": REASONING_TEXT,
                                                               "signature": reasoning_signature(REASONING_TEXT)}}})
    if d.text:
        content.append({"text": d.text})
    for k, (name, args) in enumerate(d.tool_calls):
        content.append({"toolUse": {"toolUseId": tool_use_id(k, name, args), "name": name, "input": args}})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(d),
        "usage": _usage(d, cache),
        "metrics": {"latencyMs": 42},
    }


def _pad(n: int) -> str:
    return PADDING[: (n * 7) % len(PADDING) + 1]


def converse_stream_frames(d: Decision, thinking: bool = False, cache: tuple[int, int] = (0, 0)) -> list[bytes]:
    ev = eventstream.event
    frames = [ev("messageStart", {"role": "assistant", "p": _pad(0)})]
    block = 0
    if thinking:
        for delta in ({"text": REASONING_TEXT}, {"signature": reasoning_signature(REASONING_TEXT)}):
            frames.append(ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": delta}}))
        frames.append(ev("contentBlockStop", {"contentBlockIndex": 0}))
        block = 1
    if d.text:
        t = block
        for n, piece in enumerate(d.text_pieces()):
            frames.append(ev("contentBlockDelta", {"contentBlockIndex": t, "delta": {"text": piece}, "p": _pad(n + 1)}))
            if d.explode and n == 0:
                frames.append(
                    eventstream.exception(
                        "modelStreamErrorException",
                        "The model encountered an error while streaming its answer (explode mid-stream).",
                    )
                )
                return frames
        frames.append(ev("contentBlockStop", {"contentBlockIndex": t, "p": _pad(2)}))
        block = t + 1
    for k, (name, args) in enumerate(d.tool_calls):
        b = block + k
        frames.append(
            ev(
                "contentBlockStart",
                {"contentBlockIndex": b, "start": {"toolUse": {"toolUseId": tool_use_id(k, name, args), "name": name}}},
            )
        )
        for piece in Decision.arg_pieces(args):
            frames.append(ev("contentBlockDelta", {"contentBlockIndex": b, "delta": {"toolUse": {"input": piece}}}))
        frames.append(ev("contentBlockStop", {"contentBlockIndex": b}))
    frames.append(ev("messageStop", {"stopReason": stop_reason(d), "p": _pad(3)}))
    frames.append(ev("metadata", {"usage": _usage(d, cache), "metrics": {"latencyMs": 42}, "p": _pad(4)}))
    return frames


# ------------------------------------------------------------------------------------------
# Converse request validation
# ------------------------------------------------------------------------------------------


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _only_keys(obj, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict:
    _require(isinstance(obj, dict), f"{where} must be an object.")
    for k in obj:
        _require(k in allowed, f"extraneous key [{k}] is not permitted at {where}")
    for k in required:
        _require(k in obj, f"required key [{k}] not found at {where}")
    return obj


def _one_key(obj, allowed: set[str], where: str) -> tuple[str, object]:
    _require(isinstance(obj, dict), f"{where} must be an object.")
    _require(len(obj) == 1, f"{where} must have exactly one member set (a union); found {sorted(obj)}.")
    (key, value), = obj.items()
    _require(key in allowed, f"Unknown or unsupported member [{key}] at {where}.")
    return key, value


def _text(v, where: str) -> str:
    _require(isinstance(v, str), f"{where} must be a string.")
    _require(v.strip() != "", f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, and try again.")
    return v


def _image(v, where: str) -> None:
    _only_keys(v, {"format", "source"}, where, {"format", "source"})
    _require(v["format"] in IMAGE_FORMATS, f"{where}.format must be one of {sorted(IMAGE_FORMATS)}.")
    key, data = _one_key(v["source"], {"bytes"}, f"{where}.source")
    _require(isinstance(data, str) and data != "", f"{where}.source.bytes must be a non-empty base64 string.")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.source.bytes is not valid base64.") from None


DOCUMENT_FORMATS = {"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"}
DOCUMENT_NAME_RE = re.compile(r"^(?:[A-Za-z0-9\-()\[\]]|[ ](?! ))+$")


def _document(v, where: str) -> int:
    """A Converse DocumentBlock (API reference: format, name of alphanumerics, single spaces,
    hyphens, parentheses and square brackets, 1-200 characters, source.bytes): decoded size."""
    _only_keys(v, {"format", "name", "source", "context", "citations"}, where, {"name", "source"})
    _require(v.get("format", "txt") in DOCUMENT_FORMATS, f"{where}.format must be one of {sorted(DOCUMENT_FORMATS)}.")
    name = v["name"]
    _require(isinstance(name, str) and 1 <= len(name) <= 200 and DOCUMENT_NAME_RE.match(name) is not None,
             f"{where}.name {name!r} may contain only alphanumerics, single spaces, hyphens, parentheses and square brackets.")
    key, data = _one_key(v["source"], {"bytes", "text", "s3Location", "content"}, f"{where}.source")
    _require(key == "bytes" and isinstance(data, str) and data != "", f"{where}.source.bytes must be a non-empty base64 string.")
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.source.bytes is not valid base64.") from None


def parse_converse(body) -> Conversation:
    """Validates a Converse request body and returns the conversation it carries."""
    _only_keys(body, CONVERSE_KEYS, "the request body", {"messages"})
    messages = body["messages"]
    _require(isinstance(messages, list) and messages, "messages must be a non-empty list.")

    system = None
    if "system" in body:
        _require(isinstance(body["system"], list), "system must be a list.")
        texts = []
        for i, b in enumerate(body["system"]):
            key, v = _one_key(b, {"text", "cachePoint"}, f"system.{i}")
            if key == "text":
                texts.append(_text(v, f"system.{i}"))
        system = "\n\n".join(texts) if texts else None

    max_tokens = None
    if "inferenceConfig" in body:
        ic = _only_keys(body["inferenceConfig"], {"maxTokens", "temperature", "topP", "stopSequences"}, "inferenceConfig")
        if "maxTokens" in ic:
            _require(_is_int(ic["maxTokens"]) and ic["maxTokens"] >= 1, "inferenceConfig.maxTokens must be an integer >= 1.")
            max_tokens = ic["maxTokens"]
        for k in ("temperature", "topP"):
            if k in ic:
                _require(_is_number(ic[k]) and 0 <= ic[k] <= 1, f"inferenceConfig.{k} must be a number between 0 and 1.")
        if "stopSequences" in ic:
            ss = ic["stopSequences"]
            _require(
                isinstance(ss, list) and len(ss) <= 4 and all(isinstance(s, str) and s for s in ss),
                "inferenceConfig.stopSequences must be a list of at most 4 non-empty strings.",
            )

    tools: list[str] = []
    schemas: dict[str, dict] = {}
    tool_choice = None
    if "toolConfig" in body:
        tc = _only_keys(body["toolConfig"], {"tools", "toolChoice"}, "toolConfig", {"tools"})
        _require(isinstance(tc["tools"], list) and tc["tools"], "toolConfig.tools must be a non-empty list.")
        for i, t in enumerate(tc["tools"]):
            key, spec = _one_key(t, {"toolSpec", "cachePoint"}, f"toolConfig.tools.{i}")
            if key == "cachePoint":
                continue
            where = f"toolConfig.tools.{i}.toolSpec"
            _only_keys(spec, {"name", "description", "inputSchema"}, where, {"name", "inputSchema"})
            name = spec["name"]
            _require(isinstance(name, str) and TOOL_NAME_RE.match(name), f"{where}.name must match [a-zA-Z0-9_-]{{1,64}}.")
            _require(name not in tools, f"The tool name {name} is used more than once.")
            if "description" in spec:
                _require(isinstance(spec["description"], str) and spec["description"], f"{where}.description must be a non-empty string.")
            key, schema = _one_key(spec["inputSchema"], {"json"}, f"{where}.inputSchema")
            _require(isinstance(schema, dict), f"{where}.inputSchema.json must be a JSON object.")
            tools.append(name)
            schemas[name] = schema
        if "toolChoice" in tc:
            key, v = _one_key(tc["toolChoice"], {"auto", "any", "tool"}, "toolConfig.toolChoice")
            if key == "tool":
                _only_keys(v, {"name"}, "toolConfig.toolChoice.tool", {"name"})
                _require(v["name"] in tools, f"toolConfig.toolChoice.tool.name {v['name']!r} is not in toolConfig.tools.")
                tool_choice = v["name"]
            else:
                _require(v == {}, f"toolConfig.toolChoice.{key} must be an empty object.")
                tool_choice = "auto" if key == "auto" else "required"

    turns: list[Turn] = []
    uses_tools = False
    pending_ids: list[str] = []  # toolUse ids of the previous assistant turn
    prev_role = None
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        _only_keys(msg, {"role", "content"}, where, {"role", "content"})
        role = msg["role"]
        _require(role in ("user", "assistant"), f"{where}.role must be 'user' or 'assistant'.")
        if prev_role is None:
            _require(role == "user", "A conversation must start with a user message. Try again with a conversation that starts with a user message.")
        else:
            _require(
                role != prev_role,
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again.",
            )
        prev_role = role
        content = msg["content"]
        _require(isinstance(content, list) and content, f"{where}.content must be a non-empty list.")
        texts: list[str] = []
        images = 0
        documents: list[int] = []
        calls: list[tuple[str, str, dict]] = []
        results: list[tuple[str, str]] = []
        for j, block in enumerate(content):
            bw = f"{where}.content.{j}"
            key, v = _one_key(block, {"text", "image", "document", "toolUse", "toolResult", "cachePoint",
                                      "reasoningContent"}, bw)
            if key == "cachePoint":
                continue
            if key == "reasoningContent":
                _require(role == "assistant", f"{bw}: reasoningContent blocks are only allowed in assistant messages.")
                _reasoning_block(v, f"{bw}.reasoningContent")
                continue
            if key == "text":
                texts.append(_text(v, bw))
            elif key == "image":
                _image(v, f"{bw}.image")
                images += 1
            elif key == "document":
                _require(role == "user", f"{bw}: document blocks are only allowed in user messages.")
                documents.append(_document(v, f"{bw}.document"))
            elif key == "toolUse":
                _require(role == "assistant", f"{bw}: toolUse blocks are only allowed in assistant messages.")
                _only_keys(v, {"toolUseId", "name", "input"}, f"{bw}.toolUse", {"toolUseId", "name", "input"})
                _require(isinstance(v["toolUseId"], str) and TOOL_USE_ID_RE.match(v["toolUseId"]), f"{bw}.toolUse.toolUseId must match [a-zA-Z0-9_-]{{1,64}}.")
                _require(isinstance(v["name"], str) and v["name"], f"{bw}.toolUse.name must be a non-empty string.")
                _require(isinstance(v["input"], dict), f"{bw}.toolUse.input must be a JSON object.")
                _require(all(c[0] != v["toolUseId"] for c in calls), f"Duplicate toolUseId {v['toolUseId']}.")
                calls.append((v["toolUseId"], v["name"], v["input"]))
                uses_tools = True
            else:
                _require(role == "user", f"{bw}: toolResult blocks are only allowed in user messages.")
                _only_keys(v, {"toolUseId", "content", "status"}, f"{bw}.toolResult", {"toolUseId", "content"})
                _require(v["toolUseId"] in pending_ids, f"{bw}.toolResult.toolUseId {v['toolUseId']!r} does not match a toolUse block in the previous assistant message.")
                _require(all(r[0] != v["toolUseId"] for r in results), f"Duplicate toolResult for {v['toolUseId']}.")
                if "status" in v:
                    _require(v["status"] in ("success", "error"), f"{bw}.toolResult.status must be 'success' or 'error'.")
                _require(isinstance(v["content"], list), f"{bw}.toolResult.content must be a list.")
                parts = []
                for k, c in enumerate(v["content"]):
                    ckey, cv = _one_key(c, {"text", "json", "image", "document"}, f"{bw}.toolResult.content.{k}")
                    if ckey == "text":
                        _require(isinstance(cv, str), f"{bw}.toolResult.content.{k}.text must be a string.")
                        parts.append(cv)
                    elif ckey == "json":
                        parts.append(json.dumps(cv, separators=(",", ":")))
                    elif ckey == "image":
                        _image(cv, f"{bw}.toolResult.content.{k}.image")
                results.append((v["toolUseId"], "\n".join(parts)))
                uses_tools = True
        if role == "user" and pending_ids:
            missing = [t for t in pending_ids if t not in {r[0] for r in results}]
            _require(
                not missing,
                f"Expected toolResult blocks at {where}.content for the following Ids: {', '.join(missing)}",
            )
        pending_ids = [c[0] for c in calls] if role == "assistant" else []
        text = "\n".join(texts)
        _require(not documents or texts, f"{where}.content: a message with a document must also contain a text block.")
        if role == "assistant":
            turns.append(Turn("assistant", text=text, images=images, tool_calls=calls))
        else:
            # As the OpenAI side sees it: the tool messages, then the user's own message.
            if results:
                turns.append(Turn("tool", tool_results=results))
            if texts or images or not results:
                turns.append(Turn("user", text=text, images=images, documents=documents))
    _require(
        not uses_tools or "toolConfig" in body,
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
    )
    stop = stop_list(body.get("inferenceConfig", {}).get("stopSequences"))
    return Conversation(system=system, turns=turns, tools=tools, tool_choice=tool_choice, max_tokens=max_tokens, stop=stop,
                        tool_schemas=schemas)


# ------------------------------------------------------------------------------------------
# InvokeModel: embeddings
# ------------------------------------------------------------------------------------------


def _embed_family(model_id: str) -> str | None:
    if "amazon.titan-embed-text-v2" in model_id:
        return "titan-v2"
    if "amazon.titan-embed-text-v1" in model_id or "amazon.titan-embed-g1-text" in model_id:
        return "titan-v1"
    if "cohere.embed-v4" in model_id:
        return "cohere-v4"
    if "cohere.embed-" in model_id:
        return "cohere-v3"
    return None


def is_embedding_model(model_id: str) -> bool:
    """Whether `/model/{model_id}/invoke` is an embeddings call this module answers."""
    return _embed_family(model_id) is not None


def invoke(model_id: str, body) -> NativeResponse:
    family = _embed_family(model_id)
    if family is None:
        raise BadRequest(
            f"This mock answers InvokeModel for embedding models only (Titan, Cohere); {model_id!r} is not one."
        )
    if family.startswith("titan"):
        allowed = {"inputText"} if family == "titan-v1" else {"inputText", "dimensions", "normalize", "embeddingTypes"}
        _only_keys(body, allowed, "the request body", {"inputText"})
        text = body["inputText"]
        _require(isinstance(text, str) and text != "", "inputText must be a non-empty string.")
        _require(len(text) <= 50000, "inputText is longer than 50000 characters.")
        dims = body.get("dimensions")
        if "dimensions" in body:
            _require(_is_int(dims) and dims in (256, 512, 1024), "dimensions must be one of 256, 512, 1024.")
        if "normalize" in body:
            _require(isinstance(body["normalize"], bool), "normalize must be a boolean.")
        if "embeddingTypes" in body:
            et = body["embeddingTypes"]
            _require(isinstance(et, list) and et and set(et) <= {"float", "binary"}, "embeddingTypes must list 'float' and/or 'binary'.")
        vec = embed(text, dims)
        tokens = words(text)
        out = {"embedding": vec, "inputTextTokenCount": tokens}
        if family == "titan-v2":
            out["embeddingsByType"] = {"float": vec}
        return json_response(200, out, {"x-amzn-bedrock-input-token-count": str(tokens), "x-amzn-requestid": REQUEST_ID})

    v4 = family == "cohere-v4"
    allowed = {"texts", "input_type", "truncate", "embedding_types", "images"}
    if v4:
        allowed |= {"output_dimension", "max_tokens", "inputs"}
    _only_keys(body, allowed, "the request body", {"input_type"})
    texts = body.get("texts")
    _require(isinstance(texts, list) and all(isinstance(t, str) for t in texts), "texts must be a list of strings.")
    _require(len(texts) <= 96, f"texts may hold at most 96 strings; got {len(texts)}.")
    _require(all(len(t) <= 2048 for t in texts) or v4, "each text may have at most 2048 characters.")
    _require(
        body["input_type"] in ("search_document", "search_query", "classification", "clustering"),
        "input_type must be one of search_document, search_query, classification, clustering.",
    )
    if "truncate" in body:
        _require(body["truncate"] in (("NONE", "LEFT", "RIGHT") if v4 else ("NONE", "START", "END")), "invalid truncate value.")
    if "embedding_types" in body:
        et = body["embedding_types"]
        _require(
            isinstance(et, list) and et and set(et) <= {"float", "int8", "uint8", "binary", "ubinary"},
            "embedding_types must list float, int8, uint8, binary or ubinary.",
        )
    dims = body.get("output_dimension")
    if "output_dimension" in body:
        _require(_is_int(dims) and dims in (256, 512, 1024, 1536), "output_dimension must be one of 256, 512, 1024, 1536.")
    vectors = [embed(t, dims) for t in texts]
    rid = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:32]
    if "embedding_types" in body:
        out = {"id": rid, "texts": texts, "embeddings": {"float": vectors}, "response_type": "embeddings_by_type"}
    else:
        out = {"id": rid, "texts": texts, "embeddings": vectors, "response_type": "embeddings_floats"}
    tokens = sum(words(t) for t in texts)
    return json_response(200, out, {"x-amzn-bedrock-input-token-count": str(tokens), "x-amzn-requestid": REQUEST_ID})


# ------------------------------------------------------------------------------------------
# Self-check
# ------------------------------------------------------------------------------------------


def _decode_frames(data: bytes) -> list[tuple[dict, object]]:
    """A minimal event-stream reader for the self-check (verifies both CRCs)."""
    import struct
    import zlib

    out = []
    while data:
        total, hlen, pcrc = struct.unpack(">III", data[:12])
        assert zlib.crc32(data[:8]) & 0xFFFFFFFF == pcrc, "prelude crc"
        msg = data[:total]
        assert zlib.crc32(msg[:-4]) & 0xFFFFFFFF == struct.unpack(">I", msg[-4:])[0], "message crc"
        h, headers = msg[12 : 12 + hlen], {}
        while h:
            n = h[0]
            name = h[1 : 1 + n].decode()
            assert h[1 + n] == 7
            (vlen,) = struct.unpack(">H", h[2 + n : 4 + n])
            headers[name] = h[4 + n : 4 + n + vlen].decode()
            h = h[4 + n + vlen :]
        payload = msg[12 + hlen : -4]
        out.append((headers, json.loads(payload) if payload else None))
        data = data[total:]
    return out


if __name__ == "__main__":

    def call(path: str, body) -> NativeResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return handle(NativeRequest("POST", path, {}, {"content-type": "application/json"}, raw))

    def show(title: str, r: NativeResponse) -> None:
        print(f"== {title}: HTTP {r.status} {json.dumps(r.headers)}")
        if r.chunks is not None:
            for headers, payload in _decode_frames(b"".join(r.chunks)):
                kind = headers.get(":event-type") or headers.get(":exception-type")
                print(f"   [{headers[':message-type']}] {kind}: {json.dumps(payload)}")
        else:
            print("  ", r.body.decode())

    claude = "/model/" + quote("anthropic.claude-3-5-sonnet-20241022-v2:0", safe="") + "/"
    weather = {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}
    hello = {"messages": [{"role": "user", "content": [{"text": "Hello there"}]}],
             "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 100, "temperature": 0.5}}
    show("converse", call(claude + "converse", hello))
    show("converse-stream", call(claude + "converse-stream", hello))
    ask = {"messages": [{"role": "user", "content": [{"text": "What is the weather in Paris and London?"}]}],
           "toolConfig": {"tools": [weather], "toolChoice": {"auto": {}}}}
    show("converse-stream tool calls", call(claude + "converse-stream", ask))
    history = {
        "messages": [
            ask["messages"][0],
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "London"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C sunny"}], "status": "success"}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "12C rain"}], "status": "success"}}]},
        ],
        "toolConfig": {"tools": [weather]},
    }
    show("converse tool results", call(claude + "converse", history))
    boom = {"messages": [{"role": "user", "content": [{"text": "please explode mid-stream now"}]}]}
    show("converse-stream explode", call(claude + "converse-stream", boom))
    show("fail-429", call("/model/" + quote("us.fail-429.model:0", safe="") + "/converse", hello))
    show("raw ':' in the model label", call("/model/anthropic.claude-3-5-sonnet-20241022-v2:0/converse", hello))
    show("not alternating", call(claude + "converse", {"messages": [hello["messages"][0], hello["messages"][0]]}))
    show("toolUse without toolConfig", call(claude + "converse", {k: v for k, v in history.items() if k != "toolConfig"}))
    show("titan v2", call("/model/amazon.titan-embed-text-v2%3A0/invoke", {"inputText": "hello world", "dimensions": 256, "normalize": True}))
    show("titan v1", call("/model/amazon.titan-embed-text-v1/invoke", {"inputText": "hello world"}))
    show("cohere", call("/model/cohere.embed-english-v3/invoke",
                        {"texts": ["a b", "c"], "input_type": "search_document", "embedding_types": ["float"]}))
    show("titan v1 with dimensions", call("/model/amazon.titan-embed-text-v1/invoke", {"inputText": "x", "dimensions": 256}))
