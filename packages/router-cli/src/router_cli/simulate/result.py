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
    # Modelled time to first token of each served request, by backend.
    ttft_ms: dict[str, list[float]] = attrs.field()
    first_ts_us: int | None = None
    last_ts_us: int | None = None
    # When the last attempt ended (the simulated span runs to it).
    last_end_us: int | None = None
    # Model servers only: slots, slot-µs in use, prompt tokens started and
    # the share of them found in the prefix cache.
    slots: dict[str, int] = attrs.field(factory=dict)
    busy_us: Counter[str] = attrs.field(factory=Counter)
    prompt_tokens: Counter[str] = attrs.field(factory=Counter)
    cached_tokens: Counter[str] = attrs.field(factory=Counter)

    @latencies_ms.default
    def _no_latencies(self) -> dict[str, list[float]]:
        return {name: [] for name in self.backends}

    @ttft_ms.default
    def _no_ttft(self) -> dict[str, list[float]]:
        return {name: [] for name in self.backends}

    def utilisation(self, backend: str) -> float | None:
        """Share of the server's slot-time in use from the first arrival to the last end."""
        slots = self.slots.get(backend)
        if slots is None or self.first_ts_us is None:
            return None
        span = max(self.last_end_us or 0, self.last_ts_us or 0) - self.first_ts_us
        return round(self.busy_us[backend] / (slots * span), 4) if span > 0 else 0.0

    def cache_hit_rate(self, backend: str | None = None) -> float | None:
        """Share of prompt tokens found in the prefix cache (None: no model server)."""
        if not self.slots:
            return None
        names = [backend] if backend is not None else list(self.slots)
        prompt = sum(self.prompt_tokens[n] for n in names)
        cached = sum(self.cached_tokens[n] for n in names)
        return round(cached / prompt, 4) if prompt else 0.0

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
                    "ttft_ms": percentiles(self.ttft_ms[name]),
                    "utilisation": self.utilisation(name),
                    "cache_hit_rate": self.cache_hit_rate(name) if name in self.slots else None,
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
            "ttft_ms": percentiles([v for values in self.ttft_ms.values() for v in values]),
            "cache_hit_rate": self.cache_hit_rate(),
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
