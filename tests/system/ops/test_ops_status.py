"""/v1/status: every component with a state, within a second even when Redis hangs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.mock_backend import MockBackendProcess

from tests.helpers.redis_server import RedisServer, redis_binary
from tests.helpers.support import CHAT, auth, eventually, with_data_dir

Mocks = tuple[MockBackendProcess, MockBackendProcess]


def test_every_component_has_a_state(client: TestClient) -> None:
    body = client.get("/v1/status").json()
    assert body["status"] == "ok"
    components = body["components"]
    assert components["config"] == {"state": "ok", "version": 1}
    assert {b["state"] for b in components["backends"].values()} == {"ok"}
    assert components["redis"]["state"] == "disabled"  # limits in memory
    assert components["kafka"]["state"] == "disabled"
    assert components["spool"]["state"] == "ok"


def test_a_backend_outage_reports_degraded(client: TestClient, mocks: Mocks) -> None:
    _, mock_b = mocks
    mock_b.stop()  # the fixture restarts it
    for _ in range(3):  # b-only's requests fail and probes fail: its circuit opens
        client.post("/v1/chat/completions", json={**CHAT, "model": "b-only"}, headers=auth())

    def degraded() -> bool:
        body = client.get("/v1/status").json()
        return body["status"] == "degraded" and body["components"]["backends"]["mock-b"][
            "state"
        ] in ("down", "degraded")

    assert eventually(degraded, timeout=5)
    body = client.get("/v1/status").json()
    assert body["components"]["backends"]["mock-a"]["state"] == "ok"
    assert "b-only" in body["unserved_models"]


def test_status_answers_within_a_second_while_redis_hangs(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    with RedisServer(redis_binary()) as redis:
        data = with_data_dir(dict(config_data), tmp_path / "data")
        # The store's own socket timeout is long: the status probe must bound itself.
        data["state"] = {**data["state"], "store": "redis", "redis": {"timeout_ms": 5000}}
        data["limits"] = {"timeout_ms": 5000}
        env = {**backend_env, "ROUTER_REDIS_URL": redis.url}
        with TestClient(create_app(structure(data), env=env)) as client:
            assert client.get("/v1/status").json()["components"]["redis"]["state"] == "ok"
            redis.pause()
            try:
                started = time.monotonic()
                response = client.get("/v1/status")
                elapsed = time.monotonic() - started
            finally:
                redis.resume()
            assert response.status_code == 200
            body = response.json()
            assert elapsed < 1.0
            assert body["components"]["redis"]["state"] == "down"
            assert "timeout" in body["components"]["redis"]["error"]
            assert body["status"] == "degraded"
