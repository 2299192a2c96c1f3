"""The client libraries people use, against the gateway started by ../conftest.py.

These run in their own venv (target/sdk-clients-venv from requirements.txt here; tests/run.sh
makes it and runs this directory separately): llama-index-llms-openai needs openai<3 while the
main suite pins openai 3.x. Chat, streams and embeddings go to the built-in mock provider
(`mock-*` models); tools and structured output go to the built-in mock too (the
`*_built_in_mock` tests) and to the suite's OpenAI-shaped mock upstream
(tests/sdk/mock_upstream.py) behind the `openai` provider (`gpt-*` models).

Nothing here may reach the network: the libraries' own phone-home features are turned off.
"""

from __future__ import annotations

import os

# litellm fetches a model price map from the internet at import; tracing in the Agents SDK
# and LangSmith would post to their hosted services.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
# Clients that fall back to the environment must never find a real key.
for _var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402

from helpers import ALICE_KEY  # noqa: E402


@pytest.fixture
def base_url(gateway) -> str:
    return gateway.url + "/v1"


@pytest.fixture
def key() -> str:
    return ALICE_KEY
