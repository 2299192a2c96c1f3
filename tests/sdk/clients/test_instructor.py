"""instructor: typed answers through tool calls (its default mode) and JSON schema."""

from __future__ import annotations

import instructor
import openai
import pytest
from pydantic import BaseModel

from helpers import ALICE_KEY


class User(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_response_model(gateway, upstream, marker, mode):
    raw = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=20)
    client = instructor.from_openai(raw, mode=mode)
    user = client.chat.completions.create(
        model="gpt-4o-mini", response_model=User, max_retries=0,
        messages=[{"role": "user", "content": f"Jason {marker}"}],
    )
    assert user.model_dump() == {"name": f"Jason {marker}", "age": 2}
    assert len(upstream.containing(marker)) == 1


def test_partial_streaming(gateway, marker):
    raw = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=20)
    client = instructor.from_openai(raw, mode=instructor.Mode.TOOLS)
    parts = list(
        client.chat.completions.create_partial(
            model="gpt-4o-mini", response_model=User, max_retries=0,
            messages=[{"role": "user", "content": f"Ada {marker}"}],
        )
    )
    assert len(parts) > 1
    assert parts[-1].name == f"Ada {marker}" and parts[-1].age == 2


class Answer(BaseModel):
    answer: str


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_response_model_from_the_built_in_mock(gateway, marker, mode):
    raw = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=20)
    client = instructor.from_openai(raw, mode=mode)
    user = client.chat.completions.create(
        model="mock-fast", response_model=User, max_retries=0,
        messages=[{"role": "user", "content": f"Jason {marker}"}],
    )
    assert user.model_dump() == {"name": "mock", "age": 0}


def test_json_mode_from_the_built_in_mock(gateway, marker):
    # Mode.JSON asks for a json_object; the mock's is {"answer": <the echo>}.
    raw = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=20)
    client = instructor.from_openai(raw, mode=instructor.Mode.JSON)
    a = client.chat.completions.create(
        model="mock-fast", response_model=Answer, max_retries=0,
        messages=[{"role": "user", "content": f"Jason {marker}"}],
    )
    assert a.answer.startswith("This is a mock response from Switchyard. You said:")
