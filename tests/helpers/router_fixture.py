"""Fixtures: the router, in-process (`make_client`, `client`) or as real processes
(`start_router`).

A pytest plugin (`pytest_plugins` in tests/conftest.py). Every app and every
process keeps its data under the test's `tmp_path` (`support.with_data_dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.process import RouterProcess

from tests.helpers.support import with_data_dir, write_config

AppFactory = Callable[[dict[str, Any]], TestClient]


@pytest.fixture
def make_client(
    backend_env: dict[str, str],
    tmp_path: Path,
    backend_transport: httpx.AsyncBaseTransport | None,
) -> Iterator[AppFactory]:
    """Build the app from config data and run it (lifespan included) in-process."""
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> TestClient:
        data = with_data_dir(data, tmp_path / f"app-{len(opened)}-data")
        app = create_app(structure(data), env=backend_env, backend_transport=backend_transport)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory, config_data: dict[str, Any]) -> TestClient:
    return make_client(config_data)


RouterFactory = Callable[..., RouterProcess]


@pytest.fixture
def start_router(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[RouterFactory]:
    """Start real router processes (hypercorn, uvloop) on free ports; each logs to
    `tmp_path/router-N.log`."""
    started: list[RouterProcess] = []
    logs: list[IO[bytes]] = []

    def start(
        data: dict[str, Any], env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> RouterProcess:
        data = with_data_dir(data, tmp_path / f"router-{len(started)}-data")
        # One process, unless the test asks for workers: the tests' subject is
        # one router (its pid, its status), not a group.
        data = {**data, "server": {"workers": 1, **data.get("server", {})}}
        path = write_config(tmp_path / f"router-{len(started)}.yaml", data)
        logs.append((tmp_path / f"router-{len(started)}.log").open("wb"))
        router = RouterProcess(
            path, env={**backend_env, **(env or {})}, log=logs[-1], args=list(args)
        )
        started.append(router)
        return router.start()

    yield start
    for router in started:
        router.stop()
    for log in logs:
        log.close()
