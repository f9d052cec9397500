"""Legacy completions (`client.completions.create`) through the router to every
hosted provider kind, against the mock playing each one.

Anthropic, Gemini and Bedrock backends get the request as chat, translated
on to their own wire; the answer (whole or streamed) comes back as a text
completion; so do Vertex AI's (both publishers). Azure OpenAI takes
completions as they are, at its deployment.
A field chat cannot carry is a 400 in OpenAI's envelope; a provider's
overload moves the request to a backend of another kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, BACKEND_SECRET_ENV
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai, root, served
from tests.system.providers.test_anthropic import claude_config
from tests.system.providers.test_azure_openai import azure_config
from tests.system.providers.test_bedrock import CONVERSE, aws_env, bedrock_config
from tests.system.providers.test_gemini import GENERATE, STREAM, gemini_config
from tests.system.providers.test_vertex import CLAUDE, GEMINI, service_account, vertex_config

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
MESSAGES = "/v1/messages"
# model -> (backend, the mock path a whole answer is asked at)
PROVIDERS = {
    "claude": ("anthropic", MESSAGES),
    "gemini-flash": ("gemini", GENERATE),
    "sonnet": ("bedrock", CONVERSE),
}


def completions_config(config_data: dict[str, Any], mocks: Mocks) -> dict[str, Any]:
    data = bedrock_config(gemini_config(claude_config(config_data, mocks), mocks), mocks)
    data = azure_config(data, mocks, api_key_env=BACKEND_SECRET_ENV)
    # A second Gemini backend, on the other mock, so that one mock's overload
    # leaves it serving: Anthropic first, Gemini when Anthropic cannot serve.
    data["backends"]["gemini-a"] = {
        **data["backends"]["gemini"],
        "base_url": root(mocks[0]) + "/v1beta",
    }
    data["models"]["claude-or-gemini"] = {"backends": [
        {"backend": "anthropic", "model": "mock-gpt"},
        {"backend": "gemini-a", "model": "mock-gpt", "tier": 1},
    ]}  # fmt: skip
    return data


@pytest.fixture
def router(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> RouterProcess:
    return start_router(completions_config(config_data, mocks), env=aws_env(tmp_path))


@pytest.mark.parametrize("model", list(PROVIDERS))
def test_a_completion_is_translated_for_the_provider_and_back(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, model: str
) -> None:
    backend, path = PROVIDERS[model]
    with oai(router) as client:
        reply = client.completions.create(model=model, prompt="say hi", max_tokens=4, stop="END")
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    assert reply.model == model
    (choice,) = reply.choices
    assert (choice.text, choice.finish_reason, choice.index) == ("mock token alpha beta", "stop", 0)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    assert served(mocks[1], path) == 1
    assert served(mocks[1], "/v1/completions") == 0
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["operation"], record["backend"], record["outcome"]) == (
        "completion", backend, "success"
    )  # fmt: skip
    assert (record["usage"]["completion_tokens"], record["usage"]["estimated"]) == (4, False)
    assert BACKEND_SECRET not in json.dumps(record)


def test_without_max_tokens_the_completions_default_of_16_is_sent(
    router: RouterProcess, mocks: Mocks
) -> None:
    with oai(router) as client:
        reply = client.completions.create(model="claude", prompt="go on")
    assert reply.usage is not None
    # The mock answers as many words as it is allowed tokens.
    assert reply.usage.completion_tokens == 16
    assert len(reply.choices[0].text.split()) == 16


def test_the_platform_contract_takes_a_completion_through_a_provider(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    body = {
        "request_id": "0b6a1f0e-3c4d-4e5f-8a9b-1c2d3e4f5a6b",
        "model": "gemini-flash",
        "operation": "completion",
        "payload": {"prompt": "hi", "max_tokens": 2},
    }
    reply = httpx.post(
        router.url + "/v1/inference", json=body,
        headers={"authorization": f"Bearer {ACME_KEY}"}, timeout=30,
    )  # fmt: skip
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["backend"] == "gemini"
    assert answer["output"]["object"] == "text_completion"
    assert answer["output"]["choices"][0]["text"] == "mock token"
    assert answer["usage"]["completion_tokens"] == 2
    assert served(mocks[1], GENERATE) == 1
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert (record["client_request_id"], record["operation"]) == (body["request_id"], "completion")


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("model", ["claude", "gemini-flash", "sonnet"])
def test_a_streamed_completion_comes_back_chunk_by_chunk(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, model: str, include_usage: bool
) -> None:
    with oai(router) as client:
        chunks = list(
            client.completions.create(
                model=model,
                prompt="say hi",
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
        )
    texted = [c for c in chunks if c.choices]
    assert all(c.object == "text_completion" and c.model == model for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in texted) == "mock token alpha beta gamma"
    assert len(texted) > 1  # chunk by chunk, not gathered into one
    assert [c.choices[0].finish_reason for c in texted][-1] == "stop"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == (1 if include_usage else 0)
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert (record["operation"], record["outcome"]) == ("completion", "success")
    assert (record["usage"]["completion_tokens"], record["usage"]["estimated"]) == (5, False)


def test_azure_takes_completions_natively_at_its_deployment(
    router: RouterProcess, mocks: Mocks
) -> None:
    with oai(router) as client:
        reply = client.completions.create(model="gpt-4o", prompt="say hi", max_tokens=3)
        streamed = list(
            client.completions.create(model="gpt-4o", prompt="say hi", max_tokens=3, stream=True)
        )
    assert (reply.object, reply.model, reply.choices[0].text) == (
        "text_completion", "gpt-4o", "mock token alpha"
    )  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "mock token alpha"
    assert served(mocks[1], "/openai/deployments/gpt4o-prod/completions") == 2


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "the end"}, "suffix"),
        ({"n": 2}, "n"),  # chat has it; the provider's codec refuses it
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_what_cannot_be_translated_is_a_400_in_openais_envelope(
    router: RouterProcess, mocks: Mocks, extra: dict[str, Any], param: str, stream: bool
) -> None:
    asked: dict[str, Any] = {"model": "gemini-flash", "prompt": "hi", "max_tokens": 2, **extra}
    with oai(router) as client, pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**asked, stream=stream)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["code"], body["param"], body["type"]) == (
        "unsupported_feature", param, "invalid_request_error"
    )  # fmt: skip
    assert param in body["message"]
    assert "Traceback" not in caught.value.response.text
    assert served(mocks[1], GENERATE) + served(mocks[1], STREAM) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_overloaded_provider_fails_over_to_another_kind(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, stream: bool
) -> None:
    """Anthropic's 529 before the first byte: the completion is served by the
    Gemini backend instead, and the usage record names it."""
    mock_a, mock_b = mocks
    mock_b.configure(error_rate=1.0, error_status=529)
    with oai(router) as client:
        if stream:
            chunks = list(
                client.completions.create(
                    model="claude-or-gemini", prompt="hi", max_tokens=3, stream=True
                )
            )
            text = "".join(c.choices[0].text for c in chunks if c.choices)
        else:
            reply = client.completions.create(model="claude-or-gemini", prompt="hi", max_tokens=3)
            assert reply.object == "text_completion"
            text = reply.choices[0].text
    assert text == "mock token alpha"
    gemini_path = STREAM if stream else GENERATE
    assert (served(mock_b, MESSAGES), served(mock_a, gemini_path)) == (1, 1)
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert (record["operation"], record["backend"], record["outcome"]) == (
        "completion", "gemini-a", "success"
    )  # fmt: skip
    assert record["usage"]["completion_tokens"] == 3


@pytest.fixture
def vertex_router(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> RouterProcess:
    key, public = service_account(tmp_path, root(mocks[1]) + "/token")
    mocks[1].configure(google_public_key=public)
    return start_router(vertex_config(config_data, mocks, key))


@pytest.mark.parametrize(("model", "path"), [("flash", GEMINI), ("sonnet", CLAUDE)])
def test_vertex_takes_completions_for_either_publisher(
    vertex_router: RouterProcess, mocks: Mocks, model: str, path: str
) -> None:
    gemini = model == "flash"
    with oai(vertex_router) as client:
        reply = client.completions.create(model=model, prompt="hi", max_tokens=3)
        chunks = list(
            client.completions.create(model=model, prompt="hi", max_tokens=2, stream=True)
        )
    assert (reply.object, reply.model, reply.choices[0].text) == (
        "text_completion", model, "mock token alpha"
    )  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "mock token"
    whole, streamed = (
        (":generateContent", ":streamGenerateContent") if gemini
        else (":rawPredict", ":streamRawPredict")
    )  # fmt: skip
    assert (served(mocks[1], path + whole), served(mocks[1], path + streamed)) == (1, 1)
