"""`TokenFile`: an Entra ID token another process keeps fresh in a file."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import httpx
import pytest

from router_core.attempts import FailureKind
from router_core.config_codec import structure
from router_server.backends import BackendFailure, TokenFile, open_client


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reread_when_the_file_changes_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    clock = Clock()
    tokens = TokenFile(path, clock)
    assert tokens.token() == "first"
    path.write_text("second-token\n")
    # Within the second: the file is not looked at again.
    clock.now += 0.5
    assert tokens.token() == "first"
    clock.now += 0.6
    assert tokens.token() == "second-token"


def test_a_rewrite_of_the_same_size_and_time_is_still_seen_by_its_inode(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("aaaa")
    clock = Clock()
    tokens = TokenFile(path, clock)
    assert tokens.token() == "aaaa"
    stat = path.stat()
    # Kubernetes swaps a projected volume's file by renaming a new one in.
    fresh = tmp_path / "token.new"
    fresh.write_text("bbbb")
    os.utime(fresh, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(fresh, path)
    clock.now += 2
    assert tokens.token() == "bbbb"


def test_a_file_gone_or_emptied_keeps_the_last_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    clock = Clock()
    tokens = TokenFile(path, clock)
    assert tokens.token() == "kept"
    path.write_text("")
    clock.now += 2
    assert tokens.token() == "kept"
    path.unlink()
    clock.now += 2
    assert tokens.token() == "kept"


def test_no_file_ever_is_no_token(tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path / "missing", Clock())
    assert tokens.token() is None
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    assert TokenFile(tmp_path / "binary", Clock()).token() is None


def test_a_backend_without_a_token_fails_before_sending_anything(tmp_path: Path) -> None:
    """Never read (the file appeared in no check): the request moves on, and
    nothing reaches the backend without a credential."""
    cfg = structure(
        {
            "backends": {
                "az": {
                    "base_url": "https://res.openai.azure.invalid",
                    "kind": "azure_openai",
                    "azure": {"api_version": "2024-10-21",
                              "entra_token_file": str(tmp_path / "none")},
                }
            },
            "models": {"m": {"backends": [{"backend": "az"}]}},
        }
    )  # fmt: skip
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    client = open_client("az", cfg.backends["az"], "httpx", {}, httpx.MockTransport(handler))

    async def call() -> None:
        await client.open("/openai/deployments/m/chat/completions", {"model": "m"})

    with pytest.raises(BackendFailure) as caught:
        anyio.run(call)
    assert caught.value.kind is FailureKind.CONNECT
    assert "token file" in caught.value.detail
    assert sent == []
