#!/usr/bin/env python3
"""Soak bench helpers for benches/soak.sh (standard library only, asyncio, raw HTTP/1.1).

  mock PORT             an OpenAI-dialect upstream on 127.0.0.1:PORT. The request's model
                        picks the answer: gpt-json (a chat.completion), gpt-stream (a short SSE
                        stream), gpt-slow (an SSE stream of one event a second for SLOW_S s),
                        gpt-fault-<kind> (reset, reset-mid-stream, truncated, invalid-json,
                        silent, trickle).
  load BASE SECONDS CONC PID METRICS_URL
                        mixed traffic (stream and non-stream, ~5 % faults) from CONC keep-alive
                        connections for SECONDS; samples the gateway's RSS and open fds every
                        2 s; prints JSON figures (sent / answered / accounted, req/s, p50/p99).
  idle BASE N PID       memory per idle keep-alive connection: N connections, one request each,
                        kept open; prints JSON (RSS before / with N open, delta per connection).
  streams BASE N PID    memory per open stream: N concurrent gpt-slow streams; prints JSON.
"""

import asyncio
import json
import os
import random
import socket
import struct
import sys
import time

KEY = "sk-soak-gateway-key-0001"
SLOW_S = float(os.environ.get("SLOW_S", "20"))
# The idle phase's one request per connection: the built-in mock provider by default; gpt-json
# (answered by the mock upstream) for a target without one, such as the bare Pingora proxy.
IDLE_MODEL = os.environ.get("IDLE_MODEL", "mock-soak")


# ---------------------------------------------------------------- mock upstream

def chat_completion(model):
    return json.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion", "created": 1717000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the soak mock."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}}).encode()


def sse_event(model, delta=None, finish=None, usage=None):
    chunk = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1717000000,
             "model": model, "choices": [] if usage else
             [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunked(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
# Fault answers never leave a reusable connection behind (the mock closes after them).
FAULT_SSE_HEAD = SSE_HEAD.replace(b"chunked\r\n", b"chunked\r\nconnection: close\r\n")


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    body = await reader.readexactly(length) if length else b""
    return body


async def mock_conn(reader, writer):
    sock = writer.get_extra_info("socket")
    try:
        while True:
            try:
                body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            try:
                model = json.loads(body).get("model", "")
            except ValueError:
                model = ""
            if model == "gpt-json":
                b = chat_completion(model)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(b) + b)
            elif model in ("gpt-stream", "gpt-slow"):
                writer.write(SSE_HEAD)
                writer.write(chunked(sse_event(model, {"role": "assistant", "content": ""})))
                n = int(SLOW_S) if model == "gpt-slow" else 4
                for i in range(n):
                    if model == "gpt-slow":
                        await writer.drain()
                        await asyncio.sleep(1)
                    writer.write(chunked(sse_event(model, {"content": "word%d " % i})))
                writer.write(chunked(sse_event(model, {}, "stop")))
                writer.write(chunked(sse_event(model, usage={
                    "prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n})))
                writer.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            elif model.startswith("gpt-fault-"):
                await fault(model[len("gpt-fault-"):], writer, sock)
                return
            else:
                b = b'{"error":{"message":"unknown model","type":"invalid_request_error"}}'
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(b) + b)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def reader_gone(writer):
    return writer.transport.get_extra_info("socket") is None


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def fault(kind, writer, sock):
    m = "gpt-fault-" + kind
    if kind == "reset":
        reset(sock)
    elif kind == "reset-mid-stream":
        writer.write(FAULT_SSE_HEAD + chunked(sse_event(m, {"role": "assistant", "content": "x"})))
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(sock)
    elif kind == "truncated":
        b = chat_completion(m)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n" % len(b) + b[:30])
        await writer.drain()
    elif kind == "invalid-json":
        b = b'{"id": "chatcmpl-1", "choices": [ not json'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n" % len(b) + b)
        await writer.drain()
    elif kind == "silent":
        writer.write(FAULT_SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(30)
    elif kind == "trickle":
        writer.write(FAULT_SSE_HEAD)
        for byte in chunked(sse_event(m, {"content": "slow"})) * 10:
            if writer.is_closing() or reader_gone(writer):
                return
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)


async def mock(port):
    server = await asyncio.start_server(mock_conn, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- client side

def request(model, stream):
    body = json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": "Say hello."}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer " +
            KEY.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(body) + body)


async def read_response(reader):
    """(status, body, keep_alive); raises on a cut connection or an incomplete body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, bytes(body), headers.get(b"connection") != b"close"


def clean(status, body, stream):
    """A complete answer or a clean error: what 'answered' counts."""
    if status == 200 and stream:
        return body.endswith(b"data: [DONE]\n\n") or (
            b'data: {"error"' in body and body.endswith(b"\n\n"))
    if status == 200:
        return json.loads(body).get("object") == "chat.completion"
    return "error" in json.loads(body)


MIX = ([("gpt-json", False)] * 47 + [("gpt-stream", True)] * 38 + [("mock-soak", False)] * 5 +
       [("mock-soak", True)] * 5 +
       [("gpt-fault-reset", False), ("gpt-fault-reset-mid-stream", True),
        ("gpt-fault-truncated", False), ("gpt-fault-invalid-json", False),
        ("gpt-fault-silent", True), ("gpt-fault-trickle", True)])


def proc_figures(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


async def sampler(pid, samples, stop):
    while not stop.is_set():
        samples.append((time.monotonic(),) + proc_figures(pid))
        try:
            await asyncio.wait_for(stop.wait(), 2)
        except asyncio.TimeoutError:
            pass


async def requests_total(metrics_url):
    host, port = metrics_url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
    status, body, _ = await read_response(reader)
    writer.close()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("ai_proxy_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def load(base, seconds, conc, pid, metrics_url):
    host, port = base.split("//")[1].split(":")
    port = int(port)
    stats = {"sent": 0, "answered": 0, "unclean": 0, "by_status": {}, "faults": 0}
    lat, fault_lat = [], []
    deadline = time.monotonic() + seconds
    rng = random.Random(42)

    async def worker():
        conn = None
        while time.monotonic() < deadline:
            model, stream = rng.choice(MIX)
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            t = time.monotonic()
            stats["sent"] += 1
            if model.startswith("gpt-fault"):
                stats["faults"] += 1
            try:
                writer.write(request(model, stream))
                status, body, keep = await read_response(reader)
                ok = clean(status, body, stream)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
                ok, keep, status = False, False, -1
            if ok:
                stats["answered"] += 1
                if model.startswith("gpt-fault"):
                    fault_lat.append(time.monotonic() - t)
                else:
                    lat.append(time.monotonic() - t)
            else:
                stats["unclean"] += 1
            stats["by_status"][status] = stats["by_status"].get(status, 0) + 1
            if not keep:
                writer.close()
                conn = None
        if conn:
            conn[1].close()

    before = await requests_total(metrics_url)
    samples, stop = [], asyncio.Event()
    samp = asyncio.create_task(sampler(pid, samples, stop))
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(3)  # let the last requests' logging phase run, and sockets settle
    stop.set()
    await samp
    end_rss, end_fds = proc_figures(pid)
    accounted = await requests_total(metrics_url) - before
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    print(json.dumps({
        "seconds": round(elapsed, 1), "concurrency": conc, **stats,
        "accounted": accounted, "req_per_s": round(stats["sent"] / elapsed, 1),
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
        "fault_max_ms": round(max(fault_lat) * 1000, 1) if fault_lat else None,
        "rss_kb": {"start": samples[0][1], "peak": max(s[1] for s in samples), "end": end_rss},
        "fds": {"start": samples[0][2], "peak": max(s[2] for s in samples), "end": end_fds},
    }))


async def settle(pid, secs=2.0):
    await asyncio.sleep(secs)
    return proc_figures(pid)


async def idle(base, n, pid):
    host, port = base.split("//")[1].split(":")
    rss0, fds0 = await settle(pid)
    conns = []
    for i in range(n):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request(IDLE_MODEL, False))
        status, _, _ = await read_response(reader)
        assert status == 200, status
        conns.append(writer)
    rss1, fds1 = await settle(pid)
    for w in conns:
        w.close()
    rss2, fds2 = await settle(pid, 3)
    print(json.dumps({"n": n, "rss_kb_before": rss0, "rss_kb_open": rss1, "rss_kb_after_close": rss2,
                      "fds_before": fds0, "fds_open": fds1, "fds_after_close": fds2,
                      "bytes_per_conn": round((rss1 - rss0) * 1024 / n)}))


async def streams(base, n, pid):
    host, port = base.split("//")[1].split(":")
    rss0, fds0 = await settle(pid)
    conns = []
    for i in range(n):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request("gpt-slow", True))
        await reader.readuntil(b"\r\n\r\n")
        conns.append((reader, writer))
    # Every stream open (headers received) and running: measure mid-way.
    rss1, fds1 = await settle(pid, 3)
    peak = rss1
    ended = 0
    async def drain(reader):
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return

    for reader, writer in conns:
        try:
            await asyncio.wait_for(drain(reader), SLOW_S + 30)
            ended += 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        writer.close()
    rss2, fds2 = await settle(pid, 3)
    print(json.dumps({"n": n, "completed": ended, "rss_kb_before": rss0, "rss_kb_open": peak,
                      "rss_kb_after": rss2, "fds_before": fds0, "fds_open": fds1,
                      "fds_after": fds2, "bytes_per_stream": round((peak - rss0) * 1024 / n)}))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mock":
        asyncio.run(mock(int(args[0])))
    elif cmd == "load":
        asyncio.run(load(args[0], float(args[1]), int(args[2]), int(args[3]), args[4]))
    elif cmd == "idle":
        asyncio.run(idle(args[0], int(args[1]), int(args[2])))
    elif cmd == "streams":
        asyncio.run(streams(args[0], int(args[1]), int(args[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
