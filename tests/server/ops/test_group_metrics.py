"""The group's /metrics: each worker's exposition merged, every sample labelled."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router_server.group import merge, up_family


def exposition(requests: float, in_flight: float) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("router_requests", "Requests.", ("route",), registry=registry)
    counter.labels("/v1/chat/completions").inc(requests)
    Gauge("router_in_flight_requests", "In flight.", registry=registry).set(in_flight)
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_each_family_once_with_every_workers_samples_labelled() -> None:
    merged = merge([(0, exposition(3, 1)), (1, exposition(5, 0))])
    text = merged.decode()
    assert text.count("# TYPE router_requests_total counter") == 1
    assert text.count("# HELP router_in_flight_requests") == 1
    found = samples(merged)
    route = ("route", "/v1/chat/completions")
    assert found[("router_requests_total", (route, ("worker", "0")))] == 3
    assert found[("router_requests_total", (route, ("worker", "1")))] == 5
    assert found[("router_in_flight_requests", (("worker", "0"),))] == 1
    assert found[("router_in_flight_requests", (("worker", "1"),))] == 0
    # Nothing without its worker: the merged text parses and sums per family.
    assert all(dict(labels).get("worker") in ("0", "1") for _, labels in found)


def test_a_family_only_one_worker_has_keeps_its_samples() -> None:
    registry = CollectorRegistry()
    Gauge("router_only_here", "Only on worker 1.", registry=registry).set(7)
    merged = merge([(0, exposition(1, 0)), (1, generate_latest(registry))])
    assert samples(merged)[("router_only_here", (("worker", "1"),))] == 7


def test_workers_up_says_which_workers_answered() -> None:
    found = samples(up_family({1: False, 0: True}))
    assert found == {
        ("router_worker_up", (("worker", "0"),)): 1.0,
        ("router_worker_up", (("worker", "1"),)): 0.0,
    }
