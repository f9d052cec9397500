"""Admission and settlement against the in-memory ledger, as the router does them.

The same sequence as `router_server.limits.LimitGate` with the memory store,
synchronously and on the simulation's clock:
- plan the request's limits (worst-case costs) and admit it in one step;
- under `max_tokens_policy: clamp`, a budget denial is retried with the
  max_tokens the budget still affords (at most three times);
- when the request ends, every hold is replaced by the actual amount: the
  request if served, its tokens and their cost (nothing if not served).
"""

from __future__ import annotations

from collections.abc import Callable

from router_core.config import RouterConfig
from router_core.limits.admission import LimitType
from router_core.limits.budget import max_affordable_tokens
from router_core.limits.ledger import Admission, MemoryLedger
from router_core.limits.plan import LimitPlan, actuals
from router_core.usage import TokenUsage

Planner = Callable[[int | None], LimitPlan]


def admit(
    ledger: MemoryLedger,
    config: RouterConfig,
    plan: Planner,
    request_id: str,
    max_tokens: int | None,
    now_us: int,
) -> tuple[LimitPlan, Admission]:
    """The plan the request was admitted (or denied) under, and the ledger's verdict.

    `plan(max_tokens)` is `plan_for` bound to the request (the simulator caches it)."""
    planned = plan(max_tokens)
    admission = ledger.admit(request_id, planned.specs, now_us)
    if admission.allowed or config.limits.max_tokens_policy != "clamp" or planned.price is None:
        return planned, admission
    for _ in range(3):
        denial = admission.decision.denied_by
        if denial is None or denial.limit_type is not LimitType.BUDGET:
            break
        affordable = max_affordable_tokens(
            planned.price, planned.prompt_bound, denial.limit - denial.current_usage
        )
        if affordable is None or affordable < 1 or planned.max_tokens is None:
            break
        if affordable >= planned.max_tokens:
            break
        planned = plan(affordable)
        admission = ledger.admit(request_id, planned.specs, now_us)
    return planned, admission


def settle(
    ledger: MemoryLedger,
    plan: LimitPlan,
    admission: Admission,
    usage: TokenUsage | None,
    *,
    served: bool,
    now_us: int,
) -> None:
    holds = admission.holds
    if holds:
        ledger.settle(holds, actuals(plan, holds, usage, served=served), now_us)
