"""Google Cloud Vertex AI as a backend kind: Gemini and Claude models, with a
service account's OAuth tokens, against the mock playing both Google sides.

The mock that demands a key (`mock_b`) is given the public half of a key
made for the test: its `/token` endpoint then takes only assertions signed
by the private half, and its Vertex paths only tokens it issued. The router
reads the service account's JSON key file, mints a token at the file's
`token_uri` and sends it on every call, to `publishers/google` (Gemini's
format) or `publishers/anthropic` (Messages through rawPredict).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from router_core.config_codec import ConfigInvalid
from router_server import google
from router_server.config_file import load
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, write_config
from tests.helpers.usage_support import wait_ledger
from tests.system.providers.support import oai, root, served

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
PREFIX = "/v1/projects/my-project/locations/{location}/publishers/{publisher}/models/{model}"
GEMINI = PREFIX.format(location="us-central1", publisher="google", model="gemini-2.5-flash")
CLAUDE = PREFIX.format(location="us-east5", publisher="anthropic", model="claude-sonnet-4@20250514")


def service_account(directory: Path, token_uri: str) -> tuple[Path, str]:
    """A service account key file of a fresh RSA key, and the key's public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    path = directory / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "my-project", "private_key_id": "k1",
        "private_key": private, "client_email": "router@my-project.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }))  # fmt: skip
    return path, public


def vertex_config(config_data: dict[str, Any], mocks: Mocks, key: Path) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    common = {"kind": "vertex", "base_url": root(mocks[1]) + "/v1", "connect_timeout_s": 1,
              "read_timeout_s": 5}  # fmt: skip
    data["backends"]["vertex-gemini"] = {**common, "vertex": {
        "project": "my-project", "location": "us-central1", "publisher": "google",
        "credentials_file": str(key)}}  # fmt: skip
    data["backends"]["vertex-claude"] = {**common, "vertex": {
        "project": "my-project", "location": "us-east5", "publisher": "anthropic",
        "credentials_file": str(key)}}  # fmt: skip
    data["models"]["flash"] = {"backends": [
        {"backend": "vertex-gemini", "model": "gemini-2.5-flash"}]}  # fmt: skip
    data["models"]["sonnet"] = {"backends": [
        {"backend": "vertex-claude", "model": "claude-sonnet-4@20250514"}]}  # fmt: skip
    data["models"]["sonnet-or-local"] = {"backends": [
        {"backend": "vertex-claude", "model": "claude-sonnet-4@20250514"},
        {"backend": "mock-a", "model": "mock-gpt", "tier": 1}]}  # fmt: skip
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def key(mocks: Mocks, tmp_path: Path) -> Path:
    path, public = service_account(tmp_path, root(mocks[1]) + "/token")
    mocks[1].configure(google_public_key=public)
    return path


@pytest.fixture
def router(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, key: Path
) -> RouterProcess:
    return start_router(vertex_config(config_data, mocks, key))


def test_gemini_on_vertex_with_a_minted_token(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        for _ in range(3):
            reply = client.chat.completions.create(
                model="flash", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert reply.choices[0].message.content == "mock token alpha"
        chunks = list(
            client.chat.completions.create(
                model="flash", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                stream=True,
            )
        )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "mock token"
    stats = mocks[1].stats()
    assert served(mocks[1], GEMINI + ":generateContent") == 3
    assert served(mocks[1], GEMINI + ":streamGenerateContent") == 1
    # One token per backend (two share this key) for every call and probe:
    # minted once, reused until near its expiry.
    assert (stats["tokens_issued"], stats["refused_tokens"]) == (2, 0)
    records = wait_ledger(tmp_path / "router-0-data", 4)
    assert {r["backend"] for r in records} == {"vertex-gemini"}


def test_claude_on_vertex_natively_and_from_chat(router: RouterProcess, mocks: Mocks) -> None:
    with anthropic.Anthropic(api_key=ACME_KEY, base_url=router.url, max_retries=0) as claude:
        message = claude.messages.create(
            model="sonnet", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
        with claude.messages.stream(
            model="sonnet", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            streamed = stream.get_final_message()
        counted = claude.messages.with_raw_response.count_tokens(
            model="sonnet", messages=[{"role": "user", "content": "hello there"}]
        )
    # Vertex's own counting is not used: the router estimates, and says so.
    assert counted.headers["x-router-estimated"] == "true"
    assert counted.parse().input_tokens > 0
    for answer in (message, streamed):
        assert answer.content[0].type == "text"
        assert answer.content[0].text == "mock token alpha"
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert served(mocks[1], CLAUDE + ":rawPredict") == 2
    assert served(mocks[1], CLAUDE + ":streamRawPredict") == 1


def test_a_key_the_token_endpoint_refuses_fails_over_and_sends_nothing(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    path, _ = service_account(tmp_path, root(mocks[1]) + "/token")
    elsewhere = tmp_path / "another-account"
    elsewhere.mkdir()
    _, other = service_account(elsewhere, root(mocks[1]) + "/token")
    mocks[1].configure(google_public_key=other)  # not the router's key
    router = start_router(vertex_config(config_data, mocks, path))
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    stats = mocks[1].stats()
    assert (stats["tokens_issued"], served(mocks[1], CLAUDE + ":rawPredict")) == (0, 0)
    assert served(mocks[0], "/v1/chat/completions") == 1


def test_the_mock_refuses_as_google_does(mocks: Mocks, key: Path) -> None:
    import httpx

    url = root(mocks[1]) + GEMINI + ":generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    refused = httpx.post(url, json=body, headers={"authorization": "Bearer ya29.forged"})
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert mocks[1].stats()["refused_tokens"] == 1
    claude = root(mocks[1]) + CLAUDE + ":rawPredict"
    no_version = httpx.post(claude, json={"messages": [], "max_tokens": 1})
    assert no_version.status_code == 401  # the token is checked before the body


def test_start_up_checks_the_key_and_the_extra(
    config_data: dict[str, Any], mocks: Mocks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = vertex_config(config_data, mocks, tmp_path / "no-such-key.json")
    with pytest.raises(ConfigInvalid) as caught:
        load(write_config(tmp_path / "a.yaml", missing), env={"ROUTER_TEST_MOCK_B_KEY": "x"})
    problems = {p.path: p.message for p in caught.value.problems}
    assert (
        "cannot read the service account key"
        in problems["backends.vertex-gemini.vertex.credentials_file"]
    )
    key, _ = service_account(tmp_path, "http://127.0.0.1:1/token")
    monkeypatch.setattr(google, "available", lambda: False)
    with pytest.raises(ConfigInvalid) as caught:
        load(
            write_config(tmp_path / "b.yaml", vertex_config(config_data, mocks, key)),
            env={"ROUTER_TEST_MOCK_B_KEY": "x"},
        )
    problems = {p.path: p.message for p in caught.value.problems}
    assert "inference-router-server[vertex]" in problems["backends.vertex-claude.kind"]
