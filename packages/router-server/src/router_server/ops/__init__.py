"""Operator surfaces: Prometheus metrics, the live window, status, the operator page."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from router_core.config import RouterConfig
from router_server.metrics import RequestMetrics, StateCollector
from router_server.ops.window import Window


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
        self.window = Window()
