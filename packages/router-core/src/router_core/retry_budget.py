"""A retry budget: retries may add at most a fixed share of load.

Rules:
- Every request deposits `ratio` tokens; time deposits `min_per_s` tokens a
  second, so a quiet router can still fail over. A retry (any attempt after
  a request's first) withdraws one token, and is refused when none is left.
- Over any period, retries <= ratio x requests + min_per_s x seconds + `cap`,
  the most that can be banked (ten seconds' worth of the floor, at least 10).
- `now` is monotonic seconds, passed in.
- `ratio` and `min_per_s` are read from `settings()` on every call (the
  running config's `routing`), so a reload changes them without patching a
  copy; the budget holds only its balance.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from router_core.config import RoutingSettings


@attrs.define
class RetryBudget:
    settings: Callable[[], RoutingSettings]
    balance: float = 0.0
    last: float | None = None

    @property
    def ratio(self) -> float:
        return self.settings().retry_budget_ratio

    @property
    def min_per_s(self) -> float:
        return self.settings().retry_min_per_s

    @property
    def cap(self) -> float:
        return max(10.0, 10.0 * self.min_per_s)

    def _refill(self, now: float) -> None:
        if self.last is None:
            self.balance = self.min_per_s
        elif now > self.last:
            self.balance = min(self.cap, self.balance + (now - self.last) * self.min_per_s)
        self.last = now if self.last is None else max(self.last, now)

    def request(self, now: float) -> None:
        self._refill(now)
        self.balance = min(self.cap, self.balance + self.ratio)

    def try_retry(self, now: float) -> bool:
        self._refill(now)
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False
