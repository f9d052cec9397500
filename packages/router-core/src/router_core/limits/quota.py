"""Request and token quotas: at most `limit` units per calendar window.

Rules:
- The state is the units `used` in the current window (see `windows`); an
  absent key is 0, so a new window starts empty.
- A cost is admitted iff used + cost <= limit (computed as
  cost <= limit - used), and then used grows by cost.
  A denial, or a cost of 0 (a peek), leaves `used` as it was, so `used`
  never exceeds `limit` through this function.
- Integers only; the Redis script repeats the same comparison and addition.
"""

from __future__ import annotations

import attrs

from router_core.limits.integers import require_int


@attrs.frozen
class QuotaResult:
    allowed: bool
    new_used: int
    # Units still available in this window after the decision.
    remaining: int


def quota_check(used: int, cost: int, limit: int) -> QuotaResult:
    require_int("used", used, 0)
    require_int("cost", cost, 0)
    require_int("limit", limit, 0)
    # Subtract rather than add: every operand and result stays below 2**53.
    allowed = cost <= limit - used
    new_used = used + cost if allowed else used
    return QuotaResult(allowed, new_used, max(0, limit - new_used))
