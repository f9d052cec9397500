"""Fixtures of the server tests: the app in-process with a memory limit store on a
clock the test moves (`limited`), or with an ops token (`make_ops_client`), and
headless Chromium for the operator page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.limits import MemoryLimitStore

from tests.helpers.ops_support import OPS_TOKEN, OPS_TOKEN_ENV, OpsAppFactory, with_ops_token
from tests.helpers.support import Clock, Limited, LimitedFactory, with_data_dir


@pytest.fixture
def limited(
    backend_env: dict[str, str],
    tmp_path: Path,
    backend_transport: httpx.AsyncBaseTransport | None,
) -> Iterator[LimitedFactory]:
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> Limited:
        data = with_data_dir(data, tmp_path / f"limited-{len(opened)}-data")
        clock = Clock()
        store = MemoryLimitStore(clock=clock)
        app = create_app(
            structure(data),
            env=backend_env,
            limit_store=store,
            backend_transport=backend_transport,
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return Limited(client, store, clock)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def ops_env(backend_env: dict[str, str]) -> dict[str, str]:
    return {**backend_env, OPS_TOKEN_ENV: OPS_TOKEN}


@pytest.fixture
def make_ops_client(
    ops_env: dict[str, str],
    tmp_path: Path,
    backend_transport: httpx.AsyncBaseTransport | None,
) -> Iterator[OpsAppFactory]:
    """The app in-process, with the ops token configured."""
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> TestClient:
        data = with_data_dir(with_ops_token(data), tmp_path / f"ops-{len(opened)}-data")
        app = create_app(structure(data), env=ops_env, backend_transport=backend_transport)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (`.ci/run` installs it; locally the tests skip without it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "chromium is not installed (CI installs Debian's package: apt-get install chromium)"
    )
