"""Redis and Kafka failures show in /metrics and in /v1/status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.mock_backend.process import free_port

from tests.helpers.support import CHAT, auth, eventually, with_data_dir


def metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_an_unreachable_redis_counts_errors_and_is_down(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    data = with_data_dir(dict(config_data), tmp_path / "data")
    # Rate limits fail open on a store failure (the default): requests still pass.
    data["state"] = {**data["state"], "store": "redis"}
    data["limits"] = {"timeout_ms": 200}
    data["organizations"]["acme"]["limits"] = {"requests": {"rate": 100, "per": "minute"}}
    env = {**backend_env, "ROUTER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with TestClient(create_app(structure(data), env=env)) as client:
        client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert metric(client, "router_redis_errors_total") >= 1
        body = client.get("/v1/status").json()
        assert body["components"]["redis"]["state"] == "down"
        assert body["status"] == "degraded"


def test_an_unreachable_kafka_counts_errors_and_is_down(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    data = with_data_dir(dict(config_data), tmp_path / "data")
    data["usage"] = {**data.get("usage", {}), "kafka": {"request_timeout_ms": 500}}
    env = {**backend_env, "ROUTER_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    with TestClient(create_app(structure(data), env=env)) as client:
        assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
        assert eventually(lambda: metric(client, "router_kafka_errors_total") >= 1, timeout=15)
        body = client.get("/v1/status").json()
        assert body["components"]["kafka"]["state"] == "down"
        assert body["status"] == "degraded"
        assert metric(client, "router_usage_spool_records") >= 1
