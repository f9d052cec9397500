"""Admission and settlement of one request's limits, as the router does them.

The same sequence as `router_server.limits.LimitGate` with the memory store,
synchronously and on the simulation's clock:
- plan the request's limits (worst-case costs) and admit it in one step;
- under `max_tokens_policy: clamp`, a budget refusal is retried with the
  max_tokens the budget still affords (`router_core.limits.clamp`, the
  router's own);
- when the request ends, every hold is replaced by the actual amount: the
  request if served, its tokens and their cost (nothing if not served).
The trace knows tokens, not text: the prompt's bound is its tokens plus the
router's per-request allowance.
"""

from __future__ import annotations

from collections.abc import Callable

from router_cli.simulate.ledger import LimitLedger, Refusal
from router_cli.simulate.trace import TraceRecord
from router_core.config import Limits, RouterConfig
from router_core.limits.clamp import Clamp
from router_core.limits.ledger import Hold
from router_core.limits.plan import (
    PER_REQUEST_TOKENS,
    LimitPlan,
    actuals,
    limit_scopes,
    plan_for,
)
from router_core.limits.scopes import Scope
from router_core.usage import TokenUsage

Planner = Callable[[int | None], LimitPlan]
Scopes = tuple[tuple[Scope, Limits], ...]
# Plans kept at most; the cache starts again when full.
PLAN_CACHE = 100_000


def admit(
    ledger: LimitLedger,
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
    if refusal is None:
        return planned, refusal, holds
    clamp = Clamp(config.limits.max_tokens_policy)
    while (tokens := clamp.next(planned, refusal)) is not None:
        planned = plan(tokens)
        refusal, holds = ledger.admit(request_id, planned.specs, now_us)
    return planned, refusal, holds


class SimLimitGate:
    """The limits of every request of a simulation, on one ledger.

    Scopes are computed once per (caller, model) and plans once per (caller,
    model, prompt tokens, max_tokens): both are immutable and depend on nothing
    else, and a trace repeats them a great deal. The caller is the scope of a
    key's own limits, or the organization for a trace line without a key."""

    def __init__(self, config: RouterConfig, ledger: LimitLedger) -> None:
        self.config = config
        self.ledger = ledger
        self._scopes: dict[tuple[Scope, str], Scopes] = {}
        self._plans: dict[tuple[object, ...], LimitPlan] = {}

    def applies(self, caller: Scope, model: str) -> bool:
        return bool(self._scopes_of(caller, model))

    def admit(
        self, caller: Scope, record: TraceRecord, request_id: str, now_us: int
    ) -> tuple[LimitPlan, Refusal | None, tuple[Hold, ...]]:
        scopes = self._scopes_of(caller, record.model)
        base = (caller, record.model, record.prompt_tokens)
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

    def _scopes_of(self, caller: Scope, model: str) -> Scopes:
        cache_key = (caller, model)
        scopes = self._scopes.get(cache_key)
        if scopes is None:
            scopes = limit_scopes(self.config, caller, model)
            self._scopes[cache_key] = scopes
        return scopes
