"""The behaviour every native mock provider shares, so one OpenAI-SDK test can run against all.

Each provider module (anthropic.py, bedrock.py, gemini.py, watsonx.py, oci.py) parses its own
documented wire format into a `Conversation`, asks `decide()` what the model answers, and
renders that `Decision` in its own wire format (JSON, SSE or AWS eventstream). Because the
decision depends only on the conversation, the OpenAI-visible result is the same for every
provider and the tests can compute the expected answer with `decide()` too.

Rules (the "model"):
* last turn holds tool results  -> text "Tool results: r1; r2" (finish stop)
* tools offered and the last user text mentions "weather" (or tool_choice forces a tool)
                                 -> one tool call per city named in the text ("Paris", "London";
                                    Paris if none), to the named/first tool, args {"city": <city>}
                                    (finish tool_calls)
* otherwise                      -> "Echo: <last user text>" plus " [system: <system>]" when a
                                    system prompt is present and " [image]" per image received
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
CITIES = ("Paris", "London")


@dataclass
class Turn:
    role: str  # "user" | "assistant" | "tool"
    text: str = ""
    images: int = 0
    tool_calls: list[tuple[str, str, dict]] = field(default_factory=list)  # (id, name, args)
    tool_results: list[tuple[str, str]] = field(default_factory=list)  # (call id, result text)


@dataclass
class Conversation:
    system: str | None
    turns: list[Turn]
    tools: list[str] = field(default_factory=list)
    # None | "auto" | "none" | "required" | <tool name>
    tool_choice: str | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)  # stop sequences


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
    d = _finish(text, [], prompt, c.max_tokens, c.stop)
    d.explode = "explode mid-stream" in user_text
    return d


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
