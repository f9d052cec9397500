"""One request's state in the simulation, and its line of `--explain` output."""

from __future__ import annotations

from typing import Any

from router_cli.simulate.servers import Job
from router_cli.simulate.trace import TraceRecord
from router_core.attempts import AttemptPlan
from router_core.limits.budget import Price
from router_core.limits.ledger import Hold
from router_core.limits.plan import LimitPlan


class Request:
    """One request in flight (plain slots: there may be a million of them)."""

    __slots__ = (
        "affinity",
        "arrival_us",
        "attempts",
        "backend",
        "cached",
        "decision",
        "first_token_us",
        "holds",
        "job",
        "model",
        "org",
        "plan",
        "price",
        "queued_us",
        "record",
        "text",
        "tokens",
    )  # fmt: skip

    def __init__(self, record: TraceRecord, org: str) -> None:
        self.record = record
        self.org = org
        self.arrival_us = record.ts_us
        self.model = record.model
        self.plan: LimitPlan | None = None
        self.holds: tuple[Hold, ...] = ()
        self.price: Price | None = None
        # The attempt plan, and the backend of the attempt in flight.
        self.attempts: AttemptPlan | None = None
        self.backend = ""
        # Its prompt's text (built once, when a cache or affinity needs it).
        self.text: str | None = None
        # Its prompt tokens plus its max output: what it counts in outstanding tokens.
        self.tokens = 0
        self.affinity: tuple[str, ...] = ()
        # The attempt's job on a server, and when its first token comes.
        self.job: Job | None = None
        self.first_token_us = 0
        # On a server: how long its last attempt waited for a slot, and the
        # prompt tokens its cache spared (None: not on a server).
        self.queued_us = 0
        self.cached: int | None = None
        self.decision: dict[str, Any] | None = None

    def explanation(self, outcome: str, at: int) -> dict[str, Any]:
        """Its line of the `--explain` output, when it ends at `at` with `outcome`."""
        line = refused_line(self.record, outcome)
        if outcome == "served":
            line["backend"] = self.backend
            line["ttft_ms"] = (self.first_token_us - self.arrival_us) / 1000
            if self.cached is not None:
                line["queued_ms"] = self.queued_us / 1000
                line["cached_tokens"] = self.cached
        line["latency_ms"] = (at - self.arrival_us) / 1000
        if self.decision is not None:
            line["route"] = self.decision
        if self.attempts is not None and self.attempts.attempts > 1:
            line["attempts"] = self.attempts.attempts
        return line


def refused_line(record: TraceRecord, outcome: str) -> dict[str, Any]:
    """The `--explain` line of a request that never reached routing."""
    return {"line": record.line, "ts": record.ts_us / 1e6, "model": record.model,
            "outcome": outcome}  # fmt: skip
