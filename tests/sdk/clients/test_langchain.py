"""LangChain (`langchain-openai`): ChatOpenAI invoke / stream / batch / structured output and
OpenAIEmbeddings through the gateway."""

from __future__ import annotations

from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from helpers import mock_reply
from mock_upstream import header


class City(BaseModel):
    name: str
    population: int


def chat(base_url, key, model="mock-fast", **kw) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=base_url, api_key=key, max_retries=0, timeout=20, **kw)


def test_invoke_returns_the_mock_reply_and_usage(base_url, key, marker):
    msg = chat(base_url, key).invoke(f"hello {marker}")
    assert msg.content == mock_reply(f"hello {marker}")
    assert msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["model_name"] == "mock-fast"


def test_stream_yields_the_reply_in_pieces(base_url, key, marker):
    chunks = list(chat(base_url, key, stream_usage=True).stream(f"stream {marker}"))
    text = "".join(c.content for c in chunks if isinstance(c.content, str))
    assert text == mock_reply(f"stream {marker}")
    assert sum(1 for c in chunks if c.content) > 1, "expected more than one content chunk"
    assert any(c.usage_metadata for c in chunks), "stream_usage asked for a usage chunk"


def test_batch_answers_each_prompt(base_url, key, marker):
    prompts = [f"one {marker}", f"two {marker}", f"three {marker}"]
    replies = chat(base_url, key).batch(prompts)
    assert [r.content for r in replies] == [mock_reply(p) for p in prompts]


def test_structured_output_with_a_tool_call(base_url, key, upstream, marker):
    llm = chat(base_url, key, model="gpt-4o-mini").with_structured_output(City, method="function_calling")
    city = llm.invoke(f"Paris {marker}")
    assert city == City(name=f"Paris {marker}", population=2)
    sent = upstream.containing(marker)[-1]
    assert b'"tools"' in sent["body"] and header(sent, "authorization").startswith("Bearer sk-upstream-")


def test_structured_output_with_a_json_schema(base_url, key, upstream, marker):
    llm = chat(base_url, key, model="gpt-4o-mini").with_structured_output(City, method="json_schema")
    assert llm.invoke(f"Lyon {marker}") == City(name=f"Lyon {marker}", population=2)
    assert b'"json_schema"' in upstream.containing(marker)[-1]["body"]


def test_embeddings(base_url, key):
    # check_embedding_ctx_length would tokenize with tiktoken, which downloads its tables.
    emb = OpenAIEmbeddings(
        model="mock-embed", base_url=base_url, api_key=key, check_embedding_ctx_length=False, max_retries=0
    )
    vecs = emb.embed_documents(["alpha", "beta"])
    assert len(vecs) == 2 and len(vecs[0]) > 0 and vecs[0] != vecs[1]
    assert emb.embed_query("alpha") == vecs[0], "the mock's vectors are deterministic"


class Answer(BaseModel):
    answer: str


def test_structured_output_from_the_built_in_mock(base_url, key, marker):
    # The demo's mock answers tools and response_format with documents made from the schema.
    for method in ("function_calling", "json_schema"):
        llm = chat(base_url, key).with_structured_output(City, method=method)
        assert llm.invoke(f"Paris {marker}") == City(name="mock", population=0), method
    # json_mode: the mock's JSON object is {"answer": <the echo>}.
    llm = chat(base_url, key).with_structured_output(Answer, method="json_mode")
    assert llm.invoke(f"Lyon {marker}") == Answer(answer=mock_reply(f"Lyon {marker}"))
