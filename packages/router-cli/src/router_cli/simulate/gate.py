"""Admission and settlement of one request's limits, as the router does them.

The same sequence as `router_server.limits.LimitGate` with the memory store,
synchronously and on the simulation's clock:
- plan the request's limits (worst-case costs) and admit it in one step;
- under `max_tokens_policy: clamp`, a budget refusal is retried with the
  max_tokens the budget still affords (at most three times);
- when the request ends, every hold is replaced by the actual amount: the
  request if served, its tokens and their cost (nothing if not served).
The trace knows tokens, not text: the prompt's bound is its tokens plus the
router's per-request allowance.
"""

from __future__ import annotations

from collections.abc import Callable

from router_cli.simulate.ledger import Ledger, Refusal
from router_cli.simulate.trace import TraceRecord
from router_core.config import Limits, RouterConfig
from router_core.limits.admission import LimitType
from router_core.limits.budget import max_affordable_tokens
from router_core.limits.ledger import Hold
from router_core.limits.plan import (
    PER_REQUEST_TOKENS,
    LimitPlan,
    actuals,
    limit_scopes,
    plan_for,
)
from router_core.usage import TokenUsage

Planner = Callable[[int | None], LimitPlan]
Scopes = tuple[tuple[str, Limits], ...]
# Plans kept at most; the cache starts again when full.
PLAN_CACHE = 100_000


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


class Gate:
    """The limits of every request of a simulation, on one ledger.

    Scopes are computed once per (organization, key, model) and plans once per
    (organization, key, model, prompt tokens, max_tokens): both are immutable
    and depend on nothing else, and a trace repeats them a great deal."""

    def __init__(self, config: RouterConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        self._scopes: dict[tuple[str, str, str], Scopes] = {}
        self._plans: dict[tuple[object, ...], LimitPlan] = {}

    def applies(self, org: str, key_id: str | None, model: str) -> bool:
        return bool(self._scopes_of(org, key_id, model))

    def admit(
        self, org: str, key_id: str | None, record: TraceRecord, request_id: str, now_us: int
    ) -> tuple[LimitPlan, Refusal | None, tuple[Hold, ...]]:
        scopes = self._scopes_of(org, key_id, record.model)
        base = (org, key_id, record.model, record.prompt_tokens)
        embedding = record.operation == "embedding"

        def plan(max_tokens: int | None) -> LimitPlan:
            key = (*base, max_tokens, embedding)
            cached = self._plans.get(key)
            if cached is None:
                if len(self._plans) >= PLAN_CACHE:
                    self._plans.clear()
                cached = plan_for(
                    self.config, scopes, record.model,
                    prompt_bound=record.prompt_tokens + PER_REQUEST_TOKENS,
                    max_tokens=max_tokens, embedding=embedding,
                )  # fmt: skip
                self._plans[key] = cached
            return cached

        return admit(self.ledger, self.config, plan, request_id, record.max_tokens, now_us)

    def settle(
        self,
        plan: LimitPlan,
        holds: tuple[Hold, ...],
        usage: TokenUsage | None,
        *,
        served: bool,
        now_us: int,
    ) -> None:
        if holds:
            self.ledger.settle(holds, actuals(plan, holds, usage, served=served), now_us)

    def _scopes_of(self, org: str, key_id: str | None, model: str) -> Scopes:
        cache_key = (org, key_id or "", model)
        scopes = self._scopes.get(cache_key)
        if scopes is None:
            scopes = limit_scopes(self.config, org, key_id or "", model)
            self._scopes[cache_key] = scopes
        return scopes
