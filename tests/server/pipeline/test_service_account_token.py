"""A Vertex backend whose service account key went missing after start-up:
the client is still built, and each call fails before anything is sent."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from router_core.attempts import FailureKind
from router_core.config_codec import structure
from router_server.backends import BackendFailure, open_client
from router_server.google import MintFailed, ServiceAccountToken


def test_a_missing_key_fails_each_call_not_the_client(tmp_path: Path) -> None:
    cfg = structure(
        {
            "backends": {
                "vx": {
                    "base_url": "https://us-east5-aiplatform.invalid/v1",
                    "kind": "vertex",
                    "vertex": {"project": "my-project", "location": "us-east5",
                               "publisher": "anthropic",
                               "credentials_file": str(tmp_path / "gone.json")},
                }
            },
            "models": {"m": {"backends": [{"backend": "vx"}]}},
        }
    )  # fmt: skip
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    client = open_client("vx", cfg.backends["vx"], "httpx", {}, httpx.MockTransport(handler))

    async def call() -> None:
        await client.open(client.path_for("/messages", "claude"), {"messages": []})

    with pytest.raises(BackendFailure) as caught:
        anyio.run(call)
    assert caught.value.kind is FailureKind.CONNECT
    assert "service account key" in caught.value.detail
    assert sent == []


def test_a_key_that_does_not_parse_is_a_mint_failure(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"client_email": "a@b", "private_key": "not a key", "token_uri": "http://x"}')
    tokens = ServiceAccountToken(key)
    with pytest.raises(MintFailed, match="does not parse"):
        anyio.run(tokens.token)
