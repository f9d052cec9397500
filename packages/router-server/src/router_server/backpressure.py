"""Backpressure: who gets an in-flight slot, who waits, who is refused at once.

Rules:
- Asked first, before any store or backend is touched: a router whose event
  loop runs behind (`saturation.Saturation.lag_s`) by more than
  `server.admission.max_loop_lag_ms` (x the caller's priority factor)
  refuses new requests at once with 503 `overloaded` and `Retry-After`,
  while it has at least `server.admission.min_in_flight` in flight (fewer
  cannot have lagged it; refusing them relieves nothing).
- Below the capacity (the adaptive limit when on, never above
  `server.max_in_flight`) a request takes a slot at once. At capacity it
  waits for at most `queue_timeout_ms`, or is shed, by the fair shares of
  `router_core.fair_share`: one organization's flood takes the place of
  nobody else's, and priority (organization, then key) weighs in.
- A request that would wait past `queue_timeout_ms` by the expected wait
  (`router_core.saturation.expected_wait_s`: the waiters of its own
  organization and priority or higher before it, by the mean time a slot
  is held over the slots in flight) is refused at once, not after the timeout: the
  same answer, without holding the client and a queue place for nothing.
  Other organizations' waiters are not counted: the fair shares may serve
  this one first, and a flood elsewhere must not refuse it.
- A freed slot is handed to the next waiter (in_flight is counted for it
  before it wakes), so nobody can jump the queue.
- Every shed is counted by reason and by organization (organizations are
  the configured ones: bounded).
- Per-backend caps are routing's business (a full backend is skipped); when
  every candidate is full the pipeline waits for a slot within the same
  queue timeout (see `pipeline`), and counts a shed as `backend_capacity`.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable

import anyio
import attrs

from router_core import fair_share
from router_core.auth import Principal
from router_core.config import ServerSettings
from router_core.config_enums import Priority
from router_core.fair_share import Action, Load, ShedReason
from router_core.problems import Catalog, DependencyError
from router_core.saturation import expected_wait_s, lag_threshold, smooth_hold
from router_server.saturation import Saturation

# Organizations listed by name in the status, the busiest first.
STATUS_ORGANIZATIONS = 20


def overloaded(detail: str, wait_s: float, reason: ShedReason) -> DependencyError:
    """503 `overloaded`. `Retry-After` is whole seconds (at least 1); `retry-after-ms`
    (which the openai SDK reads first) spreads the retries over that second and
    the next, so that clients refused together do not all come back together."""
    seconds = max(1, math.ceil(wait_s))
    spread_ms = round(seconds * 1000 * (1 + random.random()))
    return DependencyError(
        Catalog.OVERLOADED,
        detail,
        headers={"retry-after": str(seconds), "retry-after-ms": str(spread_ms)},
        extra={"reason": reason.value},
    )


@attrs.frozen
class Tenant:
    """Who asks for a slot: the organization (its weight) and the request's priority."""

    organization: str
    weight: int = fair_share.WEIGHT[Priority.NORMAL]
    priority: Priority = Priority.NORMAL

    @classmethod
    def of(cls, principal: Principal) -> Tenant:
        weight = fair_share.WEIGHT[principal.org.priority]
        return cls(principal.organization, weight, principal.priority)


@attrs.frozen
class Slot:
    """An in-flight slot held: give it back with `Backpressure.leave`."""

    organization: str
    taken_at: float


@attrs.define(eq=False)
class _Waiter:
    tenant: Tenant
    number: int
    turn: anyio.Event = attrs.field(factory=anyio.Event)
    # Set with `turn`: a slot (None) or why the waiter was shed instead.
    shed: ShedReason | None = None


@attrs.define(eq=False)
class _Org:
    """One organization's live counts: slots held, and waiters by key priority."""

    weight: int
    holding: int = 0
    waiting: tuple[deque[_Waiter], ...] = attrs.field(
        factory=lambda: tuple(deque() for _ in fair_share.RANK)
    )

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self.waiting)

    def load(self) -> Load:
        oldest = min((q[0].number for q in self.waiting if q), default=0)
        return Load(self.holding, self.queued, self.weight, oldest)


@attrs.define
class Backpressure:
    """Live counts only: caps and thresholds are read from the running config on
    every call (`settings`), so a reload needs no copy patched here."""

    settings: Callable[[], ServerSettings]
    clock: Callable[[], float] = time.monotonic
    saturation: Saturation = attrs.field(init=False)
    in_flight: int = 0
    queued: int = 0
    shed_by_reason: Counter[ShedReason] = attrs.field(factory=Counter, init=False)
    shed_by_organization: Counter[str] = attrs.field(factory=Counter, init=False)
    # Organizations holding a slot or waiting (no others: the fair shares are
    # computed over these at every hand-over).
    _orgs: dict[str, _Org] = attrs.field(factory=dict, init=False)
    _numbers: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    # The smoothed time a slot is held (taken to given back).
    hold_s: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.saturation = Saturation(lambda: self.settings())

    @property
    def shed(self) -> int:
        return sum(self.shed_by_reason.values())

    @property
    def queue_timeout_s(self) -> float:
        return self.settings().queue_timeout_ms / 1000

    async def run(self) -> None:
        """Measure saturation (the lifespan runs this until it ends)."""
        await self.saturation.run(lambda: self.in_flight, self._hand_over)

    def reconfigured(self) -> None:
        """The caps may have grown (a config reload): let waiters in if they fit now;
        requests already in keep their slots."""
        self._hand_over()

    def routed(self, slot: Slot) -> None:
        """The router's own part of a request is done (a backend is being called)."""
        self.saturation.observe(self.clock() - slot.taken_at)

    async def enter(self, tenant: Tenant) -> Slot:
        """Take a slot, or raise 503 `overloaded`; pair with `leave()`."""
        settings = self.settings()
        admission = settings.admission
        max_lag_ms = admission.max_loop_lag_ms
        if max_lag_ms is not None and self.in_flight >= admission.min_in_flight:
            lag_s = self.saturation.lag_s()
            if lag_s > lag_threshold(max_lag_ms / 1000, tenant.priority):
                raise self._refuse(
                    tenant, ShedReason.LOOP_LAG,
                    f"The router is saturated (its event loop is {lag_s * 1000:.0f} ms "
                    "behind); the request was not started. Retry shortly.",
                    lag_s,
                )  # fmt: skip
        capacity = self.capacity()
        if self.in_flight < capacity and self.queued:
            self._hand_over()  # the capacity grew since the last hand-over
        if self.in_flight < capacity:
            return self._take(tenant)
        timeout_s = settings.queue_timeout_ms / 1000
        verdict = fair_share.arrival(
            tenant.organization, tenant.weight, self._loads(),
            capacity=capacity, max_queued=settings.max_queued if timeout_s > 0 else 0,
        )  # fmt: skip
        if verdict.action is Action.SHED:
            assert verdict.reason is not None
            raise self._refuse(tenant, verdict.reason, self._at_capacity(verdict.reason), timeout_s)
        wait_s = self._expected_wait_s(tenant)
        if wait_s is not None and wait_s > timeout_s:
            raise self._refuse(
                tenant, ShedReason.QUEUE_TIMEOUT,
                f"The router is at capacity {self._where()}: a slot would take about "
                f"{wait_s * 1000:.0f} ms to free, past the {timeout_s * 1000:g} ms queue "
                "timeout. Retry shortly.",
                timeout_s,
            )  # fmt: skip
        if verdict.evict is not None:
            self._evict(verdict.evict)
        return await self._wait(tenant, timeout_s)

    def _expected_wait_s(self, tenant: Tenant) -> float | None:
        org = self._orgs.get(tenant.organization)
        rank = fair_share.RANK[tenant.priority]
        ahead = sum(len(q) for q in org.waiting[: rank + 1]) if org is not None else 0
        return expected_wait_s(ahead, self.hold_s, self.in_flight)

    def capacity(self) -> int:
        return self.saturation.limit()

    def leave(self, slot: Slot) -> None:
        self.hold_s = smooth_hold(self.hold_s, self.clock() - slot.taken_at)
        self._release(slot.organization)

    def _release(self, organization: str) -> None:
        self.in_flight -= 1
        org = self._orgs[organization]
        org.holding -= 1
        self._forget_if_idle(organization)
        self._hand_over()

    def count_shed(self, reason: ShedReason, organization: str) -> None:
        self.shed_by_reason[reason] += 1
        self.shed_by_organization[organization] += 1

    # -- the queue -----------------------------------------------------------------

    def _take(self, tenant: Tenant) -> Slot:
        org = self._org(tenant)
        org.holding += 1
        self.in_flight += 1
        return Slot(tenant.organization, self.clock())

    def _org(self, tenant: Tenant) -> _Org:
        org = self._orgs.get(tenant.organization)
        if org is None:
            org = self._orgs[tenant.organization] = _Org(tenant.weight)
        org.weight = tenant.weight  # a reload may have moved the priority
        return org

    async def _wait(self, tenant: Tenant, timeout_s: float) -> Slot:
        waiter = _Waiter(tenant, next(self._numbers))
        self._org(tenant).waiting[fair_share.RANK[tenant.priority]].append(waiter)
        self.queued += 1
        try:
            with anyio.move_on_after(timeout_s):
                await waiter.turn.wait()
        except BaseException:
            self._give_up(waiter)
            raise
        if waiter.turn.is_set() and waiter.shed is None:
            return Slot(tenant.organization, self.clock())
        if not waiter.turn.is_set():
            self._remove(waiter)
        reason = waiter.shed or ShedReason.QUEUE_TIMEOUT
        detail = (
            f"The router is at capacity: no slot freed within {timeout_s * 1000:g} ms. "
            "Retry shortly."
            if reason is ShedReason.QUEUE_TIMEOUT
            else self._at_capacity(reason)
        )
        raise self._refuse(tenant, reason, detail, timeout_s)

    def _give_up(self, waiter: _Waiter) -> None:
        if not waiter.turn.is_set():
            self._remove(waiter)
        elif waiter.shed is None:  # a slot was handed over as we left: pass it on
            self._release(waiter.tenant.organization)

    def _remove(self, waiter: _Waiter) -> None:
        name = waiter.tenant.organization
        self._orgs[name].waiting[fair_share.RANK[waiter.tenant.priority]].remove(waiter)
        self.queued -= 1
        self._forget_if_idle(name)

    def _evict(self, organization: str) -> None:
        """Shed the newest, lowest-priority waiter of `organization` for a fairer arrival."""
        org = self._orgs[organization]
        queue = next(q for q in reversed(org.waiting) if q)
        waiter = queue.pop()
        self.queued -= 1
        self._forget_if_idle(organization)
        waiter.shed = ShedReason.FAIR_SHARE
        waiter.turn.set()

    def _hand_over(self) -> None:
        capacity = self.capacity()
        while self.queued and self.in_flight < capacity:
            name = fair_share.next_served(self._loads())
            assert name is not None
            org = self._orgs[name]
            waiter = next(q for q in org.waiting if q).popleft()
            self.queued -= 1
            org.holding += 1
            self.in_flight += 1
            waiter.turn.set()

    def _loads(self) -> dict[str, Load]:
        return {name: org.load() for name, org in self._orgs.items()}

    def _forget_if_idle(self, name: str) -> None:
        org = self._orgs[name]
        if not org.holding and not org.queued:
            del self._orgs[name]

    # -- refusals --------------------------------------------------------------------

    def _refuse(
        self, tenant: Tenant, reason: ShedReason, detail: str, wait_s: float
    ) -> DependencyError:
        self.count_shed(reason, tenant.organization)
        return overloaded(detail, wait_s, reason)

    def _where(self) -> str:
        return f"({self.in_flight} requests in flight, {self.queued} waiting)"

    def _at_capacity(self, reason: ShedReason) -> str:
        where = self._where()
        if reason is ShedReason.FAIR_SHARE:
            return (
                f"The router is at capacity {where} and this organization holds its "
                "fair share of it while others wait. Retry shortly."
            )
        return f"The router is at capacity {where}. Retry shortly."

    def status(self) -> dict[str, object]:
        settings = self.settings()
        sheds = self.shed_by_organization
        busiest = sorted(
            {*self._orgs, *sheds},
            key=lambda name: (-self._holding(name), -sheds[name], name),
        )[:STATUS_ORGANIZATIONS]
        return {
            "in_flight": self.in_flight,
            "max_in_flight": settings.max_in_flight,
            "queued": self.queued,
            "max_queued": settings.max_queued,
            **self.saturation.status(),
            "shed": self.shed,
            "shed_by_reason": {r.value: self.shed_by_reason[r] for r in ShedReason},
            "organizations": {
                name: {
                    "in_flight": self._holding(name),
                    "queued": self._orgs[name].queued if name in self._orgs else 0,
                    "shed": sheds[name],
                }
                for name in busiest
            },
        }

    def _holding(self, name: str) -> int:
        org = self._orgs.get(name)
        return 0 if org is None else org.holding
