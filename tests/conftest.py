"""Fixtures: real mock backends over HTTP, the router in-process or as a process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.limits import MemoryLimitStore
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from support import (
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    Clock,
    Limited,
    LimitedFactory,
    base_config,
    with_data_dir,
    write_config,
)

# Real servers: Redis (redis_server, redis_url), the Kafka-compatible broker
# (kafka_broker, kafka_bootstrap), and the admin listener's certificates (admin_certs).
# An identity provider's JWKS endpoint (idp), the ops page's fixtures, and the
# canary-secret check over the whole session's logs, error bodies and usage records.
# A real Redis Cluster and Sentinel deployment (redis_cluster, redis_sentinel).
pytest_plugins = [
    "redis_fixture", "kafka_fixture", "tls_fixture", "ops_fixture", "jwks_fixture",
    "canary_fixture", "redis_cluster_fixture",
]  # fmt: skip

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parent.parent
# What pytest and Hypothesis keep beside the project (.hypothesis is placed when
# Hypothesis is imported, before the working directory changes).
TOOL_CACHES = {".pytest_cache", ".hypothesis", "__pycache__"}


def _entries(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()} - TOOL_CACHES


@pytest.fixture(scope="session", autouse=True)
def _isolated_cwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole session runs in an empty working directory of its own, so a path
    left relative (the `router-data/` defaults, a ledger the CLI looks for) never
    reaches the checkout or another run's files; and the checkout and the
    directory pytest was started in must gain nothing."""
    started_in = Path.cwd()
    checked = {REPO, REPO / "tests", REPO / "examples", started_in}
    watched = {directory: _entries(directory) for directory in checked}
    cwd = tmp_path_factory.mktemp("cwd")
    os.chdir(cwd)
    yield cwd
    os.chdir(started_in)
    for directory, before in watched.items():
        if new := _entries(directory) - before:
            pytest.fail(f"the tests created {sorted(new)} in {directory}", pytrace=False)


@pytest.fixture(autouse=True)
def _writes_nothing_in_cwd(_isolated_cwd: Path) -> Iterator[None]:
    """Fails the test that leaves anything in the working directory: every path a
    test's router or CLI uses belongs under its tmp_path (see `with_data_dir`)."""
    yield
    os.chdir(_isolated_cwd)
    left = sorted(path.name for path in _isolated_cwd.iterdir())
    for name in left:  # so that the next test starts clean and is not blamed
        shutil.rmtree(_isolated_cwd / name, ignore_errors=True)
        (_isolated_cwd / name).unlink(missing_ok=True)
    if left:
        pytest.fail(
            f"the test left {left} in the working directory; put every path its "
            "router or CLI uses under tmp_path (support.with_data_dir)",
            pytrace=False,
        )


MOCK_DEFAULTS = {
    "latency_ms": 0,
    "chunk_delay_ms": 0,
    "error_rate": 0,
    "error_status": 500,
    "hang": False,
    "truncate_after": None,
    "line_ending": "lf",
    "split_tail_bytes": None,
    "omit_usage": False,
}


@pytest.fixture(scope="session")
def mock_a() -> Iterator[MockBackendProcess]:
    with MockBackendProcess(["--models", "mock-gpt,mock-embed"]) as backend:
        yield backend


@pytest.fixture(scope="session")
def mock_b() -> Iterator[MockBackendProcess]:
    with MockBackendProcess(["--api-key", BACKEND_SECRET, "--models", "mock-gpt,mock-gpt-b"]) as b:
        yield b


@pytest.fixture
def mocks(
    mock_a: MockBackendProcess, mock_b: MockBackendProcess
) -> Iterator[tuple[MockBackendProcess, MockBackendProcess]]:
    """Both mock backends, running, with default behaviour and zeroed counters."""
    for backend in (mock_a, mock_b):
        if not backend.running:
            backend.start()
        backend.configure(**MOCK_DEFAULTS)
        backend.reset_stats()
    yield mock_a, mock_b
    for backend in (mock_a, mock_b):
        if not backend.running:
            backend.start()


@pytest.fixture
def backend_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv(BACKEND_SECRET_ENV, BACKEND_SECRET)
    return {BACKEND_SECRET_ENV: BACKEND_SECRET}


@pytest.fixture
def config_data(mocks: tuple[MockBackendProcess, MockBackendProcess]) -> dict[str, Any]:
    mock_a, mock_b = mocks
    return base_config(mock_a.url, mock_b.url)


AppFactory = Callable[[dict[str, Any]], TestClient]


@pytest.fixture
def make_client(backend_env: dict[str, str], tmp_path: Path) -> Iterator[AppFactory]:
    """Build the app from config data and run it (lifespan included) in-process."""
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> TestClient:
        data = with_data_dir(data, tmp_path / f"app-{len(opened)}-data")
        client = TestClient(
            create_app(structure(data), env=backend_env), raise_server_exceptions=False
        )
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

    def start(data: dict[str, Any], env: dict[str, str] | None = None) -> RouterProcess:
        data = with_data_dir(data, tmp_path / f"router-{len(started)}-data")
        path = write_config(tmp_path / f"router-{len(started)}.yaml", data)
        logs.append((tmp_path / f"router-{len(started)}.log").open("wb"))
        router = RouterProcess(path, env={**backend_env, **(env or {})}, log=logs[-1])
        started.append(router)
        return router.start()

    yield start
    for router in started:
        router.stop()
    for log in logs:
        log.close()


@pytest.fixture
def limited(backend_env: dict[str, str], tmp_path: Path) -> Iterator[LimitedFactory]:
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> Limited:
        data = with_data_dir(data, tmp_path / f"limited-{len(opened)}-data")
        clock = Clock()
        store = MemoryLimitStore(clock=clock)
        app = create_app(structure(data), env=backend_env, limit_store=store)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return Limited(client, store, clock)

    yield make
    for client in opened:
        client.__exit__(None, None, None)
