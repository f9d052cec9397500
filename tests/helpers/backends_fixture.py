"""Fixtures: the model backends the router forwards to.

A pytest plugin (`pytest_plugins` in tests/conftest.py). Two mock backends run
for the whole session as real servers over HTTP (`mock_a`, `mock_b`; B
demands `BACKEND_SECRET`); `mocks` hands both over running, with default
behaviour and zeroed counters. `config_data` is `support.base_config` pointed
at them, and `backend_env` holds the secret the router reads for B.

A test marked `backends_in_process` gets the same two backends inside the
test process instead (tests/helpers/in_process_backend.py): `mocks` and
`config_data` name those, and `backend_transport`, which the in-process app
fixtures hand to `create_app`, reaches them without a socket. For tests whose
subject is the router's decisions, not the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess

from tests.helpers.in_process_backend import Backend, InProcessBackend, InProcessBackends
from tests.helpers.support import BACKEND_SECRET, BACKEND_SECRET_ENV, base_config

IN_PROCESS = "backends_in_process"

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
    "retry_after_s": None,
    "google_public_key": None,
    "metrics": None,
    "metrics_max_running": None,
    "metrics_running": None,
    "metrics_waiting": None,
    "metrics_cache_usage": None,
    "metrics_pad_bytes": None,
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
def in_process_backends() -> InProcessBackends:
    """Mock backends A and B as `mock_a` and `mock_b` are, answering in-process."""
    return InProcessBackends(
        InProcessBackend("mock-a.test", ["mock-gpt", "mock-embed"]),
        InProcessBackend("mock-b.test", ["mock-gpt", "mock-gpt-b"], api_key=BACKEND_SECRET),
    )


@pytest.fixture
def backend_transport(request: pytest.FixtureRequest) -> httpx.AsyncBaseTransport | None:
    """What the in-process app sends backend calls through: the network, unless
    the test is marked `backends_in_process`."""
    if request.node.get_closest_marker(IN_PROCESS) is None:
        return None
    backends: InProcessBackends = request.getfixturevalue("in_process_backends")
    return backends.transport


@pytest.fixture
def mocks(request: pytest.FixtureRequest) -> Iterator[tuple[Backend, Backend]]:
    """Both mock backends, running, with default behaviour and zeroed counters."""
    if request.node.get_closest_marker(IN_PROCESS) is not None:
        backends: InProcessBackends = request.getfixturevalue("in_process_backends")
        yield backends.backends[0], backends.backends[1]
        return
    mock_a: MockBackendProcess = request.getfixturevalue("mock_a")
    mock_b: MockBackendProcess = request.getfixturevalue("mock_b")
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
def config_data(mocks: tuple[Backend, Backend]) -> dict[str, Any]:
    mock_a, mock_b = mocks
    return base_config(mock_a.url, mock_b.url)
