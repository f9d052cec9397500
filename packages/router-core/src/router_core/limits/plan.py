"""From config and request to the limit specs a request is admitted against.

Rules:
- Three scopes, each with the same kinds of limit: the organization, the
  API key, or for an OIDC user the user (from `user_limits`), and the
  organization on one model. Every scope lies within the organization, so a
  store can keep one request's state together (a Redis Cluster hash slot).
- Limits are named by typed `LimitKey`s (scope, measure, window); the
  stores spell them (`ledger.storage_key`).
- Costs are worst cases, known before the backend answers: one request; and
  `prompt bound + max_tokens` tokens, priced at the model's input and output
  prices. The prompt bound counts UTF-8 bytes of the text (a token is never
  shorter than a byte) plus a per-message allowance, so it never undercounts.
- When a token or spend limit applies and the request has no `max_tokens`,
  the plan sets `default_max_tokens`, which the router then sends to the
  backend: a reservation is only an upper bound if generation is capped.
- Token-rate limits charge the worst case at admission and are not refunded
  (GCRA has no refund); quotas and budgets are held and settled to the
  actual amounts (`actuals`).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from router_core.config import (
    PERIOD_US,
    Limits,
    ModelPrice,
    RateLimit,
    RouterConfig,
)
from router_core.limits.budget import (
    NANOS_PER_USD,
    Price,
    cost,
    price_from_usd_per_million,
    worst_case,
)
from router_core.limits.gcra import GcraLimit
from router_core.limits.integers import MAX_SAFE_INTEGER
from router_core.limits.ledger import Hold, Spec, rate_spec, window_spec
from router_core.limits.scopes import LimitKey, Measure, Scope, ScopeKind
from router_core.limits.windows import WindowKind
from router_core.requests import InferenceRequest, Operation
from router_core.usage import TokenUsage

PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 8


@attrs.frozen
class LimitPlan:
    specs: tuple[Spec, ...]
    # The max_tokens the backend must be held to, or None to leave the request as is.
    max_tokens: int | None
    prompt_bound: int
    price: Price | None

    @property
    def empty(self) -> bool:
        return not self.specs


def _text_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, int) and not isinstance(value, bool):
        return 1  # a token id
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_text_bytes(v) for k, v in value.items() if k != "type")
    return 0


def prompt_bound(request: InferenceRequest) -> int:
    """An upper bound of the request's prompt tokens."""
    body = request.body
    operation = request.operation
    if operation is Operation.CHAT or operation is Operation.MESSAGES:
        messages = body.get("messages") or []
        bound = PER_REQUEST_TOKENS + sum(
            PER_MESSAGE_TOKENS + _text_bytes(m) for m in messages if isinstance(m, Mapping)
        )
        if operation is Operation.MESSAGES:  # its system prompt and tools are apart
            bound += PER_MESSAGE_TOKENS + _text_bytes(body.get("system"))
            bound += _text_bytes(body.get("tools"))
        return bound
    if operation is Operation.RESPONSES:
        items = body.get("input")
        count = len(items) if isinstance(items, list) else 1
        return (
            PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * (count + 1)
            + _text_bytes(items) + _text_bytes(body.get("instructions"))
            + _text_bytes(body.get("tools"))
        )  # fmt: skip
    field = "prompt" if operation is Operation.COMPLETION else "input"
    return PER_REQUEST_TOKENS + _text_bytes(body.get(field))


def outstanding_tokens(request: InferenceRequest, default_max_tokens: int) -> int:
    """The tokens a request in flight holds of its backend (`least_load`): its
    prompt bound plus its most output (`default_max_tokens` when it sets no
    max_tokens; nothing for an embedding)."""
    bound = prompt_bound(request)
    if request.operation is Operation.EMBEDDING:
        return bound
    most = request.max_tokens if request.max_tokens is not None else default_max_tokens
    return min(bound + most, MAX_SAFE_INTEGER)


# Cached: a config has a handful of prices and rates, and the conversions (exact
# decimal scaling, span checks) would otherwise run again for every request.
@functools.lru_cache(maxsize=1024)
def price_of(model: ModelPrice) -> Price:
    return price_from_usd_per_million(
        model.input, model.output, model.cache_read, model.cache_write
    )


def _scopes(config: RouterConfig, caller: Scope, model: str) -> list[tuple[Scope, Limits]]:
    organization = caller.organization
    org = config.organizations[organization]
    scopes = [(Scope(organization), org.limits)]
    if caller.kind is ScopeKind.KEY:
        key = next((k for k in org.keys if k.id == caller.id), None)
        if key is not None:
            scopes.append((caller, key.limits))
    elif caller.kind is ScopeKind.USER:
        # Each OIDC user of the organization has limits of its own.
        scopes.append((caller, org.user_limits))
    model_limits = org.model_limits.get(model)
    if model_limits is not None:
        scopes.append((Scope.model(organization, model), model_limits))
    return scopes


def _uses_tokens(limits: Limits) -> bool:
    quotas = limits.quotas
    return (
        limits.tokens is not None
        or quotas.tokens_per_day is not None
        or quotas.tokens_per_month is not None
        or limits.budget.configured
    )


@functools.lru_cache(maxsize=1024)
def _gcra(limit: RateLimit) -> GcraLimit:
    return GcraLimit(limit.rate, PERIOD_US[limit.per], limit.burst or limit.rate)


class _Cost(enum.Enum):
    """What a planned limit is charged at admission: the request, its worst-case
    tokens, or their worst-case cost."""

    REQUEST = "request"
    TOKENS = "tokens"
    SPEND = "spend"


# One limit of a scope, but its cost: how to make its spec, its key, its limit,
# and what it is charged.
_Planned = tuple[Callable[[LimitKey, Any, int], Spec], LimitKey, Any, _Cost]


# Cached: a scope's limits come from the config, and only the costs differ from
# one request to the next. The keys are then the same objects every time, so
# the stores' lookups by key (`ledger.storage_key`, the Redis layouts) find
# them by identity.
@functools.lru_cache(maxsize=4096)
def _planned(scope: Scope, limits: Limits) -> tuple[_Planned, ...]:
    planned: list[_Planned] = []
    if limits.requests is not None:
        key = LimitKey(scope, Measure.REQUESTS)
        planned.append((rate_spec, key, _gcra(limits.requests), _Cost.REQUEST))
    if limits.tokens is not None:
        key = LimitKey(scope, Measure.TOKENS)
        planned.append((rate_spec, key, _gcra(limits.tokens), _Cost.TOKENS))
    quotas = limits.quotas
    for measure, window, limit, charged in (
        (Measure.REQUESTS, WindowKind.DAY, quotas.requests_per_day, _Cost.REQUEST),
        (Measure.REQUESTS, WindowKind.MONTH, quotas.requests_per_month, _Cost.REQUEST),
        (Measure.TOKENS, WindowKind.DAY, quotas.tokens_per_day, _Cost.TOKENS),
        (Measure.TOKENS, WindowKind.MONTH, quotas.tokens_per_month, _Cost.TOKENS),
    ):
        if limit is not None:
            # The config does not bound a quota; one past 2**53 - 1 cannot be
            # reached either, so it is kept at that, where the arithmetic is exact.
            key = LimitKey(scope, measure, window)
            planned.append((window_spec, key, min(limit, MAX_SAFE_INTEGER), charged))
    budget = limits.budget
    for window, usd in (
        (WindowKind.DAY, budget.per_day),
        (WindowKind.MONTH, budget.per_month),
        (WindowKind.TOTAL, budget.total),
    ):
        if usd is not None:
            key = LimitKey(scope, Measure.USD, window)
            planned.append((window_spec, key, int(usd * NANOS_PER_USD), _Cost.SPEND))
    return tuple(planned)


def limit_scopes(
    config: RouterConfig, caller: Scope, model: str
) -> tuple[tuple[Scope, Limits], ...]:
    """The scopes with limits that a request of `caller` (an API key, an OIDC user,
    or the organization itself) for `model` is subject to.

    Depends only on the config and these two values, so a caller replaying many
    requests (the simulator) can compute it once per combination.
    """
    return tuple((s, lim) for s, lim in _scopes(config, caller, model) if lim != Limits())


def plan_limits(
    config: RouterConfig,
    caller: Scope,
    request: InferenceRequest,
    *,
    max_tokens: int | None = None,
) -> LimitPlan:
    """The specs of every limit `request` is subject to, at its worst-case costs.

    `max_tokens` overrides the request's own (the clamp policy's later tries).
    """
    scopes = limit_scopes(config, caller, request.model)
    if not scopes:
        return LimitPlan((), None, 0, None)
    requested = max_tokens if max_tokens is not None else request.max_tokens
    return plan_for(
        config,
        scopes,
        request.model,
        prompt_bound=prompt_bound(request),
        max_tokens=requested,
        embedding=request.operation is Operation.EMBEDDING,
    )


def plan_for(
    config: RouterConfig,
    scopes: Sequence[tuple[Scope, Limits]],
    model: str,
    *,
    prompt_bound: int,
    max_tokens: int | None,
    embedding: bool = False,
) -> LimitPlan:
    """The plan for a request of `model` under `scopes` (from `limit_scopes`), given
    its prompt's bound and its max_tokens (None: not set by the caller)."""
    if not scopes:
        return LimitPlan((), None, 0, None)
    bound = prompt_bound
    model_price = config.prices.get(model)
    price = price_of(model_price) if model_price is not None else None
    enforce_tokens = any(_uses_tokens(lim) for _, lim in scopes)
    output_cap: int | None = None
    completion = 0
    if not embedding and enforce_tokens:
        completion = max_tokens if max_tokens is not None else config.limits.default_max_tokens
        output_cap = completion
    # Saturated, as costs are (see `budget`): a worst case past 2**53 is past
    # every limit either way.
    tokens = min(bound + completion, MAX_SAFE_INTEGER)
    spend = worst_case(price, bound, completion) if price is not None else 0
    costs = {_Cost.REQUEST: 1, _Cost.TOKENS: tokens, _Cost.SPEND: spend}
    specs = [
        make(key, limit, costs[charged])
        for scope, limits in scopes
        for make, key, limit, charged in _planned(scope, limits)
        # A budget applies once the model has a price.
        if price is not None or charged is not _Cost.SPEND
    ]
    return LimitPlan(tuple(specs), output_cap, bound, price)


def measure_of(hold: Hold) -> Measure:
    """What `hold` counts: requests, tokens or nano-USD."""
    key = hold.spec_key
    if not isinstance(key, LimitKey):
        raise TypeError(f"the hold on {hold.key!r} was not planned: what it counts is unknown")
    return key.measure


def actuals(
    plan: LimitPlan, holds: Sequence[Hold], usage: TokenUsage | None, *, served: bool
) -> list[int]:
    """What each hold settles to: the request if served, its tokens and their cost."""
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    spent = 0
    if plan.price is not None:
        spent = cost(plan.price, prompt, completion, *_cache(usage))
    tokens = min(prompt + completion, MAX_SAFE_INTEGER)
    values = {Measure.REQUESTS: 1 if served else 0, Measure.TOKENS: tokens, Measure.USD: spent}
    return [values[measure_of(h)] for h in holds]


def _cache(usage: TokenUsage | None) -> tuple[int, int]:
    return (usage.cached_tokens, usage.cache_write_tokens) if usage else (0, 0)


def usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def with_max_tokens(
    body: Mapping[str, Any], max_tokens: int, operation: Operation = Operation.CHAT
) -> dict[str, Any]:
    """The forwarded body, held to `max_tokens` (in the field the client used,
    or the one its protocol has)."""
    if operation is Operation.RESPONSES:
        field = "max_output_tokens"
    elif "max_completion_tokens" in body:
        field = "max_completion_tokens"
    else:
        field = "max_tokens"
    return {**body, field: max_tokens}
