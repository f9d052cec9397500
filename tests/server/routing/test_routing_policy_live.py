"""Routing policy through the app and the mock backends (in-process): tiers, routes per
organization or key, latency-aware choice, per-backend caps, explanations."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, CHAT, GLOBEX_KEY, auth, eventually

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
AppFactory = Callable[[dict[str, Any]], TestClient]


def backends_used(client: TestClient, n: int, key: str = ACME_KEY) -> Counter[str]:
    used: Counter[str] = Counter()
    for _ in range(n):
        response = client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
        assert response.status_code == 200, response.text
        used[response.headers["x-router-backend"]] += 1
    return used


def test_fallback_tier_is_used_only_when_the_primary_is_down(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    config_data["models"]["chat"]["backends"] = [
        {"backend": "mock-a", "model": "mock-gpt", "weight": 1},
        {"backend": "mock-b", "model": "mock-gpt", "weight": 100, "tier": 1},
    ]
    client = make_client(config_data)
    assert backends_used(client, 30) == {"mock-a": 30}
    mocks[0].kill()
    # Connect errors fail over to the fallback at once: no request is lost.
    assert backends_used(client, 30) == {"mock-b": 30}
    status = client.get("/v1/status").json()
    assert status["backends"]["mock-a"]["circuit"] == "open"


def test_routes_send_an_organization_or_a_key_to_their_own_backends(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    config_data["models"]["chat"]["routes"] = [
        {"organizations": ["globex"], "backends": [{"backend": "mock-b", "model": "mock-gpt"}]}
    ]
    client = make_client(config_data)
    assert backends_used(client, 20, GLOBEX_KEY) == {"mock-b": 20}
    assert set(backends_used(client, 40, ACME_KEY)) == {"mock-a", "mock-b"}
    config_data["models"]["chat"]["routes"] = [
        {"keys": ["acme1"], "backends": [{"backend": "mock-a", "model": "mock-gpt"}]}
    ]
    client = make_client(config_data)
    assert backends_used(client, 20, ACME_KEY) == {"mock-a": 20}


def test_least_latency_prefers_the_faster_backend(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    config_data["models"]["chat"]["strategy"] = "least_latency"
    client = make_client(config_data)
    mocks[0].configure(latency_ms=80)
    used = backends_used(client, 40)
    # Both get measured, then the faster one takes (nearly) everything.
    assert used["mock-b"] >= 36


def test_no_available_backend_is_503_with_the_reasons(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    client = make_client(config_data)
    mocks[1].kill()
    assert eventually(
        lambda: client.get("/v1/status").json()["backends"]["mock-b"]["circuit"] == "open"
    )
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_backend_available"
    assert "mock-b: circuit_open" in response.json()["error"]["message"]
    assert response.headers["retry-after"]


def test_a_backend_at_its_in_flight_cap_is_skipped(
    make_client: AppFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """With mock-a's single slot taken by a slow request, the rest go to mock-b."""
    config_data["backends"]["mock-a"]["max_in_flight"] = 1
    config_data["server"]["queue_timeout_ms"] = 50
    client = make_client(config_data)
    mocks[0].configure(latency_ms=1500)
    slow: list[int] = []

    def occupy() -> None:
        embed = {"model": "embed", "input": "x"}
        slow.append(client.post("/v1/embeddings", json=embed, headers=auth()).status_code)

    holder = threading.Thread(target=occupy)
    holder.start()
    assert eventually(
        lambda: client.get("/v1/status").json()["backends"]["mock-a"]["in_flight"] == 1
    )
    used = backends_used(client, 20)
    # The embed model has only mock-a: with its slot taken, it waits, then is shed.
    embed = {"model": "embed", "input": "x"}
    shed = client.post("/v1/embeddings", json=embed, headers=auth())
    holder.join()
    assert used == {"mock-b": 20}
    assert shed.status_code == 503
    assert shed.json()["error"]["code"] == "overloaded"
    assert slow == [200]
