"""The clamp policy: a budget refusal tried again with the max_tokens the budget affords.

Rules:
- Only under `limits.max_tokens_policy: clamp`, and only a refusal by a
  budget (spend): any other refusal stands.
- The next max_tokens is what the budget has left, at the model's prices,
  after the prompt's bound (`budget.max_affordable_tokens`); the clamp stops
  when that is below one token, not below the plan's max_tokens (nothing to
  gain), or the plan has no price or no max_tokens.
- At most `MAX_TRIES` more tries: one per budget that may stand in the way
  (day, month, total), each clamping below the last.
- The router (`router_server.limits.LimitGate`) and `router simulate` both
  drive this one `Clamp`, against their own store.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from router_core.limits.admission import LimitType
from router_core.limits.budget import max_affordable_tokens
from router_core.limits.plan import LimitPlan

MAX_TRIES = 3
POLICY = "clamp"


class Refused(Protocol):
    """What a refusal says (an admission's `Denial`, the simulator's `Refusal`)."""

    @property
    def limit_type(self) -> LimitType: ...

    @property
    def limit(self) -> int: ...

    @property
    def current_usage(self) -> int: ...


@attrs.define
class Clamp:
    """One admission's clamping: ask `next` after each refusal."""

    # `limits.max_tokens_policy`
    policy: str
    tries: int = 0

    def next(self, plan: LimitPlan, refused: Refused | None) -> int | None:
        """The max_tokens to plan and admit again with, or None to stand by `refused`."""
        if refused is None or self.policy != POLICY or self.tries >= MAX_TRIES:
            return None
        if refused.limit_type is not LimitType.BUDGET:
            return None
        if plan.price is None or plan.max_tokens is None:
            return None
        left = refused.limit - refused.current_usage
        affordable = max_affordable_tokens(plan.price, plan.prompt_bound, left)
        if affordable is None or affordable < 1 or affordable >= plan.max_tokens:
            return None
        self.tries += 1
        return affordable
