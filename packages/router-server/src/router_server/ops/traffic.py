"""The last minutes of traffic for the operator page, in 10-second buckets.

Rules:
- Fed by the same calls as the metrics (`Ops`), one per answered request: its
  usage record, or `observe_unrecorded` for an answer without one (refused
  before authentication: a spike of 401s must show).
- A bucket counts requests by category: "ok", or the problem code of the
  answer (a bounded set: the core's catalog). Buckets older than the five
  minutes shown are dropped as new ones start, so memory stays bounded.
- Spend and limit denials per organization are totals since the process
  started (the page shows the top organizations).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from router_core.accounting.records import UsageRecord
from router_server.metrics import LIMIT_CODES
from router_server.usage.trace import Unrecorded

BUCKET_S = 10
BUCKETS = 30  # five minutes


class RecentTraffic:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: deque[tuple[int, dict[str, int]]] = deque(maxlen=BUCKETS)
        self.spend_usd: dict[str, float] = {}
        self.denials: dict[str, dict[str, int]] = {}

    def observe(self, record: UsageRecord) -> None:
        self._count(record.reason, record.status)
        if record.cost_nano_usd:
            org = record.organization
            self.spend_usd[org] = self.spend_usd.get(org, 0.0) + record.cost_nano_usd / 1e9
        limit_type = LIMIT_CODES.get(record.reason or "")
        if limit_type is not None:
            by_type = self.denials.setdefault(record.organization, {})
            by_type[limit_type] = by_type.get(limit_type, 0) + 1

    def observe_unrecorded(self, answer: Unrecorded) -> None:
        self._count(answer.code, answer.status)

    def _count(self, code: str | None, status: int) -> None:
        index = int(self.clock() // BUCKET_S)
        if not self.buckets or self.buckets[-1][0] != index:
            self.buckets.append((index, {}))
        counts = self.buckets[-1][1]
        category = code or ("ok" if status < 400 else f"http_{status}")
        counts[category] = counts.get(category, 0) + 1

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        now_index = int(self.clock() // BUCKET_S)
        recent = {index: counts for index, counts in self.buckets}
        series: list[dict[str, Any]] = [
            {"ago_s": (now_index - index) * BUCKET_S, "counts": dict(recent.get(index, {}))}
            for index in range(now_index - BUCKETS + 1, now_index + 1)
        ]
        categories = sorted({c for point in series for c in point["counts"]})
        spend = sorted(self.spend_usd.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return {
            "bucket_s": BUCKET_S,
            "categories": categories,
            "series": series,
            "top_spend": [{"organization": o, "usd": round(v, 6)} for o, v in spend],
            "denials": [
                {"organization": org, "limit_type": kind, "count": n}
                for org, kinds in sorted(self.denials.items())
                for kind, n in sorted(kinds.items())
            ],
        }
