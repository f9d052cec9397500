"""The pure half of `router loadtest`: the schedule, percentiles, and the
judgement of a run against the SLOs. No I/O and no clock: the runner passes
in what it measured.

Rules:
- Open loop: request `i` is due `i / rate` seconds after the start, for every
  `i` with `i / rate < duration`; when it is sent does not depend on any
  earlier answer. One that cannot be sent when due (the bound on requests in
  flight is reached) is *unsent*, never sent late: a late send would hide the
  deployment's queueing from the figures (coordinated omission).
- Latency is the client's, from the request's due time to the end of the
  answer (a stream: to its first event). With `exclude_backend`, the
  backend's share the router reports (`Server-Timing: backend;dur=`) is taken
  off; an answer without it counts whole, an upper bound.
- Percentiles are by nearest rank: the smallest value with at least q of
  the values at or below it.
- The latency SLOs are judged on the answers that succeeded; errors (any
  status but 2xx, a transport failure, a stream that ended without
  `[DONE]`) are the error rate's, over the requests sent.
- An SLO with no sample to judge by fails ("no data"): a run that cannot
  show a target is met does not pass. Every threshold is inclusive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

# The seed plan's performance goals (specs' plan.md): p95 latency and router overhead.
DEFAULT_P95_MS = 400.0
DEFAULT_ROUTER_MS = 150.0
# The seed sets no error-rate number; 1% keeps a smoke-sized run honest (the
# example alert pages at 5% of 5xx over five minutes).
DEFAULT_MAX_ERROR_RATE = 0.01
DEFAULT_QUANTILE = 0.95


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) of ascending, non-empty `ordered`, by nearest rank."""
    if not ordered:
        raise ValueError("no values")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def due_offsets(rate: float, duration_s: float) -> Iterator[float]:
    """Seconds after the start at which each request is due."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    count = math.ceil(rate * duration_s - 1e-9)
    for i in range(count):
        yield i / rate


@attrs.frozen
class Sample:
    """One request sent: how it ended, and its times in ms."""

    latency_ms: float
    error: str | None = None  # None: a success; else what went wrong, e.g. "503 overloaded"
    router_ms: float | None = None  # Server-Timing's router;dur, when the answer had it
    backend_ms: float | None = None  # Server-Timing's backend;dur

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class Targets:
    p95_ms: float = DEFAULT_P95_MS
    router_ms: float = DEFAULT_ROUTER_MS
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    quantile: float = attrs.field(default=DEFAULT_QUANTILE)
    exclude_backend: bool = True

    @quantile.validator
    def _between(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not 0 < value <= 1:
            raise ValueError(f"quantile must be in (0, 1], not {value}")


@attrs.frozen
class Verdict:
    slo: str  # latency | router_overhead | error_rate | schedule
    passed: bool
    measured: float | None  # None: no data
    threshold: float
    detail: str


def judged_latency(sample: Sample, exclude_backend: bool) -> float:
    if exclude_backend and sample.backend_ms is not None:
        return max(0.0, sample.latency_ms - sample.backend_ms)
    return sample.latency_ms


def _quantile_verdict(
    slo: str, values: list[float], threshold: float, q: float, what: str
) -> Verdict:
    label = f"p{q * 100:g}"
    if not values:
        return Verdict(slo, False, None, threshold, f"{what}: no data")
    measured = round(nearest_rank(sorted(values), q), 3)
    return Verdict(
        slo,
        measured <= threshold,
        measured,
        threshold,
        f"{what} {label} {measured:g} ms (target <= {threshold:g} ms, {len(values)} answers)",
    )


def judge(samples: Sequence[Sample], unsent: int, targets: Targets) -> tuple[Verdict, ...]:
    """One verdict per SLO, in a fixed order."""
    ok = [s for s in samples if s.ok]
    share = "backend share excluded" if targets.exclude_backend else "end to end"
    whole = sum(
        1 for s in ok if targets.exclude_backend and s.backend_ms is None
    )  # counted whole: no Server-Timing
    latency = _quantile_verdict(
        "latency",
        [judged_latency(s, targets.exclude_backend) for s in ok],
        targets.p95_ms,
        targets.quantile,
        f"latency ({share})",
    )
    if whole:
        latency = attrs.evolve(
            latency, detail=f"{latency.detail}; {whole} without Server-Timing, counted whole"
        )
    router = [s.router_ms for s in ok if s.router_ms is not None]
    overhead = _quantile_verdict(
        "router_overhead", router, targets.router_ms, targets.quantile, "router-added latency"
    )
    if not router and ok:
        overhead = attrs.evolve(
            overhead, detail="router-added latency: no data (no answer carried Server-Timing)"
        )
    errors = sum(1 for s in samples if not s.ok)
    if samples:
        rate = errors / len(samples)
        error_rate = Verdict(
            "error_rate",
            rate <= targets.max_error_rate,
            round(rate, 6),
            targets.max_error_rate,
            f"error rate {rate:.2%} ({errors} of {len(samples)}; target <= "
            f"{targets.max_error_rate:.2%})",
        )
    else:
        error_rate = Verdict(
            "error_rate", False, None, targets.max_error_rate, "error rate: no request sent"
        )
    scheduled = len(samples) + unsent
    schedule = Verdict(
        "schedule",
        unsent == 0,
        float(unsent),
        0.0,
        f"{len(samples)} of {scheduled} requests sent when due"
        + (f"; {unsent} could not be (too many in flight)" if unsent else ""),
    )
    return latency, overhead, error_rate, schedule


def _quantiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        name: (round(nearest_rank(ordered, q), 3) if ordered else None)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    } | {"max": round(ordered[-1], 3) if ordered else None}


def summary(
    samples: Sequence[Sample],
    unsent: int,
    targets: Targets,
    verdicts: Sequence[Verdict],
    *,
    rate: float,
    duration_s: float,
) -> dict[str, Any]:
    """The run as plain data: the `--format json` output."""
    ok = [s for s in samples if s.ok]
    return {
        "passed": all(v.passed for v in verdicts),
        "rate": rate,
        "duration_s": duration_s,
        "requests": {
            "scheduled": len(samples) + unsent,
            "sent": len(samples),
            "unsent": unsent,
            "ok": len(ok),
            "errors": len(samples) - len(ok),
        },
        "errors_by_kind": dict(Counter(s.error for s in samples if s.error is not None)),
        "latency_ms": {
            "end_to_end": _quantiles([s.latency_ms for s in ok]),
            "judged": _quantiles([judged_latency(s, targets.exclude_backend) for s in ok]),
            "router": _quantiles([s.router_ms for s in ok if s.router_ms is not None]),
            "backend": _quantiles([s.backend_ms for s in ok if s.backend_ms is not None]),
        },
        "targets": attrs.asdict(targets),
        "slos": [attrs.asdict(v) for v in verdicts],
    }
