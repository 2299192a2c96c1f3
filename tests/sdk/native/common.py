"""The behaviour every native mock provider shares, so one OpenAI-SDK test can run against all.

Each provider module (anthropic.py, bedrock.py, gemini.py, watsonx.py, oci.py) parses its own
documented wire format into a `Conversation`, asks `decide()` what the model answers, and
renders that `Decision` in its own wire format (JSON, SSE or AWS eventstream). Because the
decision depends only on the conversation, the OpenAI-visible result is the same for every
provider and the tests can compute the expected answer with `decide()` too.

Rules (the "model"):
* last turn holds tool results  -> text "Tool results: r1; r2" (finish stop)
* a native JSON mode (`Conversation.json_schema`: the provider's response schema, `{}` for
  JSON without one)             -> text: `sample(schema)` as JSON (finish stop, never cut)
* the gateway's response_format tool (`JSON_TOOL`) offered and forced by name, or offered
  with tool_choice any/required and the user text not asking for weather
                                 -> one call to it with `sample(its input schema)` as args
* tools offered and the last user text mentions "weather" (or tool_choice forces a tool)
                                 -> one tool call per city named in the text ("Paris", "London";
                                    Paris if none), to the named/first tool, args {"city": <city>}
                                    (finish tool_calls)
* otherwise                      -> "Echo: <last user text>" plus " [system: <system>]" when a
                                    system prompt is present, " [image]" per image and
                                    " [document: <n> bytes]" per document (PDF) received
* a stop sequence (the request's `stop`/`stop_sequences`/`stopSequences`) found in the answer
  text cuts the text just before its first occurrence (finish stop, `Decision.stop_sequence`
  names the one matched, for the providers that report it)
* max_tokens below the answer's word count truncates to that many words (finish length)
* usage: prompt_tokens = words in system + every turn's text; completion_tokens = words in the
  answer text + 5 per tool call
* the provider's model id containing "fail-<status>" -> that HTTP status with the provider's
  documented error body (429 adds `retry-after: 3`)
* the last user text containing "explode mid-stream" -> in a stream, the provider's documented
  mid-stream error event after the first text piece
Streams deliver the text word by word (each word with its trailing space, as separate events)
and tool arguments in pieces of at most 5 characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

FAIL_RE = re.compile(r"fail-(\d{3})")
# The tool the gateway adds for `response_format` where the provider has no JSON mode.
JSON_TOOL = "switchyard_json_response"
CITIES = ("Paris", "London")


@dataclass
class Turn:
    role: str  # "user" | "assistant" | "tool"
    text: str = ""
    images: int = 0
    tool_calls: list[tuple[str, str, dict]] = field(default_factory=list)  # (id, name, args)
    tool_results: list[tuple[str, str]] = field(default_factory=list)  # (call id, result text)
    # Decoded byte length of each document (PDF) received in this turn.
    documents: list[int] = field(default_factory=list)


@dataclass
class Conversation:
    system: str | None
    turns: list[Turn]
    tools: list[str] = field(default_factory=list)
    # None | "auto" | "none" | "required" | <tool name>
    tool_choice: str | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)  # stop sequences
    tool_schemas: dict[str, dict] = field(default_factory=dict)  # tool name -> input schema
    json_schema: dict | None = None  # a native JSON mode's schema ({} for JSON without one)


@dataclass
class Decision:
    text: str
    tool_calls: list[tuple[str, dict]]  # (name, args)
    finish: str  # OpenAI terms: "stop" | "length" | "tool_calls"
    prompt_tokens: int
    completion_tokens: int
    explode: bool = False
    stop_sequence: str | None = None  # the stop sequence that ended the text, if one did

    def text_pieces(self) -> list[str]:
        ws = self.text.split(" ")
        return [w + " " for w in ws[:-1]] + [ws[-1]] if self.text else []

    @staticmethod
    def arg_pieces(args: dict) -> list[str]:
        s = json.dumps(args, separators=(",", ":"))
        return [s[i : i + 5] for i in range(0, len(s), 5)]


def words(text: str) -> int:
    return len(text.split())


def decide(c: Conversation) -> Decision:
    prompt = words(c.system or "") + sum(
        words(t.text) + sum(words(r) for _, r in t.tool_results) for t in c.turns
    )
    last = c.turns[-1] if c.turns else Turn("user")
    user_text = next((t.text for t in reversed(c.turns) if t.role == "user" and t.text), "")
    if last.tool_results:
        text = "Tool results: " + "; ".join(r for _, r in last.tool_results)
        return _finish(text, [], prompt, c.max_tokens, c.stop)
    if c.json_schema is not None:
        text = json.dumps(sample(c.json_schema, user_text))
        return Decision(text, [], "stop", prompt, words(text))
    if JSON_TOOL in c.tools and (c.tool_choice == JSON_TOOL
                                 or (c.tool_choice == "required" and "weather" not in user_text)):
        args = sample(c.tool_schemas.get(JSON_TOOL, {}), user_text)
        return Decision("", [(JSON_TOOL, args)], "tool_calls", prompt, 5)
    forced = c.tool_choice not in (None, "auto", "none")
    if c.tools and c.tool_choice != "none" and ("weather" in user_text or forced):
        name = c.tool_choice if c.tool_choice in c.tools else c.tools[0]
        cities = [city for city in CITIES if city in user_text] or ["Paris"]
        calls = [(name, {"city": city}) for city in cities]
        return Decision("", calls, "tool_calls", prompt, 5 * len(calls))
    text = f"Echo: {last.text or user_text}"
    if c.system:
        text += f" [system: {c.system}]"
    text += " [image]" * sum(t.images for t in c.turns)
    text += "".join(f" [document: {n} bytes]" for t in c.turns for n in t.documents)
    d = _finish(text, [], prompt, c.max_tokens, c.stop)
    d.explode = "explode mid-stream" in user_text
    return d


def sample(schema, text: str, root=None):
    """A value valid against `schema` (JSON Schema, or Vertex's Schema with upper-case types):
    strings are `text`, integers 7, numbers 1.5, booleans true, arrays one item, objects every
    property (an object without properties: {"echo": text}); `$ref` into `$defs`/`definitions`,
    the first of `anyOf`/`oneOf` that is not null, `enum`/`const` their first value."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return {"echo": text}
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return sample(node, text, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") in ("null", "NULL"))]
            return sample((options or schema[key])[0], text, root)
    if "allOf" in schema:
        return sample(schema["allOf"][0], text, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    t = (t or ("object" if "properties" in schema or not schema else "")).lower()
    if t == "object":
        props = schema.get("properties") or {}
        if not props:
            return {"echo": text}
        return {k: sample(v, text, root) for k, v in props.items()}
    if t == "array":
        return [sample(schema.get("items", {}), text, root)]
    return {"string": text, "integer": 7, "number": 1.5, "boolean": True}.get(t)


def _finish(text: str, calls, prompt: int, max_tokens: int | None, stop: list[str] = ()) -> Decision:
    hits = [(text.find(s), n, s) for n, s in enumerate(stop) if s and s in text]
    matched = None
    if hits:
        at, _, matched = min(hits)
        text = text[:at]
    ws = text.split(" ")
    if max_tokens is not None and len(ws) > max_tokens:
        cut = " ".join(ws[:max_tokens])
        return Decision(cut, calls, "length", prompt, words(cut))
    return Decision(text, calls, "stop", prompt, words(text), stop_sequence=matched)


def stop_list(value) -> list[str]:
    """A request's stop sequences: one string or a list of them (anything else: none)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)]
    return []


def openai_json_schema(rf) -> dict | None:
    """An OpenAI-style `response_format` as `Conversation.json_schema`."""
    if not isinstance(rf, dict):
        return None
    if rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema") or {}
    return {} if rf.get("type") == "json_object" else None


def fail_status(model_id: str) -> int | None:
    m = FAIL_RE.search(model_id or "")
    return int(m.group(1)) if m else None


def embed(text: str, dims: int | None) -> list[float]:
    """A deterministic vector for `text` (default 4 dimensions)."""
    n = dims or 4
    return [round(((ord(text[i % len(text)]) + i) % 97) / 97, 6) for i in range(n)]


@dataclass
class NativeRequest:
    method: str
    path: str  # below the provider prefix, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class NativeResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    # When set, the body is sent chunked, one write per element (a stream).
    chunks: list[bytes] | None = None


def json_response(status: int, obj, headers: dict[str, str] | None = None) -> NativeResponse:
    h = {"content-type": "application/json"}
    h.update(headers or {})
    return NativeResponse(status, h, json.dumps(obj, separators=(",", ":")).encode())


class BadRequest(Exception):
    """Raised by a provider parser when the request breaks the provider's documented format;
    the provider module turns it into its own 400 error body."""


# --------------------------------------------------------------------------------------------
# Prompt caching
# --------------------------------------------------------------------------------------------

_SEEN_PREFIXES: set[str] = set()


def _strings_words(v) -> int:
    if isinstance(v, str):
        return words(v)
    if isinstance(v, dict):
        return sum(_strings_words(x) for k, x in v.items() if k not in ("cache_control", "cachePoint"))
    if isinstance(v, list):
        return sum(_strings_words(x) for x in v)
    return 0


def prompt_cache(elements: list, marked: list[bool], prompt_tokens: int) -> tuple[int, int]:
    """A provider-side prompt cache, for the mocks that take explicit breakpoints.

    `elements` are the prompt's pieces in prompt order (tools, system, message blocks) and
    `marked[i]` says a breakpoint follows piece i. The prefix up to the last breakpoint is
    cached: written the first time it is seen, read afterwards. Its size is the words in its
    strings, kept below `prompt_tokens`. Returns (cache_write_tokens, cache_read_tokens)."""
    last = max((i for i, m in enumerate(marked) if m), default=None)
    if last is None or prompt_tokens < 2:
        return 0, 0
    prefix = elements[: last + 1]
    size = min(max(_strings_words(prefix), 1), prompt_tokens - 1)
    key = json.dumps(prefix, sort_keys=True)
    if key in _SEEN_PREFIXES:
        return 0, size
    _SEEN_PREFIXES.add(key)
    return size, 0
