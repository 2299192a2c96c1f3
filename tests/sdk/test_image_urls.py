"""Image URLs on providers that take image bytes only (Bedrock Converse and InvokeModel, Claude on
Vertex AI, watsonx.ai, OCI GENERIC), driven by the official `openai` SDK: the gateway fetches the
image from a loopback HTTP server only when its config allows loopback and plain http, and the
native mocks (which check each provider's documented image shape) see the bytes; with the
default rules the fetch is refused with the address class named, and a redirect to a cloud
metadata address is refused even when loopback is allowed. The Rust side (tests/image_urls.rs)
covers the other rules (size, time, magic bytes, host lists, redirect limits).
"""

from __future__ import annotations

import base64
import http.server
import threading

import openai
import pytest

from helpers import ALICE_KEY
from provider_table import ROWS, start_gateway

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
FETCHED = [r for r in ROWS if r.fetched_by_gateway]
IDS = [r.name for r in FETCHED]


class _Images(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits += 1
        if self.path == "/pixel.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        elif self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def images():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _client(gw):
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gw.url + "/v1", max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def allowing(native, tmp_path_factory):
    """The test config: loopback and plain http allowed."""
    g = start_gateway(native, tmp_path_factory, "image-urls-allowed",
                      routing="media: {allow_http: true, allow_private_addresses: true}\n")
    c = _client(g)
    yield c
    c.close()
    g.stop()


@pytest.fixture(scope="module")
def default(native, tmp_path_factory):
    """The default rules, with plain http allowed so that the address is what refuses."""
    g = start_gateway(native, tmp_path_factory, "image-urls-default", routing="media: {allow_http: true}\n")
    c = _client(g)
    yield c
    c.close()
    g.stop()


def _ask(client, row, url):
    return client.chat.completions.create(model=row.client_model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": url}}]}])


@pytest.mark.parametrize("row", FETCHED, ids=IDS)
def test_an_image_url_arrives_as_bytes_when_loopback_is_allowed(allowing, images, row):
    before = _Images.hits
    c = _ask(allowing, row, images + "/pixel.png")
    assert c.choices[0].message.content == "Echo: Describe [image]"
    assert _Images.hits == before + 1


@pytest.mark.parametrize("row", FETCHED, ids=IDS)
def test_loopback_is_refused_by_default_with_the_class_named(default, images, row):
    before = _Images.hits
    with pytest.raises(openai.BadRequestError) as e:
        _ask(default, row, images + "/pixel.png")
    assert e.value.body["param"] == "messages[0].content[1].image_url"
    assert "resolves to a loopback address (127.0.0.1), which the gateway does not fetch" in e.value.body["message"]
    assert _Images.hits == before


def test_a_redirect_to_a_metadata_address_is_refused(allowing, images):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(allowing, FETCHED[0], images + "/to-metadata")
    assert e.value.body["param"] == "messages[0].content[1].image_url"
    assert "a cloud metadata address (169.254.169.254)" in e.value.body["message"]
