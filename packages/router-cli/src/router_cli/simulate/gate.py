"""Admission and settlement of one request's limits, as the router does them.

The same sequence as `router_server.limits.LimitGate` with the memory store,
synchronously and on the simulation's clock:
- plan the request's limits (worst-case costs) and admit it in one step;
- under `max_tokens_policy: clamp`, a budget refusal is retried with the
  max_tokens the budget still affords (at most three times);
- when the request ends, every hold is replaced by the actual amount: the
  request if served, its tokens and their cost (nothing if not served).
"""

from __future__ import annotations

from collections.abc import Callable

from router_cli.simulate.ledger import Ledger, Refusal
from router_core.config import RouterConfig
from router_core.limits.admission import LimitType
from router_core.limits.budget import max_affordable_tokens
from router_core.limits.ledger import Hold
from router_core.limits.plan import LimitPlan, actuals
from router_core.usage import TokenUsage

Planner = Callable[[int | None], LimitPlan]


def admit(
    ledger: Ledger,
    config: RouterConfig,
    plan: Planner,
    request_id: str,
    max_tokens: int | None,
    now_us: int,
) -> tuple[LimitPlan, Refusal | None, tuple[Hold, ...]]:
    """The plan the request was admitted (or refused) under, why not, and its holds.

    `plan(max_tokens)` is `plan_for` bound to the request (the simulator caches it)."""
    planned = plan(max_tokens)
    refusal, holds = ledger.admit(request_id, planned.specs, now_us)
    if refusal is None or config.limits.max_tokens_policy != "clamp" or planned.price is None:
        return planned, refusal, holds
    for _ in range(3):
        if refusal is None or refusal.limit_type is not LimitType.BUDGET or planned.price is None:
            break
        affordable = max_affordable_tokens(
            planned.price, planned.prompt_bound, refusal.limit - refusal.current_usage
        )
        if affordable is None or affordable < 1 or planned.max_tokens is None:
            break
        if affordable >= planned.max_tokens:
            break
        planned = plan(affordable)
        refusal, holds = ledger.admit(request_id, planned.specs, now_us)
    return planned, refusal, holds


def settle(
    ledger: Ledger,
    plan: LimitPlan,
    holds: tuple[Hold, ...],
    usage: TokenUsage | None,
    *,
    served: bool,
    now_us: int,
) -> None:
    if holds:
        ledger.settle(holds, actuals(plan, holds, usage, served=served), now_us)
