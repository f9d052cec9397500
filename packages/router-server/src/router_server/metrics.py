"""Prometheus metrics: what each request did, and the live state of the components.

Rules:
- Label values are bounded: `model` is a configured public model or "other",
  `organization` a configured organization or "other" ("none" before
  authentication), `backend` a configured backend or "none", `route` one of
  the app's routes, `code` a problem code from the core's catalog. No request
  id and no raw user input ever becomes a label.
- Per-request series are fed from one place, the usage recorder's observers
  (`Ops`, which feeds the operator page's window from the same calls): the
  usage record (`observe`), so the numbers agree with what finance sees, and
  for answers without one (refused before authentication, or with the spool
  full) `observe_unrecorded`.
- The hot path resolves label children once per label tuple and caches them:
  a request costs a dict lookup and a few `inc`/`observe` calls.
- Component state (backend health and circuits, in-flight, the concurrency
  limit, event-loop lag, sheds by reason, spool, export lag, Redis and Kafka
  failures) is read at scrape time from the components' own `status()`, so
  it costs nothing per request. Sheds by organization are
  `router_request_errors{code="overloaded"}`, from the usage records.
- Each app has its own registry, with the process's own numbers. Under
  `router serve --workers N` the route adds the peers' (`group`): each
  worker's samples under a `worker` label, rather than prometheus-client's
  multiprocess mode, which would leave the scrape-time component state
  above to the one worker that answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from router_core.accounting.records import UsageRecord
from router_core.config import RouterConfig
from router_server.usage.trace import Unrecorded

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
LIMIT_CODES = {
    "rate_limit_exceeded": "rate_limit",
    "quota_exceeded": "quota",
    "budget_exceeded": "budget",
}
ROUTES = frozenset(
    {
        "/v1/inference",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/responses",
    }
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_CIRCUITS = ("closed", "open", "half_open")


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class RequestMetrics:
    """The per-request series, with their label children cached."""

    def __init__(self, registry: CollectorRegistry, config: Callable[[], RouterConfig]) -> None:
        self.config = config
        labels = ("route", "model", "backend", "organization", "status_class")
        self.requests = Counter("router_requests", "Requests answered.", labels, registry=registry)
        self.duration = Histogram(
            "router_request_duration_seconds", "Time from accept to the end of the answer.",
            labels, registry=registry, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.errors = Counter(
            "router_request_errors", "Requests answered with an error, by problem code.",
            ("route", "model", "organization", "code"), registry=registry,
        )  # fmt: skip
        self.denials = Counter(
            "router_limit_denials", "Requests refused by a limit, by limit type.",
            ("organization", "limit_type"), registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "router_time_to_first_token_seconds", "Time from accept to a stream's first event.",
            ("model", "backend"), registry=registry, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.tokens = Counter(
            "router_tokens", "Tokens of answered requests (prompt, completion).",
            ("model", "organization", "kind"), registry=registry,
        )  # fmt: skip
        self.cost = Counter(
            "router_cost_usd", "Cost of answered requests at the configured prices.",
            ("model", "organization"), registry=registry,
        )  # fmt: skip
        self.backend_latency = Histogram(
            "router_backend_latency_seconds", "Time spent waiting on backends (non-streamed).",
            ("backend",), registry=registry, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.router_added = Histogram(
            "router_added_latency_seconds",
            "Latency the router adds: the request's time minus the backend's.",
            ("route",), registry=registry, buckets=_OVERHEAD_BUCKETS,
        )  # fmt: skip
        # Label children bound once per raw label tuple: `labels()` costs more than
        # the observations themselves.
        self._bound: dict[tuple[str, str | None, str | None, str, int], _Bound] = {}
        self._backend_bound: dict[tuple[str, str], tuple[Any, Any]] = {}

    # -- label bounding ------------------------------------------------------------

    def _model(self, name: str | None) -> str:
        return name if name is not None and name in self.config().models else OTHER

    def _org(self, name: str | None) -> str:
        if name is None:
            return "none"
        return name if name in self.config().organizations else OTHER

    def _backend(self, name: str | None) -> str:
        return name if name is not None and name in self.config().backends else "none"

    @staticmethod
    def _route(path: str) -> str:
        return path if path in ROUTES else OTHER

    # -- observations ---------------------------------------------------------------

    def observe(self, record: UsageRecord) -> None:
        """One request's usage record (every authenticated request has exactly one)."""
        key = (record.route, record.model, record.backend, record.organization, record.status)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(record)
            if len(self._bound) < 10_000:  # the labels are bounded; the raw keys may not be
                self._bound[key] = bound
        bound.requests.inc()
        bound.duration.observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            bound.ttft.observe(record.ttft_ms / 1000)
        usage = record.usage
        if usage.total_tokens:
            bound.prompt_tokens.inc(usage.prompt_tokens)
            bound.completion_tokens.inc(usage.completion_tokens)
        if record.cost_nano_usd:
            bound.cost.inc(record.cost_nano_usd / 1e9)
        if record.reason is not None:
            self.errors.labels(bound.route, bound.model, bound.org, record.reason).inc()
            limit_type = LIMIT_CODES.get(record.reason)
            if limit_type is not None:
                self.denials.labels(bound.org, limit_type).inc()

    def _bind(self, record: UsageRecord) -> _Bound:
        route, model = self._route(record.route), self._model(record.model)
        backend, org = self._backend(record.backend), self._org(record.organization)
        labels = (route, model, backend, org, status_class(record.status))
        return _Bound(
            route, model, org,
            self.requests.labels(*labels), self.duration.labels(*labels),
            self.ttft.labels(model, backend),
            self.tokens.labels(model, org, "prompt"), self.tokens.labels(model, org, "completion"),
            self.cost.labels(model, org),
        )  # fmt: skip

    def observe_unrecorded(self, answer: Unrecorded) -> None:
        route, org = self._route(answer.route), self._org(answer.organization)
        labels = (route, OTHER, "none", org, status_class(answer.status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(answer.seconds)
        if answer.code is not None:
            self.errors.labels(route, OTHER, org, answer.code).inc()

    def observe_backend(self, route: str, backend: str, total_s: float, backend_s: float) -> None:
        bound = self._backend_bound.get((route, backend))
        if bound is None:
            bound = (
                self.backend_latency.labels(self._backend(backend)),
                self.router_added.labels(self._route(route)),
            )
            self._backend_bound[(route, backend)] = bound  # both bounded by the config
        bound[0].observe(backend_s)
        bound[1].observe(max(0.0, total_s - backend_s))


@attrs.frozen
class _Bound:
    """The label values and series children of one (route, model, backend, org, status)."""

    route: str
    model: str
    org: str
    requests: Any
    duration: Any
    ttft: Any
    prompt_tokens: Any
    completion_tokens: Any
    cost: Any


class StateCollector(Collector):
    """Component state, read from the components' `status()` at scrape time."""

    def __init__(self, sources: Callable[[], Mapping[str, Any]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Any]:
        s = self.sources()
        up = GaugeMetricFamily(
            "router_backend_up", "1 if the backend can take requests now.", labels=["backend"]
        )
        circuit = GaugeMetricFamily(
            "router_backend_circuit_state", "1 for the backend's circuit state.",
            labels=["backend", "state"],
        )  # fmt: skip
        backend_in_flight = GaugeMetricFamily(
            "router_backend_in_flight", "Requests in flight to the backend.", labels=["backend"]
        )
        outstanding = GaugeMetricFamily(
            "router_backend_outstanding_tokens",
            "Tokens of the requests in flight to the backend (prompt bound plus most output).",
            labels=["backend"],
        )
        for name, health in s["backends"].items():
            up.add_metric([name], 1.0 if health["available"] else 0.0)
            for state in _CIRCUITS:
                circuit.add_metric([name, state], 1.0 if health["circuit"] == state else 0.0)
            backend_in_flight.add_metric([name], health["in_flight"])
            outstanding.add_metric([name], health.get("outstanding_tokens", 0))
        yield from (up, circuit, backend_in_flight, outstanding)
        yield from _load_metrics(s["backends"])
        backpressure = s["backpressure"]
        yield GaugeMetricFamily(
            "router_in_flight_requests", "Requests holding an in-flight slot.",
            value=backpressure.get("in_flight", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "router_queued_requests",
            "Requests waiting for a slot.",
            value=backpressure.get("queued", 0),
        )
        yield GaugeMetricFamily(
            "router_concurrency_limit",
            "Requests that may be in flight now: max_in_flight, or less by the adaptive "
            "or busy limit.",
            value=backpressure.get("limit", 0),
        )
        busy = backpressure.get("busy_percent")
        if busy is not None:
            yield GaugeMetricFamily(
                "router_cpu_busy_ratio",
                "The router process's CPU time over the last admission window, as a share "
                "of one core; past max_busy_percent the in-flight limit shrinks.",
                value=busy / 100,
            )
        yield GaugeMetricFamily(
            "router_event_loop_lag_seconds",
            "How far the event loop runs behind (smoothed); past max_loop_lag_ms it sheds.",
            value=backpressure.get("loop_lag_ms", 0) / 1000,
        )
        shed = CounterMetricFamily(
            "router_shed_requests", "Requests refused with 503 overloaded, by reason.",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in (backpressure.get("shed_by_reason") or {}).items():
            shed.add_metric([reason], count)
        yield shed
        usage = s.get("usage") or {}
        spool = usage.get("spool") or {}
        yield GaugeMetricFamily(
            "router_usage_spool_bytes", "Bytes in the usage spool not yet acknowledged.",
            value=spool.get("bytes", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "router_usage_spool_records", "Records in the usage spool not yet exported.",
            value=spool.get("records", 0),
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "router_usage_export_lag_seconds", "Age of the oldest record not yet exported.",
            labels=["sink"],
        )  # fmt: skip
        for sink in ("ledger", "kafka"):
            if usage.get(sink):
                lag.add_metric([sink], usage[sink]["lag_s"])
        yield lag
        limits = s["limits"]
        idempotency = usage.get("idempotency") or {}
        yield CounterMetricFamily(
            "router_redis_errors", "Failed calls to the shared store (limits, idempotency).",
            value=limits["failure_decisions"] + limits["settle_failures"]
            + idempotency.get("failures", 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "router_limit_failure_decisions",
            "Limit decisions taken by the failure policy (the store down or past its deadline).",
            value=limits["failure_decisions"],
        )  # fmt: skip
        yield CounterMetricFamily(
            "router_limit_settle_failures",
            "Settlements the limit store did not take at once (kept in the outbox).",
            value=limits["settle_failures"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "router_limit_settlements_pending",
            "Settlements in the outbox, waiting for the limit store.",
            value=limits.get("settlements_pending") or 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "router_limit_settlements_lost",
            "Settlements neither the store nor the outbox took (their holds lapse).",
            value=limits.get("settlements_lost", 0),
        )  # fmt: skip
        kafka = usage.get("kafka") or {}
        yield CounterMetricFamily(
            "router_kafka_errors", "Failed attempts to export usage records to Kafka.",
            value=kafka.get("failures", 0),
        )  # fmt: skip
        yield from _gc_metrics(s["gc"])


def _gc_metrics(collector: Mapping[str, Any]) -> Iterable[Any]:
    """The cycle collector's runs and pauses (`gc_watch`), by generation."""
    runs = CounterMetricFamily(
        "router_gc_collections", "Runs of the cycle collector.", labels=["generation"]
    )
    paused = CounterMetricFamily(
        "router_gc_pause_seconds",
        "Time the cycle collector stopped the process (every request in flight waits).",
        labels=["generation"],
    )
    for generation, (count, seconds) in enumerate(
        zip(collector["collections"], collector["pause_s"], strict=True)
    ):
        runs.add_metric([str(generation)], count)
        paused.add_metric([str(generation)], seconds)
    yield from (runs, paused)
    yield GaugeMetricFamily(
        "router_gc_recent_longest_pause_seconds",
        "The longest pause of the cycle collector in the last minute.",
        value=collector["recent_longest_pause_ms"] / 1000,
    )


def _load_metrics(backends: Mapping[str, Any]) -> Iterable[Any]:
    """What the backends with `load_metrics` report of their own load (the
    last reading, while it is fresh), and how their reads failed."""
    load = GaugeMetricFamily(
        "router_backend_reported_load",
        "The load the backend's own metrics report (0 idle, 1 full), while fresh.",
        labels=["backend"],
    )
    reported = GaugeMetricFamily(
        "router_backend_load_metric",
        "The backend's last reading of its own metrics: running, waiting, cache_usage.",
        labels=["backend", "metric"],
    )
    failures = CounterMetricFamily(
        "router_backend_load_scrape_failures",
        "Reads of a backend's metrics that failed, by reason.",
        labels=["backend", "reason"],
    )
    for name, health in backends.items():
        metrics = health.get("load_metrics")
        if metrics is None:
            continue
        if health.get("reported_load") is not None:
            load.add_metric([name], health["reported_load"])
        for metric in ("running", "waiting", "cache_usage"):
            if metrics[metric] is not None:
                reported.add_metric([name, metric], metrics[metric])
        for reason, count in metrics["failures"].items():
            failures.add_metric([name, reason], count)
    yield from (load, reported, failures)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
