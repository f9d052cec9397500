"""What a simulation counts, and its summary as plain data (the `--json` output)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from router_cli.probe.slo import nearest_rank
from router_core.limits.budget import NANOS_PER_USD

# Why a request got no answer: the router's own problem codes, plus
# `unauthenticated` for an unknown, revoked or expired key (or unknown organization).
DENIAL_REASONS = (
    "unauthenticated",
    "route_not_allowed",
    "model_not_found",
    "model_not_allowed",
    "rate_limit_exceeded",
    "quota_exceeded",
    "budget_exceeded",
    "overloaded",
    "no_backend_available",
    "backend_error",
    "backend_timeout",
    "request_timeout",
)


@attrs.define
class Result:
    backends: Sequence[str]
    requests: int = 0
    served: Counter[str] = attrs.field(factory=Counter)
    attempts: Counter[str] = attrs.field(factory=Counter)
    failed_attempts: Counter[str] = attrs.field(factory=Counter)
    denials: Counter[str] = attrs.field(factory=Counter)
    # nano-USD per organization, of served requests, at the config's prices.
    spend: Counter[str] = attrs.field(factory=Counter)
    # Requests served with a model that has no price (their spend is unknown).
    unpriced: int = 0
    # Moves to the next candidate after a failed attempt.
    failovers: int = 0
    requests_failed_over: int = 0
    # Modelled latency of each served request, arrival to answer, in ms, by backend.
    latencies_ms: dict[str, list[float]] = attrs.field()
    first_ts_us: int | None = None
    last_ts_us: int | None = None

    @latencies_ms.default
    def _no_latencies(self) -> dict[str, list[float]]:
        return {name: [] for name in self.backends}

    @property
    def served_total(self) -> int:
        return sum(self.served.values())

    def summary(self) -> dict[str, Any]:
        served = self.served_total
        span = (
            (self.last_ts_us - self.first_ts_us) / 1e6
            if self.first_ts_us is not None and self.last_ts_us is not None
            else 0.0
        )
        return {
            "requests": self.requests,
            "served": served,
            "denied": sum(self.denials.values()),
            "trace_seconds": round(span, 3),
            "backends": {
                name: {
                    "served": self.served[name],
                    "share": round(self.served[name] / served, 6) if served else 0.0,
                    "attempts": self.attempts[name],
                    "failed_attempts": self.failed_attempts[name],
                    "latency_ms": percentiles(self.latencies_ms[name]),
                }
                for name in self.backends
            },
            "denials": {reason: self.denials[reason] for reason in DENIAL_REASONS},
            "spend_usd": {
                org: _usd(nanos) for org, nanos in sorted(self.spend.items(), key=lambda i: i[0])
            },
            "unpriced_requests": self.unpriced,
            "failovers": self.failovers,
            "requests_failed_over": self.requests_failed_over,
            "latency_ms": percentiles([v for values in self.latencies_ms.values() for v in values]),
        }


def _usd(nanos: int) -> float:
    return round(nanos / NANOS_PER_USD, 9)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p99 by nearest rank (None without values)."""
    if not values:
        return {"p50": None, "p99": None}
    ordered = sorted(values)
    return {
        "p50": round(nearest_rank(ordered, 0.50), 3),
        "p99": round(nearest_rank(ordered, 0.99), 3),
    }
