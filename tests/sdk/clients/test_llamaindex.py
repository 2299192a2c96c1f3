"""LlamaIndex (`llama-index-llms-openai-like`): OpenAILike complete / chat / stream through the
gateway."""

from __future__ import annotations

from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from helpers import mock_reply


def llm(base_url, key) -> OpenAILike:
    return OpenAILike(
        model="mock-fast", api_base=base_url, api_key=key, is_chat_model=True, max_retries=0, timeout=20,
        context_window=8192,
    )


def test_complete(base_url, key, marker):
    assert llm(base_url, key).complete(f"hi {marker}").text == mock_reply(f"hi {marker}")


def test_chat_and_stream_chat(base_url, key, marker):
    m = llm(base_url, key)
    r = m.chat([ChatMessage(role="user", content=f"chat {marker}")])
    assert r.message.content == mock_reply(f"chat {marker}")
    pieces = list(m.stream_chat([ChatMessage(role="user", content=f"stream {marker}")]))
    assert len(pieces) > 1
    assert pieces[-1].message.content == mock_reply(f"stream {marker}")


async def _astream(m, text):
    out = []
    async for p in await m.astream_complete(text):
        out.append(p.delta or "")
    return "".join(out)


def test_async_stream_complete(base_url, key, marker):
    import asyncio

    assert asyncio.run(_astream(llm(base_url, key), f"async {marker}")) == mock_reply(f"async {marker}")
