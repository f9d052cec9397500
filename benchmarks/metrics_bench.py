"""Per-request cost of the ops instrumentation, measured in isolation.

    python benchmarks/metrics_bench.py [--requests 200000]

Times what a served, non-streamed request adds: the metrics and the ops
page's recent traffic observing its usage record, the router-added/backend latency
observation, and four tracing calls with tracing off (the default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from router_core.accounting.records import Outcome, TokenCounts, UsageRecord
from router_core.config_codec import structure
from router_server import tracing
from router_server.metrics import RequestMetrics
from router_server.ops.traffic import RecentTraffic

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "router.yaml"


def record(org: str, model: str) -> UsageRecord:
    return UsageRecord(
        record_id="r", request_id="q", client_request_id=None, organization=org,
        key_id="k", route="/v1/chat/completions", operation="chat", model=model,
        backend="mock-a", backend_model="m", stream=False, started_at_us=0,
        finished_at_us=1, latency_ms=3.2, ttft_ms=None, status=200,
        outcome=Outcome.SUCCESS, reason=None, usage=TokenCounts(12, 30, 42),
        cost_nano_usd=84_000, router_instance="bench",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    n = parser.parse_args().requests
    config = structure(yaml.safe_load(CONFIG.read_text()))
    org = next(iter(config.organizations), "acme")
    model = next(iter(config.models))
    metrics = RequestMetrics(CollectorRegistry(auto_describe=False), lambda: config)
    traffic = RecentTraffic()
    records = [record(org, model) for _ in range(64)]
    for r in records:  # warm the label caches, as a running router has
        metrics.observe(r)
    started = time.perf_counter()
    for i in range(n):
        r = records[i & 63]
        metrics.observe(r)
        traffic.observe(r)
        metrics.observe_backend("/v1/chat/completions", "mock-a", 0.004, 0.003)
        for step in ("router.auth", "router.limits", "router.route"):
            with tracing.span(step):
                pass
        with tracing.backend_span("mock-a"):
            pass
    per_request_us = (time.perf_counter() - started) / n * 1e6
    print(f"ops instrumentation: {per_request_us:.2f} µs per request ({n} requests)")


if __name__ == "__main__":
    main()
