"""Native mock of the Anthropic Messages API on its three platforms (shared PROTOCOLS.md §2, §3.2,
§4.4): Anthropic itself, Claude on Vertex AI (rawPredict / streamRawPredict) and Claude on Bedrock
(InvokeModel / InvokeModelWithResponseStream).

Handlers, each `(NativeRequest) -> NativeResponse`:
* `handle_messages`        POST /v1/messages — needs `x-api-key` (or a bearer key) and `anthropic-version`;
                           `model` in the body; `stream: true` answers SSE. Also
                           POST /v1/messages/count_tokens -> `{"input_tokens": N}` (no max_tokens).
* `handle_vertex`          POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict
                           or :streamRawPredict — body without `model`, with
                           `anthropic_version: vertex-2023-10-16`; the stream variant needs
                           `stream: true` in the body, rawPredict must not have it. Token counts:
                           …/publishers/anthropic/models/count-tokens:rawPredict, `model` in the
                           body -> `{"input_tokens": N}`.
* `handle_bedrock_invoke`  POST /model/{id}/invoke or /model/{id}/invoke-with-response-stream —
                           `req.path` is the raw path: the model id must be one percent-encoded
                           segment (`:` as %3A, `/` as %2F, as the AWS SDKs send it; real Bedrock
                           also tolerates a raw `:`, this mock does not, to catch encoding bugs);
                           body without `model` and `stream`, with
                           `anthropic_version: bedrock-2023-05-31`; the stream is AWS eventstream
                           `chunk` frames, each holding one Anthropic event JSON in base64.
* `handle_bedrock_count_tokens` POST /model/{id}/count-tokens with
                           `{"input":{"invokeModel":{"body":"<base64 InvokeModel body>"}}}` ->
                           `{"inputTokens": N}`. Every count is `decide()`'s prompt_tokens.

Validation follows the documented Messages request strictly (400 with the platform's error body
when broken): `max_tokens` required (integer ≥ 1); only documented top-level fields (the API answers
"Extra inputs are not permitted"); roles `user`/`assistant` only, first message `user`, roles
alternating (the rule Bedrock's documentation still states); content a non-empty string or a list
of well-formed blocks (`text` non-empty; `image` with a base64 source of jpeg/png/gif/webp or — not on
Bedrock — a url source; `tool_use` assistant-only with an id, name and object input; `tool_result`
user-only, first in its message, answering exactly the previous assistant turn's `tool_use` ids);
a final assistant message (prefill) must not end with whitespace; `system` only top-level (string or
text blocks); temperature/top_p in [0, 1]; `tools` with names and object `input_schema`s;
`tool_choice` auto/any/none/tool (named tool must exist; needs tools).

Extended thinking (`thinking: {type: enabled, budget_tokens ≥ 1024 and < max_tokens}` or
`adaptive`): the answer starts with a `thinking` block (a text derived from the conversation and
`signature` = base64 HMAC-SHA256 of that text under a mock key), streamed as `thinking_delta`s
then one `signature_delta`. Thinking blocks sent back in assistant turns must be exactly
{type, thinking, signature} with the signature of their text (else 400 "Invalid `signature` in
`thinking` block", as Anthropic rejects tampered blocks); with thinking on, the assistant turn a
final tool_result answers must start with a thinking block; temperature ≠ 1, top_k and a forced
tool_choice are refused with thinking. `cache_control` is checked ({type: ephemeral, ttl?: 5m|1h})
on system/message blocks, tool_result content and tools (never on thinking blocks), at most 4
breakpoints per request. Stop sequences cut the text (common.py) and answer
`stop_reason: stop_sequence` with `stop_sequence` set. A model id containing `overloaded` answers
529 `overloaded_error` (Anthropic and Vertex).

Error bodies: Anthropic and the Claude layer on Vertex `{"type":"error","error":{"type","message"}}`;
Vertex's front end (401/403/404/429) the Google shape `{"error":{"code","message","status"}}`;
Bedrock `{"message"}` with `x-amzn-errortype: <Exception>:http://internal.amazon.com/coral/...`.
A 429 carries `retry-after: 3`. Mid-stream failures (`decision.explode`): Anthropic/Vertex
`event: error` with `overloaded_error`; Bedrock a `modelStreamErrorException` frame.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
import zlib

try:  # imported as a package module or with tests/sdk/native on sys.path
    from . import eventstream
    from .common import (
        BadRequest,
        Conversation,
        Decision,
        NativeRequest,
        NativeResponse,
        Turn,
        decide,
        fail_status,
        json_response,
        prompt_cache,
        stop_list,
    )
except ImportError:  # pragma: no cover - flat import
    import eventstream  # type: ignore[no-redef]
    from common import (  # type: ignore[no-redef]
        BadRequest,
        Conversation,
        Decision,
        NativeRequest,
        NativeResponse,
        Turn,
        decide,
        fail_status,
        json_response,
        prompt_cache,
        stop_list,
    )

BEDROCK_VERSION = "bedrock-2023-05-31"
VERTEX_VERSION = "vertex-2023-10-16"
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
VERTEX_RE = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)
BEDROCK_RE = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream)$")

# Top-level request fields the Messages API documents (everything else: "Extra inputs are not
# permitted").
COMMON_FIELDS = {
    "messages", "max_tokens", "system", "metadata", "stop_sequences", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "thinking", "service_tier", "cache_control", "container",
    "inference_geo", "output_config", "speed",
}
FIELDS = {
    "anthropic": COMMON_FIELDS | {"model", "stream"},
    "vertex": COMMON_FIELDS | {"anthropic_version", "stream"},
    "bedrock": COMMON_FIELDS | {"anthropic_version", "anthropic_beta"},
}
# POST /v1/messages/count_tokens takes the conversation, not the sampling fields (no max_tokens);
# Vertex's count-tokens:rawPredict names the model in the body.
COUNT_FIELDS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control",
                "output_config", "speed"}
FIELDS["anthropic-count"] = COUNT_FIELDS
FIELDS["vertex-count"] = COUNT_FIELDS | {"anthropic_version"}
# Extended thinking: the mock signs each thinking text with this key (a stand-in for Anthropic's
# opaque, verified signatures); a thinking block sent back must carry its text's signature.
THINKING_KEY = b"switchyard-native-mock-thinking"
MAX_CACHE_BREAKPOINTS = 4  # "A maximum of 4 blocks with cache_control may be provided."
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
GOOGLE_STATUS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
BEDROCK_EXCEPTIONS = {
    400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
    404: "ResourceNotFoundException", 408: "ModelTimeoutException", 424: "ModelErrorException",
    429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


# --------------------------------------------------------------------------------------------
# Request validation and parsing
# --------------------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def thinking_signature(text: str) -> str:
    """The signature this mock issues for (and expects back with) a thinking text."""
    return base64.b64encode(hmac.new(THINKING_KEY, text.encode(), hashlib.sha256).digest()).decode()


def _thinking_text(conv: Conversation) -> str:
    user = next((t.text for t in reversed(conv.turns) if t.role == "user" and t.text), "")
    last = conv.turns[-1] if conv.turns else None
    if last is not None and last.tool_results:
        return f"The tools answered {len(last.tool_results)} time(s); I report their results."
    return f"The user wrote: {user}. I answer as the echo model does."


class _Breakpoints:
    """Counts `cache_control` breakpoints in one request and checks each one's shape."""

    def __init__(self):
        self.n = 0

    def check(self, b: dict, where: str) -> None:
        if "cache_control" not in b:
            return
        cc = b["cache_control"]
        if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or set(cc) - {"type", "ttl"}:
            raise BadRequest(f"{where}.cache_control: Input should be {{type: 'ephemeral', ttl?}}")
        if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
            raise BadRequest(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
        self.n += 1
        if self.n > MAX_CACHE_BREAKPOINTS:
            raise BadRequest(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {self.n}.")


def _text_of(blocks: list, where: str, bp: _Breakpoints | None = None) -> str:
    out = []
    for k, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise BadRequest(f"{where}.{k}: expected a text block")
        _check_text(b, f"{where}.{k}")
        if bp is not None:
            bp.check(b, f"{where}.{k}")
        out.append(b["text"])
    return " ".join(out)


def _check_text(b: dict, where: str) -> None:
    extra = set(b) - {"type", "text", "cache_control", "citations"}
    if extra:
        raise BadRequest(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    if not isinstance(b.get("text"), str):
        raise BadRequest(f"{where}.text: Field required")
    if not b["text"]:
        raise BadRequest(f"{where}: text content blocks must be non-empty")


def _check_image(b: dict, where: str, platform: str) -> None:
    src = b.get("source")
    if set(b) - {"type", "source", "cache_control"} or not isinstance(src, dict):
        raise BadRequest(f"{where}: an image block is {{type, source}}")
    kind = src.get("type")
    if kind == "base64":
        if set(src) != {"type", "media_type", "data"}:
            raise BadRequest(f"{where}.source: base64 sources have exactly type, media_type, data")
        if src["media_type"] not in MEDIA_TYPES:
            raise BadRequest(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        try:
            base64.b64decode(src["data"], validate=True)
        except Exception:
            raise BadRequest(f"{where}.source.data: invalid base64 data") from None
    elif kind == "url" and platform != "bedrock":
        if set(src) != {"type", "url"} or not isinstance(src["url"], str) or not src["url"].startswith(("http://", "https://")):
            raise BadRequest(f"{where}.source: url sources have exactly type and an http(s) url")
    else:
        raise BadRequest(f"{where}.source.type: Input tag '{kind}' is not supported here")


def _check_document(b: dict, where: str) -> int:
    """A `document` block with a base64 PDF source (Anthropic's PDF support): its decoded size."""
    src = b.get("source")
    if set(b) - {"type", "source", "title", "context", "citations", "cache_control"} or not isinstance(src, dict):
        raise BadRequest(f"{where}: a document block is {{type, source, title?, context?, citations?}}")
    if src.get("type") != "base64" or set(src) != {"type", "media_type", "data"}:
        raise BadRequest(f"{where}.source: this mock takes base64 sources of exactly type, media_type, data")
    if src["media_type"] != "application/pdf":
        raise BadRequest(f"{where}.source.media_type: Input should be 'application/pdf'")
    if "title" in b and not isinstance(b["title"], str):
        raise BadRequest(f"{where}.title: Input should be a valid string")
    try:
        return len(base64.b64decode(src["data"], validate=True))
    except Exception:
        raise BadRequest(f"{where}.source.data: invalid base64 data") from None


def _parse(body, platform: str) -> tuple[Conversation, bool, bool]:
    """Validates a Messages body for `platform` ("anthropic" | "vertex" | "bedrock", or
    "anthropic-count" | "vertex-count" for a token count) and returns the conversation, whether
    the body asks for a stream and whether extended thinking is on. Raises BadRequest."""
    count = platform.endswith("-count")
    bp = _Breakpoints()
    if not isinstance(body, dict):
        raise BadRequest("The request body is not valid JSON.")
    for key in body:
        if key not in FIELDS[platform]:
            if key == "model" and platform != "anthropic":
                raise BadRequest("Malformed input request: #: extraneous key [model] is not permitted")
            raise BadRequest(f"{key}: Extra inputs are not permitted")
    if platform in ("anthropic", "anthropic-count", "vertex-count") and not isinstance(body.get("model"), str):
        raise BadRequest("model: Field required")
    if platform == "bedrock" and body.get("anthropic_version") != BEDROCK_VERSION:
        raise BadRequest(f"anthropic_version: must be '{BEDROCK_VERSION}', got {body.get('anthropic_version')!r}")
    if platform == "vertex" and body.get("anthropic_version") != VERTEX_VERSION or (
        platform == "vertex-count" and body.get("anthropic_version", VERTEX_VERSION) != VERTEX_VERSION
    ):
        raise BadRequest(f"anthropic_version: must be '{VERTEX_VERSION}', got {body.get('anthropic_version')!r}")
    if "anthropic_beta" in body and not (
        isinstance(body["anthropic_beta"], list) and all(isinstance(x, str) for x in body["anthropic_beta"])
    ):
        raise BadRequest("anthropic_beta: expected a list of strings")
    mt = body.get("max_tokens")
    if mt is None and not count:
        raise BadRequest("max_tokens: Field required")
    if not count and (not _is_int(mt) or mt < 1):
        raise BadRequest("max_tokens: Input should be an integer greater than or equal to 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: Input should be a valid boolean")
    for key in ("temperature", "top_p"):
        if key in body and (not _is_num(body[key]) or not 0 <= body[key] <= 1):
            raise BadRequest(f"{key}: Input should be a number between 0 and 1")
    if "top_k" in body and (not _is_int(body["top_k"]) or body["top_k"] < 0):
        raise BadRequest("top_k: Input should be a non-negative integer")
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop_sequences: Input should be a list of strings")
    if "metadata" in body:
        md = body["metadata"]
        if not isinstance(md, dict) or set(md) - {"user_id"} or not isinstance(md.get("user_id", ""), str):
            raise BadRequest("metadata: only {user_id: string} is allowed")
    if "cache_control" in body:  # automatic caching: one breakpoint the API places itself
        bp.check(body, "body")

    thinking = False
    if "thinking" in body:
        th = body["thinking"]
        kind = th.get("type") if isinstance(th, dict) else None
        allowed = {"enabled": {"type", "budget_tokens", "display"}, "adaptive": {"type", "display"},
                   "disabled": {"type"}}
        if kind not in allowed or set(th) - allowed[kind]:
            raise BadRequest("thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'")
        if "display" in th and th["display"] not in ("summarized", "omitted", None):
            raise BadRequest("thinking.display: Input should be 'summarized' or 'omitted'")
        if kind == "enabled":
            bt = th.get("budget_tokens")
            if not _is_int(bt) or bt < 1024:
                raise BadRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if not count and bt >= mt:
                raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                                 "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size")
        thinking = kind in ("enabled", "adaptive")
    if thinking:
        if "temperature" in body and body["temperature"] != 1:
            raise BadRequest("`temperature` may only be set to 1 when thinking is enabled. Please consult our "
                             "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility")
        if "top_k" in body:
            raise BadRequest("`top_k` must be unset when thinking is enabled. Please consult our documentation at "
                             "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility")
        tc = body.get("tool_choice")
        if isinstance(tc, dict) and tc.get("type") in ("any", "tool"):
            raise BadRequest("Thinking may not be enabled when tool_choice forces tool use.")

    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            system = _text_of(system, "system", bp)
        elif not isinstance(system, str):
            raise BadRequest("system: Input should be a string or a list of text blocks")

    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise BadRequest("tools: Input should be a valid list")
    names = []
    schemas: dict[str, dict] = {}
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or set(t) - {"type", "name", "description", "input_schema", "cache_control"}:
            raise BadRequest(f"tools.{i}: a custom tool is {{name, description?, input_schema}}")
        if t.get("type", "custom") != "custom":
            raise BadRequest(f"tools.{i}.type: unsupported tool type {t.get('type')!r}")
        if not isinstance(t.get("name"), str) or not TOOL_NAME_RE.match(t["name"]):
            raise BadRequest(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if "description" in t and not isinstance(t["description"], str):
            raise BadRequest(f"tools.{i}.description: Input should be a valid string")
        schema = t.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise BadRequest(f"tools.{i}.input_schema: JSON schema with type 'object' required")
        if t["name"] in names:
            raise BadRequest(f"tools: Tool names must be unique. Found duplicate: {t['name']}")
        bp.check(t, f"tools.{i}")
        names.append(t["name"])
        schemas[t["name"]] = schema

    choice = None
    if "tool_choice" in body:
        tc = body["tool_choice"]
        kind = tc.get("type") if isinstance(tc, dict) else None
        allowed = {"auto": {"type", "disable_parallel_tool_use"}, "any": {"type", "disable_parallel_tool_use"},
                   "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}
        if kind not in allowed or set(tc) - allowed[kind]:
            raise BadRequest("tool_choice: expected {type: auto|any|tool|none, ...}")
        if not isinstance(tc.get("disable_parallel_tool_use", False), bool):
            raise BadRequest("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
        if not tools:
            raise BadRequest("tool_choice may only be specified while providing tools.")
        if kind == "tool":
            if tc.get("name") not in names:
                raise BadRequest(f"tool_choice.name: no tool named {tc.get('name')!r} in tools")
            choice = tc["name"]
        else:
            choice = {"auto": "auto", "any": "required", "none": "none"}[kind]

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    turns: list[Turn] = []
    pending: list[str] = []  # tool_use ids of the previous assistant turn
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "content" not in m:
            raise BadRequest(f"{where}: a message is exactly {{role, content}}")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: Input should be 'user' or 'assistant'"
                             + (" (use the top-level system parameter)" if role == "system" else ""))
        if i == 0 and role != "user":
            raise BadRequest("messages: first message must use the \"user\" role")
        if i > 0 and messages[i - 1].get("role") == role:
            raise BadRequest("messages: roles must alternate between \"user\" and \"assistant\"")
        last = i == len(messages) - 1
        content = m["content"]
        if isinstance(content, str):
            if not content and not (last and role == "assistant"):
                raise BadRequest(f"{where}: all messages must have non-empty content except for the optional final assistant message")
            content = [{"type": "text", "text": content}] if content else []
        elif not isinstance(content, list) or (not content and not (last and role == "assistant")):
            raise BadRequest(f"{where}.content: Input should be a string or a non-empty list of blocks")
        turn = Turn(role)
        texts: list[str] = []
        results: list[tuple[str, str]] = []
        seen_other = False
        for j, b in enumerate(content):
            bw = f"{where}.content.{j}"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind not in ("thinking", "redacted_thinking") and isinstance(b, dict):
                bp.check(b, bw)
            if kind == "text":
                _check_text(b, bw)
                texts.append(b["text"])
                seen_other = True
            elif kind == "image":
                if role != "user":
                    raise BadRequest(f"{bw}: image blocks are only allowed in user messages")
                _check_image(b, bw, platform)
                turn.images += 1
                seen_other = True
            elif kind == "document":
                if role != "user":
                    raise BadRequest(f"{bw}: document blocks are only allowed in user messages")
                turn.documents.append(_check_document(b, bw))
                seen_other = True
            elif kind == "tool_use":
                if role != "assistant":
                    raise BadRequest(f"{bw}: tool_use blocks are only allowed in assistant messages")
                if set(b) - {"type", "id", "name", "input", "cache_control"}:
                    raise BadRequest(f"{bw}: Extra inputs are not permitted")
                if not isinstance(b.get("id"), str) or not TOOL_ID_RE.match(b["id"]):
                    raise BadRequest(f"{bw}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
                if not isinstance(b.get("name"), str) or not TOOL_NAME_RE.match(b["name"]):
                    raise BadRequest(f"{bw}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
                if not isinstance(b.get("input"), dict):
                    raise BadRequest(f"{bw}.input: Input should be a valid dictionary")
                turn.tool_calls.append((b["id"], b["name"], b["input"]))
            elif kind == "tool_result":
                if role != "user":
                    raise BadRequest(f"{bw}: tool_result blocks are only allowed in user messages")
                if seen_other:
                    raise BadRequest(f"{where}: tool_result blocks must come first in the message content, before any other blocks")
                if set(b) - {"type", "tool_use_id", "content", "is_error", "cache_control"}:
                    raise BadRequest(f"{bw}: Extra inputs are not permitted")
                tid = b.get("tool_use_id")
                if tid not in pending:
                    raise BadRequest(f"{bw}: unexpected `tool_use_id` found in `tool_result` blocks: {tid}. "
                                     "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
                pending.remove(tid)
                rc = b.get("content", "")
                if isinstance(rc, list):
                    parts = []
                    for k, rb in enumerate(rc):
                        if isinstance(rb, dict) and rb.get("type") == "image":
                            _check_image(rb, f"{bw}.content.{k}", platform)
                            bp.check(rb, f"{bw}.content.{k}")
                        else:
                            parts.append(_text_of([rb], f"{bw}.content", bp))
                    rc = " ".join(parts)
                elif not isinstance(rc, str):
                    raise BadRequest(f"{bw}.content: Input should be a string or a list of blocks")
                if not isinstance(b.get("is_error", False), bool):
                    raise BadRequest(f"{bw}.is_error: Input should be a valid boolean")
                results.append((tid, rc))
            elif kind == "thinking" and role == "assistant":
                if set(b) != {"type", "thinking", "signature"}:
                    raise BadRequest(f"{bw}: a thinking block is exactly {{type, thinking, signature}}"
                                     + (" (cache_control cannot be set on thinking blocks)" if "cache_control" in b else ""))
                if not isinstance(b["thinking"], str) or not isinstance(b["signature"], str):
                    raise BadRequest(f"{bw}: thinking and signature must be strings")
                if not hmac.compare_digest(b["signature"], thinking_signature(b["thinking"])):
                    raise BadRequest(f"{bw}: Invalid `signature` in `thinking` block")
                seen_other = True
            elif kind == "redacted_thinking" and role == "assistant":
                if set(b) != {"type", "data"} or not isinstance(b["data"], str) or not b["data"]:
                    raise BadRequest(f"{bw}: a redacted_thinking block is exactly {{type, data}}")
                seen_other = True
            else:
                raise BadRequest(f"{bw}.type: Input tag {kind!r} is not a valid content block here")
        if pending:
            raise BadRequest(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                             + ", ".join(pending))
        if role == "assistant":
            pending = [c[0] for c in turn.tool_calls]
            if last and texts and texts[-1] != texts[-1].rstrip():
                raise BadRequest("messages: final assistant content cannot end with trailing whitespace")
        turn.text = " ".join(texts)
        if results:
            # The OpenAI-side view: tool results, then (if any) the user's own words.
            turns.append(Turn("tool", tool_results=results))
            if turn.text or turn.images or turn.documents:
                turns.append(Turn("user", text=turn.text, images=turn.images, documents=turn.documents))
        else:
            turns.append(turn)
    if thinking and len(messages) >= 2:
        # "When `thinking` is enabled, a final `assistant` message must start with a thinking
        # block" — the assistant turn whose tool_use the last user turn answers.
        prev, final = messages[-2], messages[-1]
        answers_tools = isinstance(final.get("content"), list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in final["content"])
        pc = prev.get("content")
        if answers_tools and prev.get("role") == "assistant" and isinstance(pc, list) and pc:
            first = pc[0].get("type") if isinstance(pc[0], dict) else None
            if first not in ("thinking", "redacted_thinking"):
                raise BadRequest(
                    f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                    f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
                    "thinking blocks from previous turns.")
    conv = Conversation(system=system, turns=turns, tools=names, tool_choice=choice, max_tokens=mt,
                        stop=stop_list(body.get("stop_sequences")), tool_schemas=schemas)
    return conv, stream and not count, thinking


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def _ids(raw: bytes) -> str:
    return f"{zlib.crc32(raw) & 0xFFFFFFFF:08x}"


def _stop_reason(d: Decision) -> str:
    return "stop_sequence" if d.stop_sequence else STOP_REASONS[d.finish]


def _cache_usage(body: dict, prompt_tokens: int) -> tuple[int, int]:
    """(cache writes, cache reads) for the body's `cache_control` breakpoints, in Anthropic's
    prompt order: tools, system, messages."""
    def strip(b):
        return {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b
    elements, marked = [], []
    pieces = list(body.get("tools") or [])
    system = body.get("system")
    pieces += system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
    for m in body.get("messages") or []:
        c = m.get("content") if isinstance(m, dict) else None
        pieces += c if isinstance(c, list) else [{"type": "text", "text": c}]
    for p in pieces:
        elements.append(strip(p))
        marked.append(isinstance(p, dict) and "cache_control" in p)
    return prompt_cache(elements, marked, prompt_tokens)


def _message(d: Decision, model: str, seed: str, thinking: str | None = None,
             cache: tuple[int, int] = (0, 0)) -> dict:
    content: list[dict] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": thinking_signature(thinking)})
    if d.text:
        content.append({"type": "text", "text": d.text})
    for i, (name, args) in enumerate(d.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_{seed}{i:02d}", "name": name, "input": args})
    return {
        "id": f"msg_{seed}", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": _stop_reason(d), "stop_sequence": d.stop_sequence,
        "usage": {"input_tokens": d.prompt_tokens - cache[0] - cache[1], "cache_creation_input_tokens": cache[0],
                  "cache_read_input_tokens": cache[1], "output_tokens": d.completion_tokens},
    }


def _events(d: Decision, model: str, seed: str, thinking: str | None = None,
            cache: tuple[int, int] = (0, 0)) -> tuple[list[dict], bool]:
    """The documented stream event sequence; (events, whether it ends with an error instead)."""
    start = _message(d, model, seed, cache=cache)
    start.update(content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = dict(start["usage"], output_tokens=1)
    evs: list[dict] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    index = 0
    if thinking:
        evs.append({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        ws = thinking.split(" ")
        for piece in [w + " " for w in ws[:-1]] + [ws[-1]]:
            evs.append({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}})
        evs.append({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": thinking_signature(thinking)}})
        evs.append({"type": "content_block_stop", "index": 0})
        index = 1
    if d.text:
        evs.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        for n, piece in enumerate(d.text_pieces()):
            evs.append({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})
            if d.explode and n == 0:
                return evs, True
        evs.append({"type": "content_block_stop", "index": index})
        index += 1
    for i, (name, args) in enumerate(d.tool_calls):
        k = index + i
        evs.append({"type": "content_block_start", "index": k,
                    "content_block": {"type": "tool_use", "id": f"toolu_{seed}{i:02d}", "name": name, "input": {}}})
        evs.append({"type": "content_block_delta", "index": k, "delta": {"type": "input_json_delta", "partial_json": ""}})
        for piece in d.arg_pieces(args):
            evs.append({"type": "content_block_delta", "index": k,
                        "delta": {"type": "input_json_delta", "partial_json": piece}})
        evs.append({"type": "content_block_stop", "index": k})
    evs.append({"type": "message_delta", "delta": {"stop_reason": _stop_reason(d), "stop_sequence": d.stop_sequence},
                "usage": {"output_tokens": d.completion_tokens}})
    evs.append({"type": "message_stop"})
    return evs, False


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(d: Decision, model: str, seed: str, thinking: str | None = None,
         cache: tuple[int, int] = (0, 0)) -> NativeResponse:
    evs, exploded = _events(d, model, seed, thinking, cache)
    chunks = [f"event: {e['type']}\ndata: {_dumps(e)}\n\n".encode() for e in evs]
    if exploded:
        err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        chunks.append(f"event: error\ndata: {_dumps(err)}\n\n".encode())
    headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "request-id": f"req_{seed}"}
    return NativeResponse(200, headers, b"".join(chunks), chunks)


def _anthropic_error(status: int, message: str, type_: str | None = None, seed: str = "mock") -> NativeResponse:
    type_ = type_ or ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    headers = {"request-id": f"req_{seed}"}
    if status == 429:
        headers["retry-after"] = "3"
    return json_response(status, {"type": "error", "error": {"type": type_, "message": message},
                                  "request_id": f"req_{seed}"}, headers)


def _google_error(status: int, message: str) -> NativeResponse:
    headers = {"retry-after": "3"} if status == 429 else {}
    return json_response(status, {"error": {"code": status, "message": message,
                                            "status": GOOGLE_STATUS.get(status, "UNKNOWN")}}, headers)


def _bedrock_error(status: int, message: str, exception: str | None = None) -> NativeResponse:
    exception = exception or BEDROCK_EXCEPTIONS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    headers = {"x-amzn-errortype": f"{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-requestid": "00000000-0000-0000-0000-000000000000"}
    if status == 429:
        headers["retry-after"] = "3"
    return json_response(status, {"message": message}, headers)


def _fail_message(status: int, model: str) -> str:
    return {
        401: "invalid x-api-key", 403: "Your API key does not have permission to use the specified resource.",
        404: f"model: {model}", 413: "Request exceeds the maximum allowed number of bytes.",
        429: "Number of request tokens has exceeded your per-minute rate limit", 500: "Internal server error",
        529: "Overloaded",
    }.get(status, f"Mock failure {status}")


def _body(req: NativeRequest):
    try:
        return req.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


def _model_status(model: str) -> int | None:
    """`fail-<status>` in the model id, or 529 for a model id containing `overloaded`."""
    return fail_status(model) or (529 if "overloaded" in model else None)


def handle_messages(req: NativeRequest) -> NativeResponse:
    """Anthropic direct: POST /v1/messages and POST /v1/messages/count_tokens."""
    if req.path not in ("/v1/messages", "/v1/messages/count_tokens"):
        return _anthropic_error(404, f"Not found: {req.path}", "not_found_error")
    if req.method != "POST":
        return _anthropic_error(405, "Method not allowed", "invalid_request_error")
    # The API key in `x-api-key`, or as `Authorization: Bearer` (how the anthropic Python SDK
    # 2.x sends `api_key`).
    bearer = req.headers.get("authorization", "")
    if not req.headers.get("x-api-key") and not (bearer.startswith("Bearer ") and len(bearer) > 7):
        return _anthropic_error(401, "x-api-key header is required", "authentication_error")
    if not req.headers.get("anthropic-version"):
        return _anthropic_error(400, "anthropic-version: header is required")
    count = req.path.endswith("/count_tokens")
    try:
        body = _body(req)
        conv, stream, thinking = _parse(body, "anthropic-count" if count else "anthropic")
    except BadRequest as e:
        return _anthropic_error(400, str(e))
    model = body["model"]
    seed = _ids(req.body)
    status = _model_status(model)
    if status:
        return _anthropic_error(status, _fail_message(status, model), seed=seed)
    d = decide(conv)
    if count:
        return json_response(200, {"input_tokens": d.prompt_tokens}, {"request-id": f"req_{seed}"})
    think = _thinking_text(conv) if thinking else None
    cache = _cache_usage(body, d.prompt_tokens)
    if stream:
        return _sse(d, model, seed, think, cache)
    return json_response(200, _message(d, model, seed, think, cache), {"request-id": f"req_{seed}"})


def handle_vertex(req: NativeRequest) -> NativeResponse:
    """Claude on Vertex AI: POST …/publishers/anthropic/models/{model}:rawPredict | :streamRawPredict."""
    m = VERTEX_RE.match(req.path)
    if not m:
        return _google_error(404, f"The requested URL {req.path} was not found on this server.")
    if req.method != "POST":
        return _google_error(404, "Method not allowed.")
    model, op = m.group(3), m.group(4)
    if model == "count-tokens":
        # …/publishers/anthropic/models/count-tokens:rawPredict, the model named in the body
        # (cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/count-tokens).
        if op != "rawPredict":
            return _google_error(404, f"The requested URL {req.path} was not found on this server.")
        try:
            body = _body(req)
            conv, _, _ = _parse(body, "vertex-count")
        except BadRequest as e:
            return _anthropic_error(400, str(e))
        status = _model_status(body["model"])
        if status:
            return _anthropic_error(status, _fail_message(status, body["model"]))
        return json_response(200, {"input_tokens": decide(conv).prompt_tokens})
    try:
        body = _body(req)
        conv, stream, thinking = _parse(body, "vertex")
        if op == "streamRawPredict" and not stream:
            raise BadRequest("stream: streamRawPredict requires \"stream\": true in the body")
        if op == "rawPredict" and stream:
            raise BadRequest("stream: use streamRawPredict for streaming requests")
    except BadRequest as e:
        return _anthropic_error(400, str(e))
    seed = _ids(req.body)
    status = _model_status(model)
    if status in GOOGLE_STATUS:  # Google's front end: auth, permission, unknown model, quota
        msg = {429: f"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-{model}. Please submit a quota increase request.",
               404: f"Publisher Model `projects/{m.group(1)}/locations/{m.group(2)}/publishers/anthropic/models/{model}` not found."}
        return _google_error(status, msg.get(status, _fail_message(status, model)))
    if status:
        return _anthropic_error(status, _fail_message(status, model), seed=seed)
    d = decide(conv)
    think = _thinking_text(conv) if thinking else None
    cache = _cache_usage(body, d.prompt_tokens)
    if stream:
        return _sse(d, model, seed, think, cache)
    return json_response(200, _message(d, model, seed, think, cache))


def handle_bedrock_invoke(req: NativeRequest) -> NativeResponse:
    """Claude on Bedrock: POST /model/{id}/invoke | /model/{id}/invoke-with-response-stream."""
    m = BEDROCK_RE.match(req.path)
    if not m:
        return _bedrock_error(404, f"Unknown operation {req.path}", "UnknownOperationException")
    if req.method != "POST":
        return _bedrock_error(404, "Unknown operation", "UnknownOperationException")
    segment, op = m.group(1), m.group(2)
    if ":" in segment:
        return _bedrock_error(400, f"Model id not percent-encoded in the path: {segment} (expected ':' as %3A)")
    model = urllib.parse.unquote(segment)
    try:
        body = _body(req)
        conv, _, thinking = _parse(body, "bedrock")
    except BadRequest as e:
        return _bedrock_error(400, str(e))
    think = _thinking_text(conv) if thinking else None
    seed = _ids(req.body)
    status = fail_status(model)
    if status:
        return _bedrock_error(status, {429: "Too many requests, please wait before trying again."}.get(
            status, _fail_message(status, model)))
    d = decide(conv)
    usage_headers = {"x-amzn-bedrock-input-token-count": str(d.prompt_tokens),
                     "x-amzn-bedrock-output-token-count": str(d.completion_tokens),
                     "x-amzn-bedrock-invocation-latency": "42"}
    cache = _cache_usage(body, d.prompt_tokens)
    if op == "invoke":
        return json_response(200, _message(d, model, seed, think, cache), usage_headers)
    evs, exploded = _events(d, model, seed, think, cache)
    evs = [e for e in evs if e["type"] != "ping"]  # Bedrock does not forward pings
    if not exploded:
        evs[-1]["amazon-bedrock-invocationMetrics"] = {
            "inputTokenCount": d.prompt_tokens, "outputTokenCount": d.completion_tokens,
            "invocationLatency": 42, "firstByteLatency": 7}
    chunks = [eventstream.chunk(e) for e in evs]
    if exploded:
        chunks.append(eventstream.exception("modelStreamErrorException",
                                            "The model stream was interrupted: Overloaded"))
    headers = {"content-type": "application/vnd.amazon.eventstream",
               "x-amzn-bedrock-content-type": "application/json"}
    return NativeResponse(200, headers, b"".join(chunks), chunks)


def handle_bedrock_count_tokens(req: NativeRequest) -> NativeResponse:
    """Bedrock CountTokens for a Claude model: POST /model/{id}/count-tokens with
    `{"input":{"invokeModel":{"body":"<base64 InvokeModel body>"}}}` -> `{"inputTokens":N}`
    (Bedrock API reference: CountTokens, CountTokensInput, InvokeModelTokensRequest). The
    `converse` input form is not served here (the gateway counts Claude bodies)."""
    m = re.match(r"^/model/([^/]+)/count-tokens$", req.path)
    if not m or req.method != "POST":
        return _bedrock_error(404, f"Unknown operation {req.path}", "UnknownOperationException")
    segment = m.group(1)
    if ":" in segment:
        return _bedrock_error(400, f"Model id not percent-encoded in the path: {segment} (expected ':' as %3A)")
    model = urllib.parse.unquote(segment)
    try:
        body = _body(req)
        if not isinstance(body, dict) or set(body) != {"input"}:
            raise BadRequest("Malformed input request: the body is exactly {\"input\": {...}}")
        inp = body["input"]
        if not isinstance(inp, dict) or len(inp) != 1 or "invokeModel" not in inp:
            raise BadRequest("input: exactly one of invokeModel or converse is required (this mock serves invokeModel)")
        im = inp["invokeModel"]
        if not isinstance(im, dict) or set(im) != {"body"} or not isinstance(im["body"], str):
            raise BadRequest("input.invokeModel: exactly {body: <base64 string>}")
        try:
            raw = base64.b64decode(im["body"], validate=True)
        except Exception:
            raise BadRequest("input.invokeModel.body: invalid base64") from None
        try:
            inner = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("input.invokeModel.body: the decoded body is not JSON") from None
        conv, _, _ = _parse(inner, "bedrock")
    except BadRequest as e:
        return _bedrock_error(400, str(e))
    status = fail_status(model)
    if status:
        return _bedrock_error(status, _fail_message(status, model))
    return json_response(200, {"inputTokens": decide(conv).prompt_tokens},
                         {"x-amzn-requestid": "00000000-0000-0000-0000-000000000000"})


# --------------------------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------------------------


def _frames(data: bytes) -> list[tuple[dict, bytes]]:
    """Decodes eventstream frames, checking both CRCs (self-check only)."""
    import struct

    out = []
    while data:
        total, hlen = struct.unpack(">II", data[:8])
        assert zlib.crc32(data[:8]) & 0xFFFFFFFF == struct.unpack(">I", data[8:12])[0]
        assert zlib.crc32(data[: total - 4]) & 0xFFFFFFFF == struct.unpack(">I", data[total - 4 : total])[0]
        h, headers = data[12 : 12 + hlen], {}
        while h:
            n = h[0]
            name = h[1 : 1 + n].decode()
            vlen = struct.unpack(">H", h[2 + n : 4 + n])[0]
            headers[name] = h[4 + n : 4 + n + vlen].decode()
            h = h[4 + n + vlen :]
        out.append((headers, data[12 + hlen : total - 4]))
        data = data[total:]
    return out


if __name__ == "__main__":
    def req(path, body, headers=None):
        return NativeRequest("POST", path, {}, headers or {}, json.dumps(body).encode())

    anth = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    base = {"max_tokens": 100, "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]}

    def show(title, r):
        print(f"--- {title}: {r.status} {r.headers}")
        if r.headers.get("content-type") == "application/vnd.amazon.eventstream":
            for h, p in _frames(r.body):
                inner = json.loads(base64.b64decode(json.loads(p)["bytes"])) if h[":message-type"] == "event" else json.loads(p)
                print(" ", h.get(":event-type") or h.get(":exception-type"), _dumps(inner))
        else:
            print(" ", r.body.decode()[:1500])

    show("anthropic", handle_messages(req("/v1/messages", dict(base, model="claude-test"), anth)))
    show("anthropic stream, tools", handle_messages(req("/v1/messages", dict(
        base, model="claude-test", stream=True, tools=tools,
        messages=[{"role": "user", "content": "weather in Paris and London?"}]), anth)))
    show("anthropic tool results", handle_messages(req("/v1/messages", {
        "model": "claude-test", "max_tokens": 50, "tools": tools, "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C sunny"}]}]}, anth)))
    show("anthropic no api key", handle_messages(req("/v1/messages", dict(base, model="claude-test"), {"anthropic-version": "2023-06-01"})))
    show("anthropic bad: assistant first", handle_messages(req("/v1/messages", dict(
        base, model="claude-test", messages=[{"role": "assistant", "content": "hi"}]), anth)))
    show("anthropic bad: no max_tokens", handle_messages(req("/v1/messages", {"model": "c", "messages": base["messages"]}, anth)))
    show("anthropic fail-429", handle_messages(req("/v1/messages", dict(base, model="claude-fail-429"), anth)))
    show("vertex stream explode", handle_vertex(req(
        "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:streamRawPredict",
        dict(base, anthropic_version=VERTEX_VERSION, stream=True,
             messages=[{"role": "user", "content": "please explode mid-stream now"}]))))
    show("vertex rawPredict with model (bad)", handle_vertex(req(
        "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-x:rawPredict",
        dict(base, anthropic_version=VERTEX_VERSION, model="claude-x"))))
    show("vertex fail-429", handle_vertex(req(
        "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-fail-429:rawPredict",
        dict(base, anthropic_version=VERTEX_VERSION))))
    enc = urllib.parse.quote("anthropic.claude-3-5-sonnet-20241022-v2:0", safe="")
    show("bedrock invoke", handle_bedrock_invoke(req(f"/model/{enc}/invoke", dict(base, anthropic_version=BEDROCK_VERSION))))
    show("bedrock stream", handle_bedrock_invoke(req(f"/model/{enc}/invoke-with-response-stream", dict(
        base, anthropic_version=BEDROCK_VERSION, tools=tools, tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "what now"}]))))
    show("bedrock stream explode", handle_bedrock_invoke(req(f"/model/{enc}/invoke-with-response-stream", dict(
        base, anthropic_version=BEDROCK_VERSION, messages=[{"role": "user", "content": "explode mid-stream please"}]))))
    show("bedrock raw ':' in path (bad)", handle_bedrock_invoke(req(
        "/model/anthropic.claude-v2:1/invoke", dict(base, anthropic_version=BEDROCK_VERSION))))
    show("bedrock with stream field (bad)", handle_bedrock_invoke(req(f"/model/{enc}/invoke", dict(
        base, anthropic_version=BEDROCK_VERSION, stream=True))))
    show("bedrock url image (bad)", handle_bedrock_invoke(req(f"/model/{enc}/invoke", dict(
        base, anthropic_version=BEDROCK_VERSION, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]))))

    # Extended thinking, cache_control, stop sequences, count_tokens, overloaded (asserted).
    think = dict(base, model="claude-test", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    r = handle_messages(req("/v1/messages", think, anth))
    msg = json.loads(r.body)
    assert r.status == 200 and msg["content"][0]["type"] == "thinking", r.body
    assert msg["content"][0]["signature"] == thinking_signature(msg["content"][0]["thinking"])
    s = handle_messages(req("/v1/messages", dict(think, stream=True), anth))
    got = {"thinking": "", "signature": ""}
    for line in s.body.decode().splitlines():
        if line.startswith("data: ") and '"thinking_delta"' in line:
            got["thinking"] += json.loads(line[6:])["delta"]["thinking"]
        elif line.startswith("data: ") and '"signature_delta"' in line:
            got["signature"] += json.loads(line[6:])["delta"]["signature"]
    assert got == {"thinking": msg["content"][0]["thinking"], "signature": msg["content"][0]["signature"]}, got
    tools_think = dict(think, tools=tools, messages=[{"role": "user", "content": "weather in Paris?"}])
    first = json.loads(handle_messages(req("/v1/messages", tools_think, anth)).body)["content"]
    assert [b["type"] for b in first] == ["thinking", "tool_use"], first
    follow = dict(tools_think, messages=tools_think["messages"] + [
        {"role": "assistant", "content": first},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first[1]["id"], "content": "18C"}]}])
    assert handle_messages(req("/v1/messages", follow, anth)).status == 200
    tampered = json.loads(json.dumps(follow))
    tampered["messages"][1]["content"][0]["thinking"] += " (edited)"
    r = handle_messages(req("/v1/messages", tampered, anth))
    assert r.status == 400 and "Invalid `signature`" in r.body.decode(), r.body
    dropped = json.loads(json.dumps(follow))
    dropped["messages"][1]["content"] = dropped["messages"][1]["content"][1:]
    r = handle_messages(req("/v1/messages", dropped, anth))
    assert r.status == 400 and "must start with a thinking block" in r.body.decode(), r.body
    assert handle_messages(req("/v1/messages", dict(think, max_tokens=1024), anth)).status == 400
    cc = {"type": "ephemeral"}
    cached = dict(base, model="claude-test", system=[{"type": "text", "text": "Be brief.", "cache_control": cc}],
                  tools=[dict(tools[0], cache_control={"type": "ephemeral", "ttl": "1h"})])
    assert handle_messages(req("/v1/messages", cached, anth)).status == 200
    five = dict(cached, system=[{"type": "text", "text": f"s{i}", "cache_control": cc} for i in range(5)])
    assert handle_messages(req("/v1/messages", five, anth)).status == 400
    bad_cc = dict(cached, tools=[dict(tools[0], cache_control={"type": "persistent"})])
    assert handle_messages(req("/v1/messages", bad_cc, anth)).status == 400
    stop = json.loads(handle_messages(req("/v1/messages", dict(base, model="claude-test", stop_sequences=[" there"]), anth)).body)
    assert (stop["content"][0]["text"], stop["stop_reason"], stop["stop_sequence"]) == ("Echo: Hello", "stop_sequence", " there"), stop
    count = {"model": "claude-test", "system": "Be brief.", "messages": base["messages"]}
    r = handle_messages(req("/v1/messages/count_tokens", count, anth))
    assert (r.status, json.loads(r.body)) == (200, {"input_tokens": 4}), r.body
    assert handle_messages(req("/v1/messages/count_tokens", dict(count, max_tokens=5), anth)).status == 400
    r = handle_vertex(req("/v1/projects/p1/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict",
                          dict(count, model="claude-3-5-sonnet-v2@20241022")))
    assert (r.status, json.loads(r.body)) == (200, {"input_tokens": 4}), r.body
    inner = base64.b64encode(json.dumps(dict(base, anthropic_version=BEDROCK_VERSION)).encode()).decode()
    r = handle_bedrock_count_tokens(req(f"/model/{enc}/count-tokens", {"input": {"invokeModel": {"body": inner}}}))
    assert (r.status, json.loads(r.body)) == (200, {"inputTokens": 4}), r.body
    r = handle_bedrock_count_tokens(req(f"/model/{enc}/count-tokens", {"input": {"invokeModel": {"body": "not base64!"}}}))
    assert r.status == 400, r.body
    r = handle_messages(req("/v1/messages", dict(base, model="claude-overloaded"), anth))
    assert r.status == 529 and json.loads(r.body)["error"]["type"] == "overloaded_error", r.body
    print("self-check ok")
