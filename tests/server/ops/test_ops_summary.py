"""/ops/summary, which feeds the operator page, counts every answered request by
category exactly as /metrics does: refusals before authentication included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.mock_backend import free_port

from tests.helpers.ops_support import OPS_AUTH, OpsAppFactory, with_ops_token
from tests.helpers.support import CHAT, auth, with_data_dir

BAD_KEY = "rk_bogus_" + "x" * 32


def metric(text: str, name: str, **labels: str) -> float:
    """The sum over samples named `name` whose labels include `labels`."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def summary_counts(client: TestClient) -> dict[str, int]:
    """Requests by category over the page's whole window."""
    response = client.get("/ops/summary", headers=OPS_AUTH)
    assert response.status_code == 200, response.text
    totals: dict[str, int] = {}
    for point in response.json()["series"]:
        for category, count in point["counts"].items():
            totals[category] = totals.get(category, 0) + count
    return totals


def test_refusals_before_authentication_are_on_the_page_as_in_metrics(
    make_ops_client: OpsAppFactory, config_data: dict[str, Any]
) -> None:
    client = make_ops_client(config_data)
    for _ in range(20):
        refused = client.post("/v1/chat/completions", json=CHAT, headers=auth(BAD_KEY))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    for _ in range(5):
        assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    # And some refused after authentication, which have usage records.
    missing = {**CHAT, "model": "no-such-model"}
    for _ in range(3):
        assert client.post("/v1/chat/completions", json=missing, headers=auth()).status_code == 404

    counts = summary_counts(client)
    metrics = client.get("/metrics", headers=OPS_AUTH).text
    assert counts["invalid_api_key"] == 20
    assert metric(metrics, "router_request_errors_total", code="invalid_api_key") == 20
    assert counts["ok"] == 5 == metric(metrics, "router_requests_total", status_class="2xx")
    # Every category the page shows is the metrics' count of that problem code, and
    # together they are every request /metrics counts.
    errors = {c: n for c, n in counts.items() if c != "ok"}
    assert len(errors) == 2
    for code, count in errors.items():
        assert metric(metrics, "router_request_errors_total", code=code) == count, code
    assert sum(counts.values()) == metric(metrics, "router_requests_total") == 28


def test_refusals_with_the_spool_full_are_on_the_page_as_in_metrics(
    config_data: dict[str, Any], ops_env: dict[str, str], tmp_path: Path
) -> None:
    """A full spool refuses before anything is accounted, so with no usage record:
    counted all the same, under the organization that was refused."""
    usage = {"ledger": False, "spool": {"max_bytes": 1 << 16}, "kafka": {"request_timeout_ms": 500}}
    data = with_data_dir(with_ops_token({**config_data, "usage": usage}), tmp_path / "data")
    env = {**ops_env, "ROUTER_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}  # Kafka is down
    with TestClient(create_app(structure(data), env=env)) as client:
        served = 0
        while (answer := client.post("/v1/chat/completions", json=CHAT, headers=auth())).is_success:
            served += 1
            assert served < 2000, "the spool never filled"
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "usage_spool_full"
        for _ in range(2):
            client.post("/v1/chat/completions", json=CHAT, headers=auth())
        counts = summary_counts(client)
        metrics = client.get("/metrics", headers=OPS_AUTH).text
    assert counts == {"ok": served, "usage_spool_full": 3}
    errors = metric(
        metrics, "router_request_errors_total", code="usage_spool_full", organization="acme"
    )
    assert errors == 3
    assert metric(metrics, "router_requests_total") == served + 3
