"""/metrics: the series a request feeds, bounded labels, component state."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.helpers.ops_support import OPS_AUTH, OpsAppFactory
from tests.helpers.router_fixture import AppFactory
from tests.helpers.support import ACME_KEY, CHAT, auth, with_changes

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process


def samples(
    client: TestClient, **headers: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum over samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def test_a_served_request_feeds_every_per_request_series(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    m = samples(client)
    labels = {"route": "/v1/chat/completions", "model": "chat", "organization": "acme"}
    assert value(m, "router_requests_total", **labels, status_class="2xx") == 1
    assert value(m, "router_request_duration_seconds_count", **labels, status_class="2xx") == 1
    assert value(m, "router_tokens_total", model="chat", organization="acme", kind="prompt") > 0
    assert value(m, "router_added_latency_seconds_count", route="/v1/chat/completions") == 1
    assert value(m, "router_backend_latency_seconds_count") == 1
    assert value(m, "router_backend_up", backend="mock-a") == 1
    assert value(m, "router_backend_circuit_state", backend="mock-a", state="closed") == 1
    assert value(m, "router_in_flight_requests") == 0
    for name in (
        "router_usage_spool_bytes",
        "router_redis_errors_total",
        "router_kafka_errors_total",
    ):
        assert any(n == name for n, _ in m), name


def test_labels_stay_bounded_whatever_the_caller_sends(client: TestClient) -> None:
    client.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model-xyz"}, headers=auth())
    client.post("/v1/chat/completions", json=CHAT, headers=auth("rk_bogus_" + "x" * 32))
    client.post("/v1/chat/completions", json=CHAT, headers={**auth(), "x-request-id": "rid-12345"})
    text = client.get("/metrics").text
    for raw in ("no-such-model-xyz", "rk_bogus", "rid-12345"):
        assert raw not in text
    m = samples(client)
    assert value(m, "router_request_errors_total", model="other", code="model_not_found") == 1
    assert value(m, "router_request_errors_total", organization="none", code="invalid_api_key") == 1


def test_a_stream_reports_time_to_first_token(client: TestClient) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
    ) as r:
        assert r.status_code == 200
        r.read()
    m = samples(client)
    assert value(m, "router_time_to_first_token_seconds_count", model="chat") == 1


def test_cost_is_counted_at_the_configured_price(
    make_client: AppFactory, config_data: dict[str, Any]
) -> None:
    prices = {"chat": {"input": "1000", "output": "2000"}}
    client = make_client(with_changes(config_data, prices=prices))
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth(ACME_KEY)).status_code == 200
    assert value(samples(client), "router_cost_usd_total", organization="acme") > 0


def test_the_ops_token_guards_metrics_when_set(
    make_ops_client: OpsAppFactory, config_data: dict[str, Any]
) -> None:
    client = make_ops_client(config_data)
    assert client.get("/metrics").status_code == 401
    assert client.get("/ops/summary").status_code == 401
    assert client.get("/ops/summary", headers={"authorization": "Bearer nope"}).status_code == 401
    samples(client, **OPS_AUTH)
    assert client.get("/ops/summary", headers=OPS_AUTH).status_code == 200


def test_without_a_token_there_is_no_ops_data(client: TestClient) -> None:
    assert client.get("/ops/summary").status_code == 404
    assert client.get("/ops").status_code == 200  # the page itself carries no data
