"""The limit gate: admit against the store, settle after the answer, render limits.

The math is router_core.limits; this module performs it against a store (the
in-memory ledger, or Redis shared by every replica) and applies the policies
a store cannot: clamping max_tokens to the budget left, and what to do when
the shared store does not answer in time.

Failure policy (`limits.on_store_failure`), per kind of limit:
- fail_open (rate limits' default): decide against this process's local
  share, the limit divided by `limits.expected_replicas` times the workers
  of a replica, so the total over all replicas stays bounded; quotas or
  budgets set to fail_open are skipped.
- fail_closed (quotas' and budgets' default): refuse with 503.
Every decision taken that way is counted in `failure_decisions`.

Settlement: a settlement the store does not take (`settle_failures`) goes to
the outbox on disk (`settlements`) before the usage record is written, and
is replayed until the store takes it; replays are harmless (a hold settles
once), so settled spend catches up with the usage records after any outage
or crash.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import anyio
import attrs

from router_core.accounting.records import TokenCounts
from router_core.config import RouterConfig
from router_core.config_enums import StateStoreKind
from router_core.limits import NEVER
from router_core.limits.admission import Decision, Denial, LimitType
from router_core.limits.clamp import Clamp
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import (
    Admission,
    AdmissionExpired,
    BudgetSpec,
    Hold,
    MemoryLedger,
    QuotaSpec,
    RateSpec,
    Spec,
)
from router_core.limits.plan import (
    LimitPlan,
    actuals,
    measure_of,
    plan_limits,
    usd,
    with_max_tokens,
)
from router_core.limits.scopes import LimitKey, Measure, Scope, ScopeKind
from router_core.limits.windows import WindowKind
from router_core.problems import Catalog, ClientError, DependencyError, Problem
from router_core.requests import InferenceRequest
from router_core.usage import TokenUsage
from router_server.settlements import SettlementOutbox
from router_server.state.errors import RAN_LATE, Store, StoreUnavailable

log = logging.getLogger("router.limits")

# A total budget never resets; a denial still says when to look again.
RETRY_NEVER_S = 86_400
# How often the outbox is offered to the store again, and how much at once.
REPLAY_EVERY_S = 1.0
REPLAY_BATCH = 256
# How often holds past their lifetime are looked for everywhere (admissions
# reap the windows they touch already), give or take a fifth, so replicas
# spread their scans.
REAP_EVERY_S = 60.0


class LimitStore(Protocol):
    async def admit(
        self,
        request_id: str,
        specs: Sequence[Spec],
        now_us: int | None = None,
        *,
        deadline_us: int | None = None,
    ) -> Admission: ...

    async def settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> None: ...

    def start_settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> Awaitable[None]:
        """`settle`, under way when this returns (so that it shares a round trip
        with what the caller sends next), applied when awaited; it must be awaited."""
        ...

    async def reap(self, now_us: int | None = None) -> int: ...


def now_us() -> int:
    return time.time_ns() // 1000


@attrs.define
class MemoryLimitStore:
    """The embedded default: one process's ledger, on this process's clock."""

    ledger: MemoryLedger = attrs.field(factory=MemoryLedger)
    clock: Callable[[], int] = now_us

    async def admit(
        self,
        request_id: str,
        specs: Sequence[Spec],
        now_us: int | None = None,
        *,
        deadline_us: int | None = None,
    ) -> Admission:
        """As `RedisLimitStore.admit`: past `deadline_us`, StoreUnavailable and no write."""
        now = self.clock() if now_us is None else now_us
        try:
            return self.ledger.admit(request_id, specs, now, deadline_us=deadline_us)
        except AdmissionExpired as exc:
            raise StoreUnavailable(Store.LIMITS, RAN_LATE) from exc

    async def settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> None:
        self.ledger.settle(holds, actuals, self.clock() if now_us is None else now_us)

    def start_settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> Awaitable[None]:
        return self.settle(holds, actuals, now_us)

    async def reap(self, now_us: int | None = None) -> int:
        return self.ledger.reap(self.clock() if now_us is None else now_us)


@attrs.define
class Ticket:
    """An admitted request: what to settle, and the headers it answers with."""

    plan: LimitPlan
    admission: Admission | None
    headers: Mapping[str, str]
    # The body to forward (max_tokens set when a reservation depends on it).
    body: Mapping[str, Any]


_DENIAL_PROBLEMS: dict[LimitType, Problem] = {
    LimitType.RATE_LIMIT: Catalog.RATE_LIMITED,
    LimitType.QUOTA: Catalog.QUOTA_EXCEEDED,
    LimitType.BUDGET: Catalog.BUDGET_EXCEEDED,
}


@attrs.define
class LimitGate:
    """Admission against the live counters. Keeps no config: each call gets the
    config its request was accepted under, so a reload never splits a request."""

    store: LimitStore
    # Which store was opened at start-up (`state.store` takes effect on restart).
    store_kind: StateStoreKind
    # Settlements the store did not take, kept until it does (None: the store
    # is this process's memory, which always takes them).
    outbox: SettlementOutbox | None = None
    # Rate limits of this replica alone, used while the shared store is down.
    local: MemoryLimitStore = attrs.field(factory=MemoryLimitStore)
    failure_decisions: int = 0
    # Of those: "late" (the decision started past its deadline, on Redis'
    # side), "failed" (Redis refused, reset, or did not answer: down).
    failure_causes: dict[str, int] = attrs.field(factory=dict)
    settle_failures: int = 0
    settlements_replayed: int = 0
    # Holds the background reaper found past their lifetime (never settled).
    reaped: int = 0
    # Settlements neither the store nor the outbox took (the disk failed too).
    settlements_lost: int = 0
    # Settlements put in the outbox because asyncio cancelled their request
    # while the store was asked: replayed, applied once.
    settlements_unconfirmed: int = 0
    # Router processes on this replica (`--workers`): each takes its share of
    # a replica's local share while the store is down.
    processes: int = 1

    async def admit(
        self, config: RouterConfig, request_id: str, caller: Scope, request: InferenceRequest
    ) -> Ticket:
        """Admit `request` of `caller` (its key, user or organization) or raise 429/402
        (or 503 when the store is down and the policy is fail_closed). The returned
        ticket must be settled."""
        plan = plan_limits(config, caller, request)
        if plan.empty:
            return Ticket(plan, None, {}, request.body)
        admission = await self._admit(config, request_id, plan)
        # Under the clamp policy, a budget denial is tried again with less max_tokens.
        clamp = Clamp(config.limits.max_tokens_policy)
        while (tokens := clamp.next(plan, admission.decision.denied_by)) is not None:
            plan = plan_limits(config, caller, request, max_tokens=tokens)
            admission = await self._admit(config, request_id, plan)
        headers = rate_headers(admission.decision)
        if not admission.allowed:
            denial = admission.decision.denied_by
            assert denial is not None
            raise denial_error(denial, headers)
        body = request.body
        if plan.max_tokens is not None and plan.max_tokens != request.max_tokens:
            body = with_max_tokens(body, plan.max_tokens, request.operation)
        return Ticket(plan, admission, headers, body)

    async def _admit(self, config: RouterConfig, request_id: str, plan: LimitPlan) -> Admission:
        try:
            return await self.store.admit(request_id, plan.specs)
        except StoreUnavailable as exc:
            return await self._admit_degraded(config, request_id, plan, exc)

    async def _admit_degraded(
        self, config: RouterConfig, request_id: str, plan: LimitPlan, exc: StoreUnavailable
    ) -> Admission:
        self.failure_decisions += 1
        cause = "late" if exc.detail == RAN_LATE else "failed"
        self.failure_causes[cause] = self.failure_causes.get(cause, 0) + 1
        policy = config.limits.on_store_failure
        kinds = {type(spec) for spec in plan.specs}
        closed = [
            name
            for name, kind, rule in (
                ("rate limits", RateSpec, policy.rate_limits),
                ("quotas", QuotaSpec, policy.quotas),
                ("budgets", BudgetSpec, policy.budgets),
            )
            if kind in kinds and rule == "fail_closed"
        ]
        log.warning("limit store unavailable", extra={"error": str(exc), "closed": closed})
        if closed:
            raise DependencyError(
                Catalog.LIMITS_UNAVAILABLE,
                f"Limits cannot be checked right now ({', '.join(closed)} are kept in a store "
                "that is not answering); try again shortly.",
                headers={"retry-after": "1"},
            )
        share = config.limits.expected_replicas * self.processes
        local_specs = [_local_share(s, share) for s in plan.specs if isinstance(s, RateSpec)]
        return await self.local.admit(request_id, local_specs)

    def start_settle(
        self, ticket: Ticket, counts: TokenCounts, served: bool
    ) -> Coroutine[Any, Any, None] | None:
        """Replace the ticket's holds by what was actually used: `counts` are the
        ones the request's usage record carries. Under way when this returns
        (`LimitStore.start_settle`): None when the ticket holds nothing, else a
        coroutine that must be awaited and raises nothing but asyncio's own
        cancel (a settlement the store refused, or one that cancel cut short,
        goes to the outbox)."""
        if ticket.admission is None or not ticket.admission.holds:
            return None
        holds = ticket.admission.holds
        used = TokenUsage(
            counts.prompt_tokens, counts.completion_tokens, counts.total_tokens,
            cached_tokens=counts.cached_tokens, cache_write_tokens=counts.cache_write_tokens,
        )  # fmt: skip
        amounts = actuals(ticket.plan, holds, used, served=served)
        # DEBUG: a line per request on top of the access line costs every
        # request tens of µs; the usage record carries the same counts.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("settled", extra={
                "request_id": holds[0].id,
                "served": served,
                "charged": {measure_of(h).value: a for h, a in zip(holds, amounts, strict=True)},
            })  # fmt: skip
        return self._settled(self.store.start_settle(holds, amounts), holds, amounts)

    async def _settled(
        self, settling: Awaitable[None], holds: Sequence[Hold], amounts: Sequence[int]
    ) -> None:
        try:
            await settling
        except StoreUnavailable as exc:
            self.settle_failures += 1
            log.warning("settle deferred", extra={"error": str(exc), "holds": len(holds)})
            await self._defer(holds, amounts)
        except asyncio.CancelledError:
            # asyncio's own cancel (hypercorn's, past its graceful timeout;
            # anyio's shield does not hold it): the outcome is unknown, so the
            # settlement is kept to replay, applied once either way (a hold
            # settles once), and the cancel goes on.
            self.settlements_unconfirmed += 1
            await self._defer(holds, amounts)
            raise

    async def _defer(self, holds: Sequence[Hold], amounts: Sequence[int]) -> None:
        if self.outbox is not None:
            try:
                await self.outbox.add(holds, amounts)
                return
            except StoreUnavailable as exc:
                log.error("settlement outbox failed", extra={"error": str(exc)})
        # The hold's lifetime then ends the reservation; the usage record (the
        # source of truth) still carries the actual amounts.
        self.settlements_lost += 1

    async def replay(self) -> int:
        """Offer the outbox's settlements to the store once; how many it took."""
        outbox = self.outbox
        if outbox is None or outbox.count == 0:
            return 0
        batch = await outbox.pending(REPLAY_BATCH)
        if not batch:
            outbox.count = 0
            return 0

        async def apply(holds: Sequence[Hold], actuals: Sequence[int]) -> bool:
            try:
                await self.store.settle(holds, actuals)
            except StoreUnavailable:
                return False
            return True

        done = await asyncio.gather(*(apply(p.holds, p.actuals) for p in batch))
        rows = [p.row for p, ok in zip(batch, done, strict=True) if ok]
        if rows:
            await outbox.applied(rows)
            self.settlements_replayed += len(rows)
            log.info("settlements replayed", extra={"count": len(rows), "left": outbox.count})
        return len(rows)

    async def replay_forever(self) -> None:
        """Replay the outbox every `REPLAY_EVERY_S` (at once on start-up: a
        router killed with settlements waiting finds them here)."""
        if self.outbox is None:
            return
        while True:
            try:
                while await self.replay() == REPLAY_BATCH:
                    pass
            except StoreUnavailable as exc:  # the outbox file itself
                log.error("settlement outbox unreadable", extra={"error": str(exc)})
            await anyio.sleep(REPLAY_EVERY_S)

    async def reap_forever(self, rng: random.Random, every_s: float = REAP_EVERY_S) -> None:
        """Reap, every `every_s` or so, the holds whose request never settled them
        (a router killed mid-request): their reservations return."""
        while True:
            await anyio.sleep(every_s * rng.uniform(0.8, 1.2))
            try:
                found = await self.store.reap()
            except StoreUnavailable as exc:
                log.warning("reaping holds failed", extra={"error": str(exc)})
                continue
            if found:
                self.reaped += found
                log.warning("holds reaped", extra={"count": found})

    def status(self) -> dict[str, Any]:
        return {
            "store": self.store_kind,
            "reaped": self.reaped,
            "failure_decisions": self.failure_decisions,
            "failure_causes": dict(self.failure_causes),
            "settle_failures": self.settle_failures,
            "settlements_pending": 0 if self.outbox is None else self.outbox.count,
            "settlements_replayed": self.settlements_replayed,
            "settlements_lost": self.settlements_lost,
            "settlements_unconfirmed": self.settlements_unconfirmed,
            "released": getattr(self.store, "released", 0),
        }


def _local_share(spec: RateSpec, replicas: int) -> RateSpec:
    limit = spec.limit
    rate = max(1, limit.rate // replicas)
    burst = max(1, limit.burst // replicas)
    return attrs.evolve(spec, limit=GcraLimit(rate, limit.period_us, burst))


def _duration(us: int) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s."""
    if us < 1_000_000:
        return f"{-(-us // 1000)}ms"
    seconds = us / 1_000_000
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def rate_headers(decision: Decision) -> dict[str, str]:
    """x-ratelimit-* (what OpenAI clients read) and the IETF RateLimit fields."""
    headers: dict[str, str] = {}
    policies, states = [], []
    for name, info in (
        ("requests", decision.headers_info.requests),
        ("tokens", decision.headers_info.tokens),
    ):
        if info is None:
            continue
        headers[f"x-ratelimit-limit-{name}"] = str(info.limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(info.remaining)
        headers[f"x-ratelimit-reset-{name}"] = _duration(info.reset_after_us)
        reset_s = -(-info.reset_after_us // 1_000_000)
        policies.append(f'"{name}";q={info.limit}')
        states.append(f'"{name}";r={info.remaining};t={reset_s}')
    if policies:
        headers["ratelimit-policy"] = ", ".join(policies)
        headers["ratelimit"] = ", ".join(states)
    return headers


def denial_error(denial: Denial, rate: Mapping[str, str]) -> ClientError:
    problem = _DENIAL_PROBLEMS[denial.limit_type]
    retry = denial.retry_after_s if denial.retry_after_s != NEVER else RETRY_NEVER_S
    key = _planned(denial)
    if denial.limit_type is LimitType.BUDGET:
        usage: float | int = usd(denial.current_usage)
        limit: float | int = usd(denial.limit)
        unit = "USD"
    else:
        usage, limit = denial.current_usage, denial.limit
        unit = "tokens" if key.measure is Measure.TOKENS else "requests"
    message = (
        f"{problem.title}: {_describe(key.scope)} has used {usage:g} of {limit:g} {unit}"
        f" ({_what(key)}). Retry after {retry} s."
    )
    headers = {
        **rate,
        "retry-after": str(retry),
        "retry-after-ms": str(retry * 1000),
    }
    if "ratelimit" not in headers:
        headers["ratelimit-policy"] = f'"{denial.limit_type.value}";q={limit:g}'
        headers["ratelimit"] = f'"{denial.limit_type.value}";r=0;t={retry}'
    return ClientError(
        problem,
        message,
        extra={
            "limit_type": denial.limit_type.value,
            "current_usage": usage,
            "limit": limit,
            "retry_after": retry,
        },
        headers=headers,
    )


def _planned(denial: Denial) -> LimitKey:
    key = denial.spec_key
    if not isinstance(key, LimitKey):
        raise TypeError(f"denial by {denial.key!r}, a limit no plan named")
    return key


def _describe(scope: Scope) -> str:
    text = f"organization {scope.organization!r}"
    if scope.kind is not ScopeKind.ORGANIZATION:
        text += f", {scope.kind.value} {scope.id!r}"
    return text


_QUOTAS = {Measure.REQUESTS: "request quota", Measure.TOKENS: "token quota", Measure.USD: "budget"}


def _what(key: LimitKey) -> str:
    if key.window is None:
        return "token rate limit" if key.measure is Measure.TOKENS else "request rate limit"
    kind = _QUOTAS[key.measure]
    return f"total {kind}" if key.window is WindowKind.TOTAL else f"{kind} per {key.window.value}"
