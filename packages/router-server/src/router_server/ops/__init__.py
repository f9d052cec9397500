"""Operator surfaces: Prometheus metrics, recent traffic, status, the operator page."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from router_core.accounting.records import UsageRecord
from router_core.config import RouterConfig
from router_server.metrics import RequestMetrics, StateCollector
from router_server.ops.traffic import RecentTraffic
from router_server.usage.trace import Unrecorded


class Ops:
    """One per app: its own registry (several apps may share a test process)."""

    def __init__(
        self, config: Callable[[], RouterConfig], state: StateCollector, token: str | None
    ) -> None:
        # The operator token (observability.ops_token_env), read once at start.
        self.token = token or None
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry, config)
        self.registry.register(state)
        self.traffic = RecentTraffic()

    # The usage recorder's observer: the metrics and the page's recent traffic are fed by
    # the same calls, so every answer /metrics counts is on the page too.

    def observe(self, record: UsageRecord) -> None:
        self.requests.observe(record)
        self.traffic.observe(record)

    def observe_unrecorded(self, answer: Unrecorded) -> None:
        self.requests.observe_unrecorded(answer)
        self.traffic.observe_unrecorded(answer)
