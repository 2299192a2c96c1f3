"""AWS event stream encoding (application/vnd.amazon.eventstream) for the native Bedrock mocks.

Message = total_len u32 | headers_len u32 | prelude CRC32 | headers | payload | message CRC32,
big-endian; Bedrock uses string headers only (type 7). See shared PROTOCOLS.md 3.4.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    h = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(h) + len(payload), len(h))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    msg = prelude + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg) & 0xFFFFFFFF)


def event(event_type: str, payload: dict) -> bytes:
    """A modeled event (ConverseStream member, or `chunk`)."""
    return frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def chunk(inner: dict) -> bytes:
    """An InvokeModelWithResponseStream `chunk` event wrapping one model-native JSON event."""
    raw = json.dumps(inner, separators=(",", ":")).encode()
    return event("chunk", {"bytes": base64.b64encode(raw).decode()})


def exception(exception_type: str, message: str) -> bytes:
    """A modeled exception frame, e.g. exception("throttlingException", "Too many requests")."""
    return frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )
