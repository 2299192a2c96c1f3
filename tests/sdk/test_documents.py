"""Documents (PDF) on every provider row (issue 15 item 5): the `openai` SDK sends a small PDF
as a `file` content part, the `anthropic` SDK as a `document` block through /v1/messages.

Each native mock checks its provider's documented document shape (OpenAI `file` part with
`file_data` and `filename`; Anthropic base64 `document` block; Converse `document` block with a
restricted `name` and a text block beside it; Gemini `inlineData` with `application/pdf`) and
answers with the decoded byte length (`common.decide`: " [document: <n> bytes]"), so the test
sees the bytes arrived intact. watsonx.ai and OCI document no document input: a clear 400
naming the part.
"""

from __future__ import annotations

import base64

import anthropic
import openai
import pytest

from helpers import ALICE_KEY
from provider_table import NativeServer, ROWS, ids, start_gateway

# A minimal one-page PDF (no content stream needed for the mocks; real bytes all the same).
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
       b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
       b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF\n")
PDF_B64 = base64.b64encode(PDF).decode()
ARRIVED = f"Echo: Summarize this [document: {len(PDF)} bytes]"

NO_DOCUMENTS = {"watsonx", "oci", "oci-cohere"}
DOC_ROWS = [r for r in ROWS if r.name not in NO_DOCUMENTS]
REFUSING_ROWS = [r for r in ROWS if r.name in NO_DOCUMENTS]
CLAUDE = {"anthropic", "bedrock-invoke", "vertex-claude"}  # Claude bodies for OpenAI clients
# Rows a Messages client reaches with its own body (Claude hosts, Converse's Claude too).
MESSAGES_NATIVE = CLAUDE | {"bedrock"}


@pytest.fixture(scope="module")
def gw(native, tmp_path_factory):
    g = start_gateway(native, tmp_path_factory, "documents")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def oai(gw):
    c = openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)
    yield c
    c.close()


@pytest.fixture(scope="module")
def claude(gw):
    c = anthropic.Anthropic(api_key=ALICE_KEY, base_url=gw.url, max_retries=0, timeout=20)
    yield c
    c.close()


def file_part(**file) -> dict:
    return {"type": "file", "file": file}


def pdf_message(filename: str | None = "Q3 report (final).pdf") -> dict:
    f = {"file_data": "data:application/pdf;base64," + PDF_B64}
    if filename:
        f["filename"] = filename
    return {"role": "user", "content": [{"type": "text", "text": "Summarize this"}, file_part(**f)]}


def document_message(**extra) -> dict:
    return {"role": "user", "content": [
        {"type": "text", "text": "Summarize this"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}, **extra}]}


def recorded(native: NativeServer, row) -> dict:
    req, _ = native.last(row.prefix)
    return req.json()


# ------------------------------------------------------------------------------- openai SDK


@pytest.mark.parametrize("row", DOC_ROWS, ids=ids(DOC_ROWS))
def test_openai_file_part_arrives(oai, native, row):
    c = oai.chat.completions.create(model=row.client_model, messages=[pdf_message()])
    assert c.choices[0].message.content == ARRIVED
    body = recorded(native, row)
    if row.prefix == "bedrock" and row.name != "bedrock-invoke":
        # Converse: the name sanitized to its character set ('.' is not allowed).
        doc = body["messages"][0]["content"][1]["document"]
        assert (doc["format"], doc["name"]) == ("pdf", "Q3 report (final)-pdf"), doc
    elif row.name in CLAUDE:
        doc = body["messages"][0]["content"][1]
        assert doc["type"] == "document" and doc["title"] == "Q3 report (final).pdf", doc
    elif row.name == "vertex-gemini":
        assert body["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "application/pdf"


@pytest.mark.parametrize("row", DOC_ROWS, ids=ids(DOC_ROWS))
def test_openai_file_part_streams(oai, row):
    # Without a filename off OpenAI (the mock, like OpenAI, wants one beside file_data).
    name = "q3.pdf" if row.provider in ("openai", "azure") else None
    stream = oai.chat.completions.create(model=row.client_model, messages=[pdf_message(name)], stream=True)
    text = "".join(ch.delta.content or "" for chunk in stream for ch in chunk.choices)
    assert text == ARRIVED


@pytest.mark.parametrize("row", REFUSING_ROWS, ids=ids(REFUSING_ROWS))
def test_openai_file_part_where_unsupported_is_a_clear_400(oai, row):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=row.client_model, messages=[pdf_message()])
    assert e.value.body["param"] == "messages[0].content[1]", e.value.body
    assert "file" in e.value.body["message"]


@pytest.mark.parametrize("row", [r for r in DOC_ROWS if r.provider not in ("openai", "azure")],
                         ids=ids([r for r in DOC_ROWS if r.provider not in ("openai", "azure")]))
def test_openai_file_id_is_refused_by_name(oai, row):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Summarize this"}, file_part(file_id="file-abc123")]}])
    assert e.value.body["param"] == "messages[0].content[1].file.file_id", e.value.body


def test_converse_document_without_text_is_a_clear_400(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="conf-bedrock-llama", messages=[{"role": "user", "content": [
            file_part(file_data="data:application/pdf;base64," + PDF_B64, filename="a.pdf")]}])
    assert e.value.body["param"] == "messages[0].content[0]", e.value.body


# ---------------------------------------------------------------------------- anthropic SDK


@pytest.mark.parametrize("row", DOC_ROWS, ids=ids(DOC_ROWS))
def test_messages_document_block_arrives(claude, native, row):
    m = claude.messages.create(model=row.client_model, max_tokens=256,
                               messages=[document_message(title="Q3 report")])
    assert m.content[0].text == ARRIVED
    body = recorded(native, row)
    if row.provider in ("openai", "azure"):
        part = body["messages"][0]["content"][1]
        assert part == {"type": "file", "file": {"file_data": "data:application/pdf;base64," + PDF_B64,
                                                 "filename": "Q3 report"}}, part


@pytest.mark.parametrize("row", DOC_ROWS, ids=ids(DOC_ROWS))
def test_messages_document_block_streams(claude, row):
    with claude.messages.stream(model=row.client_model, max_tokens=256, messages=[document_message()]) as s:
        final = s.get_final_message()
    assert final.content[0].text == ARRIVED


@pytest.mark.parametrize("row", [r for r in DOC_ROWS if r.name not in MESSAGES_NATIVE],
                         ids=ids([r for r in DOC_ROWS if r.name not in MESSAGES_NATIVE]))
def test_messages_text_document_arrives_as_text(claude, row):
    m = claude.messages.create(model=row.client_model, max_tokens=256, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Quarterly numbers"}}]}])
    assert m.content[0].text == "Echo: Quarterly numbers"


@pytest.mark.parametrize("row", REFUSING_ROWS + [r for r in DOC_ROWS if r.name not in MESSAGES_NATIVE],
                         ids=ids(REFUSING_ROWS + [r for r in DOC_ROWS if r.name not in MESSAGES_NATIVE]))
def test_messages_document_where_unsupported_is_a_clear_400(claude, row):
    if row.name in NO_DOCUMENTS:
        message = document_message()
        where = "messages[0].content[1]"
    else:
        # A URL source would need the gateway to fetch it: refused on non-Claude hosts.
        message = {"role": "user", "content": [{"type": "text", "text": "Summarize this"}, {
            "type": "document", "source": {"type": "url", "url": "https://example.com/q3.pdf"}}]}
        where = "messages[0].content[1]"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=row.client_model, max_tokens=256, messages=[message])
    assert e.value.status_code == 400
    err = e.value.body["error"]
    assert err["type"] == "invalid_request_error", err
    assert where in err["message"], err
