"""Azure OpenAI as a backend kind, against the mock's Azure front.

The mock that demands a key (`mock_b`) plays the Azure resource: it answers
`/openai/deployments/DEPLOYMENT/...` only with an `api-version`, and only for
its key, sent as `api-key` or as an Entra ID bearer token; its counters say
which deployment, version and credential each request came with. A real
router process sits in front, and the official SDKs are the clients.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from router_core.config_codec import ConfigInvalid
from router_server.config_file import load
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import (
    ACME_KEY,
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    eventually,
    write_config,
)
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai, root

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
VERSION = "2024-10-21"
TOKEN_ENV = "ROUTER_TEST_ENTRA_TOKEN"
CHAT_PATH = "/openai/deployments/gpt4o-prod/chat/completions"


def azure_config(config_data: dict[str, Any], mocks: Mocks, **credential: Any) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    azure: dict[str, Any] = {"api_version": VERSION, "deployments": {"mock-gpt": "gpt4o-prod"}}
    backend: dict[str, Any] = {
        "base_url": root(mocks[1]),
        "kind": "azure_openai",
        "connect_timeout_s": 1,
        "read_timeout_s": 5,
        "azure": azure,
    }
    if "api_key_env" in credential:
        backend["api_key_env"] = credential["api_key_env"]
    else:
        azure.update(credential)
    data["backends"]["azure"] = backend
    data["models"]["gpt-4o"] = {"backends": [{"backend": "azure", "model": "mock-gpt"}]}
    data["models"]["azure-embed"] = {"backends": [{"backend": "azure", "model": "mock-embed"}]}
    # Azure first, OpenAI-compatible mock-a only when Azure cannot serve.
    data["models"]["failover"] = {"backends": [
        {"backend": "azure", "model": "mock-gpt"},
        {"backend": "mock-a", "model": "mock-gpt", "tier": 1},
    ]}  # fmt: skip
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks) -> RouterProcess:
    return start_router(azure_config(config_data, mocks, api_key_env=BACKEND_SECRET_ENV))


def test_chat_goes_to_the_deployment_with_the_version_and_key(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert reply.choices[0].message.content == "mock token alpha beta"
    assert reply.model == "gpt-4o"
    stats = mocks[1].stats()
    assert stats["by_path"][CHAT_PATH] == 1
    assert stats["deployments_seen"] == {"gpt4o-prod": 1}
    assert (stats["last_api_version"], stats["last_azure_auth"]) == (VERSION, "api-key")
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["backend"], record["outcome"]) == ("azure", "success")
    assert record["usage"]["completion_tokens"] == 4
    assert BACKEND_SECRET not in str(record)


def test_stream_with_azures_filter_chunk_first(router: RouterProcess, mocks: Mocks) -> None:
    """Azure's first chunk has no choices, only content-filter results."""
    with oai(router) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock token alpha beta gamma"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 5
    assert mocks[1].stats()["streams"] == 1


def test_messages_are_translated_for_azure(router: RouterProcess, mocks: Mocks) -> None:
    with anthropic.Anthropic(api_key=ACME_KEY, base_url=router.url, max_retries=0) as claude:
        message = claude.messages.create(
            model="gpt-4o", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
        with claude.messages.stream(
            model="gpt-4o", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            streamed = stream.get_final_message()
    for answer in (message, streamed):
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "mock token alpha"
        assert answer.usage.output_tokens == 3
    assert mocks[1].stats()["deployments_seen"] == {"gpt4o-prod": 2}


def test_embeddings_use_the_model_as_deployment_when_unmapped(
    router: RouterProcess, mocks: Mocks
) -> None:
    with oai(router) as client:
        answer = client.embeddings.create(model="azure-embed", input=["one", "two"])
    assert len(answer.data) == 2
    assert mocks[1].stats()["by_path"]["/openai/deployments/mock-embed/embeddings"] == 1


def test_entra_token_from_the_environment(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    data = azure_config(config_data, mocks, entra_token_env=TOKEN_ENV)
    router = start_router(data, env={TOKEN_ENV: BACKEND_SECRET})
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert mocks[1].stats()["last_azure_auth"] == "bearer"


def test_entra_token_file_is_reread_when_it_changes(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    token = tmp_path / "secrets" / "entra-token"
    token.parent.mkdir()
    token.write_text("an-expired-token\n")
    router = start_router(azure_config(config_data, mocks, entra_token_file=str(token)))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    with httpx.Client(base_url=router.url, headers=headers, timeout=30) as http:
        refused = http.post("/v1/chat/completions", json=body)
        # Azure refused the token (401): the backend's verdict on our credential.
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "backend_error"
        assert "expired-token" not in refused.text
        # A sidecar writes a fresh token: the router picks it up within a second or so.
        token.write_text(BACKEND_SECRET + "\n")
        assert eventually(
            lambda: http.post("/v1/chat/completions", json=body).status_code == 200, timeout=15
        )
    stats = mocks[1].stats()
    assert stats["last_azure_auth"] == "bearer"


def test_a_throttled_deployment_fails_over_and_is_left_alone_for_its_retry_after(
    router: RouterProcess, mocks: Mocks
) -> None:
    mock_a, azure = mocks
    azure.configure(error_rate=1.0, error_status=429, retry_after_s=30)

    def served() -> tuple[int, int]:
        return (
            azure.stats()["by_path"].get(CHAT_PATH, 0),
            mock_a.stats()["by_path"].get("/v1/chat/completions", 0),
        )

    with oai(router) as client:
        first = client.chat.completions.create(
            model="failover", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert first.choices[0].message.content == "mock token"
        assert served() == (1, 1)
        # Within its Retry-After, Azure gets nothing: the next goes straight to mock-a.
        second = client.chat.completions.create(
            model="failover", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert second.choices[0].message.content == "mock token"
    assert served() == (1, 2)
    status = httpx.get(f"{router.url}/v1/status", timeout=10).json()
    health = status["backends"]["azure"]
    assert 0 < health["throttled_for_s"] <= 30
    # A 429 says nothing about the deployment's health: its circuit stays closed.
    assert health["circuit"] == "closed"


def test_the_mock_refuses_as_azure_does(mocks: Mocks) -> None:
    """The contract the router is tested against: Azure's own refusals."""
    azure = mocks[1]
    path = f"{root(azure)}/openai/deployments/gpt4o-prod/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    key = {"api-key": BACKEND_SECRET}
    no_version = httpx.post(path, json=body, headers=key, timeout=10)
    assert no_version.status_code == 404
    assert no_version.json() == {"error": {"code": "404", "message": "Resource not found"}}
    bad_version = httpx.post(path, params={"api-version": "v9"}, json=body, headers=key)
    assert bad_version.status_code == 400
    assert bad_version.json()["error"]["message"] == "API version not supported"
    wrong_key = httpx.post(
        path, params={"api-version": VERSION}, json=body, headers={"api-key": "x"}
    )
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["code"] == "401"
    bearer = {"authorization": f"Bearer {BACKEND_SECRET}"}
    ok = httpx.post(path, params={"api-version": VERSION}, json=body, headers=bearer)
    assert ok.status_code == 200
    assert ok.json()["model"] == "gpt4o-prod"
    unknown = httpx.post(
        f"{root(azure)}/openai/deployments/x/images", params={"api-version": VERSION}, headers=key
    )
    assert unknown.status_code == 404


def test_a_missing_entra_token_is_a_start_up_error(
    config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    missing = azure_config(config_data, mocks, entra_token_file="no-such-token")
    with pytest.raises(ConfigInvalid) as caught:
        load(write_config(tmp_path / "a.yaml", missing), env={})
    paths = {p.path: p.message for p in caught.value.problems}
    assert paths["backends.azure.azure.entra_token_file"].startswith("cannot read")
    unset = azure_config(config_data, mocks, entra_token_env=TOKEN_ENV)
    with pytest.raises(ConfigInvalid) as caught:
        load(write_config(tmp_path / "b.yaml", unset), env={BACKEND_SECRET_ENV: "x"})
    paths = {p.path: p.message for p in caught.value.problems}
    assert paths == {
        "backends.azure.azure.entra_token_env": f"environment variable {TOKEN_ENV} is not set"
    }


RESPONSES_PATH = "/openai/v1/responses"


def responses_config(config_data: dict[str, Any], mocks: Mocks) -> dict[str, Any]:
    """The Azure backend also speaking its v1 Responses API."""
    data = azure_config(config_data, mocks, api_key_env=BACKEND_SECRET_ENV)
    data["backends"]["azure"]["protocols"] = ["openai", "openai_responses"]
    return data


@pytest.mark.parametrize("stream", [False, True])
def test_responses_go_natively_to_azures_v1_api(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path,
    stream: bool,
) -> None:  # fmt: skip
    router = start_router(responses_config(config_data, mocks))
    with oai(router) as client:
        if stream:
            with client.responses.stream(model="gpt-4o", input="hi", max_output_tokens=3) as events:
                streamed = events.get_final_response()
            text, model = streamed.output_text, streamed.model
        else:
            answer = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=3)
            text, model = answer.output_text, answer.model
    assert (text, model) == ("mock token alpha", "gpt-4o")
    stats = mocks[1].stats()
    # The v1 API: one path for every deployment, named by the body's model, and
    # no dated api-version.
    assert stats["by_path"].get(RESPONSES_PATH) == 1
    assert CHAT_PATH not in stats["by_path"]
    assert stats["deployments_seen"] == {"gpt4o-prod": 1}
    assert (stats["last_api_version"], stats["last_azure_auth"]) == ("v1", "api-key")
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["operation"], record["backend"], record["outcome"]) == (
        "responses", "azure", "success",
    )  # fmt: skip
    assert record["usage"]["completion_tokens"] == 3


def test_a_conversation_continues_on_azure_and_chat_keeps_its_deployment_path(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    router = start_router(responses_config(config_data, mocks))
    with oai(router) as client:
        first = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=2)
        second = client.responses.create(
            model="gpt-4o", input="and then?", previous_response_id=first.id, max_output_tokens=2
        )
        chat = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert second.previous_response_id == first.id
    assert chat.choices[0].message.content == "mock token"
    stats = mocks[1].stats()
    assert (stats["by_path"].get(RESPONSES_PATH), stats["by_path"].get(CHAT_PATH)) == (2, 1)
    assert stats["last_api_version"] == VERSION  # chat still sends the dated version


def test_responses_fail_over_from_a_throttled_azure(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    router = start_router(responses_config(config_data, mocks))
    mock_a, azure = mocks
    azure.configure(error_rate=1.0, error_status=429)
    with oai(router) as client:
        answer = client.responses.create(model="failover", input="hi", max_output_tokens=2)
    assert answer.output_text == "mock token"
    assert azure.stats()["by_path"].get(RESPONSES_PATH) == 1
    # mock-a speaks only chat: the Responses request went to it translated.
    assert mock_a.stats()["by_path"].get("/v1/chat/completions") == 1


def test_the_mocks_v1_api_refuses_as_azure_does(mocks: Mocks) -> None:
    url = f"{root(mocks[1])}{RESPONSES_PATH}"
    key = {"api-key": BACKEND_SECRET}
    body = {"model": "gpt4o-prod", "input": "hi"}
    dated = httpx.post(url, params={"api-version": VERSION}, json=body, headers=key, timeout=10)
    assert dated.status_code == 400
    no_model = httpx.post(url, json={"input": "hi"}, headers=key, timeout=10)
    assert no_model.status_code == 404
    wrong_key = httpx.post(url, json=body, headers={"api-key": "x"}, timeout=10)
    assert wrong_key.status_code == 401
    ok = httpx.post(url, json=body, headers=key, timeout=10)
    assert ok.status_code == 200
    assert ok.json()["object"] == "response"


def test_an_azure_backend_speaking_messages_is_a_config_error(
    config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    data = responses_config(config_data, mocks)
    data["backends"]["azure"]["protocols"] = ["openai", "anthropic_messages"]
    with pytest.raises(ConfigInvalid) as caught:
        load(write_config(tmp_path / "a.yaml", data), env={BACKEND_SECRET_ENV: "x"})
    paths = {p.path: p.message for p in caught.value.problems}
    assert "openai_responses too when listed" in paths["backends.azure.protocols"]
