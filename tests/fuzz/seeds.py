#!/usr/bin/env python3
"""Writes the structure-aware seed corpora of the fuzz targets into DIR/<target>/.

Seeds for answers, requests, config, the SSE and event stream decoders come from the shapes
in the providers' unit tests, PROTOCOLS.md and conf/*.yaml; the stream targets additionally
get every stream the filters' unit tests translate (run.sh dumps those with
SWITCHYARD_FUZZ_SEEDS). Usage: seeds.py DIR REPO_ROOT
"""
import glob
import hashlib
import json
import os
import struct
import sys
import zlib

out, root = sys.argv[1], sys.argv[2]


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()[:12]), "wb") as f:
        f.write(data)


def es_message(headers, payload):
    """One AWS event stream message (string headers)."""
    h = b""
    for name, value in headers:
        v = value.encode()
        h += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(v)) + v
    total = 16 + len(h) + len(payload)
    prelude = struct.pack(">II", total, len(h))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def es_event(kind, payload):
    return es_message(
        [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
        payload.encode(),
    )


def sse(*events):
    return "".join(
        (f"event: {name}\n" if name else "") + f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"
        for name, data in events
    ).encode()


# --- SSE and event stream decoders -------------------------------------------------------
put("sse_decoder", b"\x00\x02\x05\x09data: a\n\ndata: b\r\n\r\n: keep\n\nevent: x\ndata: c\r\r")
put("sse_decoder", b"\x00\x03\x01\x01\x01data: {\"x\":\"\xc3\xa9\"}\n\ndata: [DONE]\n\n")
converse = (
    es_event("messageStart", '{"role":"assistant"}')
    + es_event("contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":"Hi"}}')
    + es_event("contentBlockStop", '{"contentBlockIndex":0}')
    + es_event("messageStop", '{"stopReason":"end_turn"}')
    + es_event("metadata", '{"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":1}}')
)
put("eventstream_decoder", b"\x00\x02\x07\x30" + converse)
put("eventstream_decoder", b"\x00\x00" + es_message(
    [(":exception-type", "throttlingException"), (":content-type", "application/json"), (":message-type", "exception")],
    b'{"message":"Too many requests"}'))
put("stream_bedrock_converse", b"\x02\x01\x40" + converse)
put("stream_bedrock_converse", b"\x82\x00" + converse)  # bit 7: the harness repairs CRCs
put("eventstream_decoder", b"\x80\x01\x10" + converse)

# --- stream translators: one hand-made seed per dialect (the unit tests add many more) ----
anth = sse(
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hé"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
)
put("stream_anthropic", b"\x02\x02\x10\x33" + anth)
put("stream_vertex_anthropic", b"\x03\x00" + anth)
bedrock_anth = b"".join(
    es_event("chunk", json.dumps({"bytes": __import__("base64").b64encode(line.encode()).decode()}))
    for line in [json.dumps(e) for e in [
        {"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 5, "outputTokenCount": 2}},
    ]]
)
put("stream_bedrock_anthropic", b"\x02\x01\x20" + bedrock_anth)
put("stream_bedrock_anthropic", b"\x83\x00" + bedrock_anth)
gem = sse(
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "modelVersion": "gemini-2.0", "responseId": "r1"}),
    (None, {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}}),
)
put("stream_vertex_gemini", b"\x02\x01\x11" + gem)
wx = sse(
    (None, {"id": "chat-1", "model_id": "ibm/granite", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}),
    (None, {"id": "chat-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
)
put("stream_watsonx", b"\x02\x01\x21" + wx)
oci_g = sse(
    (None, {"index": 0, "message": {"role": "ASSISTANT", "content": [{"type": "TEXT", "text": "Hi"}]}, "pad": "aaaa"}),
    (None, {"message": {"role": "ASSISTANT", "toolCalls": [{"id": "c1", "type": "FUNCTION", "name": "f", "arguments": "{\"a\":1}"}]}, "finishReason": "tool_calls"}),
    (None, {"usage": {"promptTokens": 3, "completionTokens": 2, "totalTokens": 5}}),
)
put("stream_oci_generic", b"\x02\x01\x15" + oci_g)
oci_c = sse(
    (None, {"apiFormat": "COHERE", "text": "Hi"}),
    (None, {"apiFormat": "COHERE", "text": "Hi there", "finishReason": "COMPLETE", "toolCalls": [{"name": "f", "parameters": {"a": 1}}]}),
    (None, {"usage": {"promptTokens": 3, "completionTokens": 2, "totalTokens": 5}}),
)
put("stream_oci_cohere", b"\x02\x00" + oci_c)
oa = sse(
    (None, {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
    (None, "[DONE]"),
)
for flags in (0, 4, 2, 5):
    put("stream_openai", bytes([flags, 1, 0x25]) + oa)
put("stream_openai", b"\x02\x00" + sse((None, {"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}), (None, "[DONE]")))

# --- non-stream answers: dialect index (see fuzzing::DIALECTS), mode, status, flags ---------
D = {n: i for i, n in enumerate(["openai", "azure", "anthropic", "bedrock_converse", "bedrock_anthropic", "bedrock_embed",
                                  "vertex_gemini", "vertex_anthropic", "watsonx", "oci_generic", "oci_cohere"])}


def answer(dialect, mode, body, status=0, flags=0):
    put("answers", bytes([D[dialect], mode, status, flags]) + (body.encode() if isinstance(body, str) else body))


anth_msg = '{"id":"msg_01","type":"message","role":"assistant","model":"claude","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"t","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}'
for d in ("anthropic", "bedrock_anthropic", "vertex_anthropic"):
    answer(d, 0, anth_msg, flags=1)
answer("bedrock_converse", 0, '{"output":{"message":{"role":"assistant","content":[{"text":"Hello"},{"toolUse":{"toolUseId":"t1","name":"f","input":{"a":1}}},{"reasoningContent":{"reasoningText":{"text":"r","signature":"s"}}}]}},"stopReason":"tool_use","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}')
answer("vertex_gemini", 0, '{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"},{"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"responseId":"r"}')
answer("watsonx", 0, '{"id":"chatcmpl-t","choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"completion_tokens":7,"prompt_tokens":30,"total_tokens":37}}')
answer("oci_generic", 0, '{"modelId":"meta.llama","chatResponse":{"apiFormat":"GENERIC","timeCreated":"t","choices":[{"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":"a"}],"toolCalls":[{"id":"c","type":"FUNCTION","name":"f","arguments":"{}"}]},"finishReason":"stop"}],"usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3}}}')
answer("oci_cohere", 0, '{"modelId":"cohere.command-r","chatResponse":{"apiFormat":"COHERE","text":"Hi","finishReason":"COMPLETE","toolCalls":[{"name":"f","parameters":{"a":1}}],"usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3}}}')
answer("bedrock_embed", 1, b'{"embedding":[0.1,-0.2],"inputTextTokenCount":3}\xff{"embedding":[0.3,0.4],"inputTextTokenCount":4}', flags=2)
answer("bedrock_embed", 1, '{"id":"a1b2","texts":["a","b"],"embeddings":{"float":[[0.1],[0.2]]},"response_type":"embeddings_by_type"}')
answer("vertex_gemini", 1, '{"predictions":[{"embeddings":{"values":[0.1,0.2],"statistics":{"token_count":3,"truncated":false}}}]}')
answer("watsonx", 1, '{"model_id":"ibm/slate","results":[{"embedding":[0.5,-1.25]},{"embedding":[1,2]}],"input_token_count":3}')
errors = {
    "anthropic": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    "bedrock_converse": '{"message":"The security token included in the request is invalid."}',
    "bedrock_anthropic": 'ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/\n{"message":"Too many requests"}',
    "vertex_gemini": '{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}',
    "vertex_anthropic": '{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}',
    "watsonx": '{"errors":[{"code":"authentication_token_expired","message":"Failed to authenticate"}],"trace":"t","status_code":401}',
    "oci_generic": '{"code":"NotAuthenticated","message":"The required information to complete authentication was not provided."}',
    "openai": '{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
    "azure": '<html>Bad Gateway</html>',
}
for i, (d, body) in enumerate(errors.items()):
    answer(d, 2, body, status=0x80 | i, flags=4 if d.startswith("bedrock") else 0)

# --- requests: endpoint selector (0 chat, 1 completions, 2 embeddings), then the body ------
chat = [
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
    {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "stop": ["x"], "seed": 1, "n": 1, "user": "u",
     "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
    {"model": "m", "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
     "tool_choice": {"type": "function", "function": {"name": "weather"}},
     "messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]},
    {"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}, "reasoning_effort": "low", "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]},
    {"model": "m", "response_format": {"type": "json_object"}, "tool_choice": "required", "parallel_tool_calls": False, "logprobs": True, "frequency_penalty": 1, "messages": [{"role": "user", "content": "y"}]},
]
for c in chat:
    put("request", b"\x00" + json.dumps(c).encode())
put("request", b"\x01" + json.dumps({"model": "m", "prompt": "Say hi", "echo": False, "max_tokens": 3, "suffix": "s"}).encode())
put("request", b"\x01" + json.dumps({"model": "m", "prompt": ["a", "b"], "stream": True}).encode())
put("request", b"\x02" + json.dumps({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}).encode())
put("request", b"\x02" + json.dumps({"model": "m", "input": "x", "input_type": "search_query"}).encode())

# --- responses: flags (1 echo previous_response_id, 2 splice the items as history), then the body
responses = [
    {"model": "m", "input": "Hi"},
    {"model": "m", "instructions": "Be brief", "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}, {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}],
     "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stream": True, "reasoning": {"effort": "low", "summary": "auto"}, "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}}},
    {"model": "m", "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}], "tool_choice": {"type": "function", "name": "weather"},
     "input": [{"role": "user", "content": "Weather?"}, {"type": "reasoning", "id": "rs_1", "summary": []}, {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
               {"type": "function_call_output", "call_id": "c1", "output": "sunny"}, {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]}]},
    {"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}], "background": True, "previous_response_id": "resp_1", "metadata": {"a": "b"}},
]
for i, r in enumerate(responses):
    put("responses", bytes([i % 4]) + json.dumps(r).encode())

# --- cache_key: request bodies (canonical form) and answers (identity found and refreshed)
put("cache_key", b'{"model":"m","user":"u","messages":[{"role":"user","content":"hi"}],"metadata":{"a":1},"n":1.5}')
put("cache_key", b'{"id": "chatcmpl-1", "created": 1700000000, "choices": [{"message": {"tool_calls": [{"id": "call_1"}]}}]}')
put("cache_key", b'data: {"id":"c-1","created":5}\n\ndata: {"id":"c-1","created":5}\n\ndata: [DONE]\n\n')
put("cache_key", b'event: response.created\ndata: {"response":{"id":"resp_1","created_at":77}}\n\n')

# --- usage: provider answers and stream events (byte 0 primes the meters)
for i, doc in enumerate([
    b'{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":0}}}',
    b'{"choices":[{"delta":{"content":"hi"}}],"usage":null}',
    b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}',
    b'{"type":"message_start","message":{"model":"claude-3","usage":{"input_tokens":25,"output_tokens":1}}}',
    b'{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2},"modelVersion":"gemini-1.5"}',
    b'[{"usageMetadata":{"promptTokenCount":1}}]',
    b'{"output":{},"usage":{"inputTokens":7,"outputTokens":9,"totalTokens":16}}',
    b'{"amazon-bedrock-invocationMetrics":{"inputTokenCount":30,"outputTokenCount":40}}',
    b'{"model_id":"ibm/granite","results":[{"generated_token_count":1,"input_token_count":2}]}',
    b'{"us\\u0061ge":{"prompt_tokens":1},"usage":{"prompt_tokens":1e400}}',
]):
    put("usage", bytes([i % 4]) + doc)

# --- config: the shipped examples plus a small one with every section -----------------------
for path in sorted(glob.glob(os.path.join(root, "conf", "*.yaml"))):
    with open(path, "rb") as f:
        put("config", f.read())
put("config", """server:
  listen: 127.0.0.1:8080
auth:
  keys:
    - name: dev
      key: ${SET_KEY}
providers:
  mock: {type: mock}
model_mappings:
  - model: m
    provider: mock
""")
