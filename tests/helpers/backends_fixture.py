"""Fixtures: the model backends the router forwards to, as real mock servers over HTTP.

A pytest plugin (`pytest_plugins` in tests/conftest.py). Two mock backends run
for the whole session (`mock_a`, `mock_b`; B demands `BACKEND_SECRET`);
`mocks` hands both over running, with default behaviour and zeroed counters.
`config_data` is `support.base_config` pointed at them, and `backend_env`
holds the secret the router reads for B.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from router_server.mock_backend import MockBackendProcess

from tests.helpers.support import BACKEND_SECRET, BACKEND_SECRET_ENV, base_config

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
