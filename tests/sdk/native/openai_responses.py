"""The OpenAI Responses API (`POST /v1/responses`; Azure OpenAI's `/openai/v1/responses`) as a
native mock on the shared behaviour (common.decide).

Wire format (platform.openai.com/docs/api-reference/responses/create and .../responses-streaming):
`input` is a string or a list of items — `message` items (role user/system/developer/assistant,
content a string or `input_text` / `input_image` / `input_file` / assistant `output_text` parts),
`function_call` {call_id, name, arguments}, `function_call_output` {call_id, output},
`reasoning` items; `instructions` is the system prompt; function tools are flat
(`{"type":"function","name","parameters"}`); `text.format` is the structured-output format;
`max_output_tokens`. The answer is a `response` object with `output` items and `usage`
{input_tokens, output_tokens, total_tokens, *_details}; a stream is `event:`/`data:` pairs with
`sequence_number`, ending with `response.completed` (no `[DONE]`).

The mock checks what a real deployment would refuse: unknown item or part types, a
`function_call_output` whose `call_id` no earlier `function_call` in the input has, item `id`s it
did not issue (OpenAI resolves ids among its stored items only), `previous_response_id` (the
gateway resolves those itself), and chat-only fields (`messages`, `stream_options.include_usage`).
"""

from __future__ import annotations

import json
import uuid

from common import BadRequest, Conversation, NativeResponse, Turn, decide, json_response

CREATED = 1700000000
ISSUED_PREFIX = "mock_"


def _parts(content) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or an array of parts")
    texts, images = [], 0
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text") and isinstance(p.get("text"), str):
            texts.append(p["text"])
        elif kind == "input_image" and (isinstance(p.get("image_url"), str) or p.get("file_id")):
            images += 1
        elif kind == "input_file":
            texts.append("")
        elif kind == "refusal":
            pass
        else:
            raise BadRequest(f"Invalid content part type: {kind!r}")
    return "\n".join(texts), images


def conversation(body: dict) -> Conversation:
    if "messages" in body:
        raise BadRequest("Unknown parameter: 'messages'.")
    if "previous_response_id" in body:
        raise BadRequest("The mock was sent a previous_response_id: the gateway resolves those itself.")
    if (body.get("stream_options") or {}).get("include_usage") is not None:
        raise BadRequest("Unknown parameter: 'stream_options.include_usage'.")
    system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("input must be a string or a non-empty array")
    turns: list[Turn] = []
    calls_seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object")
        if "id" in item and not str(item["id"]).startswith(ISSUED_PREFIX):
            raise BadRequest(f"Item with id '{item['id']}' not found.")
        kind = item.get("type", "message")
        if kind == "message":
            text, images = _parts(item.get("content"))
            role = item.get("role")
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                turns.append(Turn("user", text, images))
            elif role == "assistant":
                turns.append(Turn("assistant", text))
            else:
                raise BadRequest(f"input[{i}].role: invalid role {role!r}")
        elif kind == "function_call":
            call = (item["call_id"], item["name"], json.loads(item.get("arguments") or "{}"))
            calls_seen.add(item["call_id"])
            if turns and turns[-1].role == "assistant" and not turns[-1].text:
                turns[-1].tool_calls.append(call)
            else:
                turns.append(Turn("assistant", "", tool_calls=[call]))
        elif kind == "function_call_output":
            if item.get("call_id") not in calls_seen:
                raise BadRequest(f"No tool call found for function call output with call_id {item.get('call_id')}.")
            out = item.get("output")
            out = out if isinstance(out, str) else json.dumps(out)
            if turns and turns[-1].role == "tool":
                turns[-1].tool_results.append((item["call_id"], out))
            else:
                turns.append(Turn("tool", "", tool_results=[(item["call_id"], out)]))
        elif kind == "reasoning":
            pass
        else:
            raise BadRequest(f"Invalid input item type: {kind!r}")
    tools = []
    schemas = {}
    for t in body.get("tools") or []:
        if t.get("type") != "function" or not isinstance(t.get("name"), str):
            if t.get("type") in ("web_search", "web_search_preview", "file_search", "code_interpreter"):
                continue  # built-in tools: OpenAI runs them; the mock ignores them
            raise BadRequest(f"Invalid tool {t!r}")
        tools.append(t["name"])
        schemas[t["name"]] = t.get("parameters") or {}
    tc = body.get("tool_choice")
    if isinstance(tc, dict):
        tc = tc.get("name")
    fmt = (body.get("text") or {}).get("format") or {}
    json_schema = None
    if fmt.get("type") == "json_schema":
        json_schema = fmt.get("schema") or {}
    elif fmt.get("type") == "json_object":
        json_schema = {}
    return Conversation(system="\n\n".join(system) or None, turns=turns, tools=tools, tool_choice=tc,
                        max_tokens=body.get("max_output_tokens"), tool_schemas=schemas,
                        json_schema=json_schema)


def _usage(d) -> dict:
    return {"input_tokens": d.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": d.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": d.prompt_tokens + d.completion_tokens}


def _response(body: dict, model: str, output: list, status: str, usage, rid: str) -> dict:
    return {
        "id": rid, "object": "response", "created_at": CREATED, "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": 1.0,
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }


def respond(body: dict, model: str) -> NativeResponse:
    d = decide(conversation(body))
    output = []
    if d.text:
        output.append({"type": "message", "id": "mock_msg_1", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": d.text, "annotations": [], "logprobs": []}]})
    for i, (name, args) in enumerate(d.tool_calls):
        output.append({"type": "function_call", "id": f"mock_fc_{i}", "call_id": f"call_{i}", "name": name,
                       "arguments": json.dumps(args, separators=(",", ":")), "status": "completed"})
    status = "incomplete" if d.finish == "length" else "completed"
    rid = f"resp_{uuid.uuid4().hex}"
    final = _response(body, model, output, status, _usage(d), rid)
    if not body.get("stream"):
        return json_response(200, final)
    seq = 0
    chunks = []

    def emit(kind: str, **fields):
        nonlocal seq
        event = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        chunks.append(f"event: {kind}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode())

    start = _response(body, model, [], "in_progress", None, rid)
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for index, item in enumerate(output):
        if item["type"] == "message":
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            emit("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part)
            for piece in d.text_pieces():
                emit("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                     delta=piece, logprobs=[])
            emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                 text=d.text, logprobs=[])
            emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                 part=item["content"][0])
        else:
            emit("response.output_item.added", output_index=index,
                 item={**item, "arguments": "", "status": "in_progress"})
            for piece in d.arg_pieces(json.loads(item["arguments"])):
                emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                 arguments=item["arguments"])
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.incomplete" if status == "incomplete" else "response.completed", response=final)
    return NativeResponse(200, {"content-type": "text/event-stream"}, chunks=chunks)
