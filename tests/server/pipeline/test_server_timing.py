"""`Server-Timing` on inference answers: the router's own share and the wait on
the backend, per request, for clients and `router loadtest`.

Only bounds that hold on any machine are asserted: the backend share is at
least the mock's configured delay, and the two shares together fit inside the
time the client itself waited.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.testclient import TestClient

from router_server.pipeline import server_timing

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import CHAT, auth

TIMING = re.compile(r"^router;dur=(\d+\.\d{3}), backend;dur=(\d+\.\d{3})$")
DELAY_MS = 150


def shares(response: Any) -> tuple[float, float]:
    found = TIMING.match(response.headers["server-timing"])
    assert found is not None, response.headers["server-timing"]
    return float(found[1]), float(found[2])


def test_the_field_splits_the_time_between_router_and_backend() -> None:
    assert server_timing(0.250, 0.200) == "router;dur=50.000, backend;dur=200.000"
    # A clock step that makes the backend's share exceed the total never goes negative.
    assert server_timing(0.1, 0.2) == "router;dur=0.000, backend;dur=200.000"


def test_a_completion_carries_its_router_and_backend_shares(
    client: TestClient, mocks: tuple[Backend, Backend]
) -> None:
    mocks[1].configure(latency_ms=DELAY_MS)
    began = time.perf_counter()
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
    waited_ms = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, response.text
    router_ms, backend_ms = shares(response)
    assert backend_ms >= DELAY_MS
    assert router_ms + backend_ms <= waited_ms


def test_a_stream_carries_the_shares_of_its_start(
    client: TestClient, mocks: tuple[Backend, Backend]
) -> None:
    began = time.perf_counter()
    body = {**CHAT, "model": "b-only", "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as response:
        waited_ms = (time.perf_counter() - began) * 1000
        assert response.status_code == 200
        router_ms, backend_ms = shares(response)
        assert "data: [DONE]" in response.read().decode()
    assert router_ms + backend_ms <= waited_ms


def test_an_error_answer_names_no_backend_timing(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth())
    assert response.status_code == 404
    assert "server-timing" not in response.headers
