"""The limit store contract, run against every implementation: memory and real Redis.

Every store gets holds that live HOLD_TTL (ten minutes), so that a test can
step past a hold's reap time and see it reaped, by an admission or by `reap`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import pytest

from router_core.config_enums import RedisMode
from router_core.limits.admission import LimitKind, LimitType, State
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit, Tat
from router_core.limits.integers import MAX_NOW_US, NEVER
from router_core.limits.ledger import (
    Admission,
    BudgetSpec,
    Hold,
    MemoryLedger,
    QuotaSpec,
    RateSpec,
    Spec,
    state_key,
)
from router_core.limits.windows import WindowKind, window_of
from router_server.limits import MemoryLimitStore
from router_server.redis_limits import RedisLimitStore
from router_server.state.errors import RAN_LATE, StoreUnavailable

from tests.helpers.redis_server import closed, redis_client

S = 1_000_000
DAY = 86_400 * S
# Simulated time lies in the future of the Redis server's clock, so that the
# TTLs written at these instants have not passed yet.
JAN_2038 = 2_145_916_800 * S
FEB_2038 = 2_148_595_200 * S
FEB_2040 = 2_211_667_200 * S  # a leap year
MAR_2040 = 2_214_172_800 * S
T0 = JAN_2038 + 10 * DAY  # 2038-01-11, a midnight
HOLD_TTL = 600 * S
WEEK = 7 * DAY


class ContractStore(Protocol):
    async def admit(
        self,
        request_id: str,
        specs: Sequence[Spec],
        now_us: int,
        *,
        deadline_us: int | None = None,
    ) -> Admission: ...
    async def settle(self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int) -> None: ...
    async def reap(self, now_us: int) -> int: ...
    async def open_holds(self) -> int: ...
    async def get(self, key: str, now_us: int) -> State | None: ...


class MemoryContractStore(MemoryLimitStore):
    """The embedded store (a MemoryLedger), with the readings of the contract."""

    def __init__(self) -> None:
        super().__init__(MemoryLedger(hold_ttl_us=HOLD_TTL))

    async def open_holds(self) -> int:
        return self.ledger.open_holds

    async def get(self, key: str, now_us: int) -> State | None:
        return self.ledger.get(key, now_us)


Scenario = Callable[[ContractStore], Coroutine[Any, Any, None]]
Runner = Callable[[Scenario], None]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a scenario against a fresh store of each implementation."""
    if request.param == "memory":
        return lambda scenario: asyncio.run(scenario(MemoryContractStore()))
    cluster = request.param == "redis-cluster"
    url: str = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    mode = RedisMode.CLUSTER if cluster else RedisMode.STANDALONE

    async def on_redis(scenario: Scenario) -> None:
        store = RedisLimitStore(
            redis_client(url, mode=mode), timeout_s=5.0, hold_ttl_s=HOLD_TTL / S
        )
        try:
            await scenario(store)
        finally:
            await closed(store)

    return lambda scenario: asyncio.run(on_redis(scenario))


def rps(burst: int = 5, cost: int = 1, key: str = "org:acme:rps") -> RateSpec:
    return RateSpec(key, LimitKind.RATE, GcraLimit(10, S, burst), cost)


def test_rate_limit_admits_the_burst_then_denies_then_refills(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        results = [(await store.admit(f"r{i}", [rps()], T0)).allowed for i in range(7)]
        assert results == [True] * 5 + [False] * 2
        denied = await store.admit("r7", [rps()], T0 + 99_999)
        assert denied.decision.denied_by is not None
        assert denied.decision.denied_by.limit_type is LimitType.RATE_LIMIT
        assert denied.decision.denied_by.retry_after_s == 1
        assert denied.decision.headers_info.requests is not None
        assert denied.decision.headers_info.requests.remaining == 0
        # One emission interval (100 ms) later, one more fits.
        assert (await store.admit("r8", [rps()], T0 + 100_000)).allowed
        assert not (await store.admit("r9", [rps()], T0 + 100_000)).allowed
        assert await store.get("org:acme:rps", T0 + 100_000) == Tat(T0 + 600_000, 0)
        # Once the TAT has passed, the key is gone.
        assert await store.get("org:acme:rps", T0 + 600_000) is None

    run(scenario)


def test_a_cost_above_the_burst_never_passes(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        tokens = RateSpec(
            "org:acme:tpm", LimitKind.TOKENS_RATE, GcraLimit(1000, 60 * S, 1000), 1001
        )
        denied = await store.admit("r1", [tokens], T0)
        assert denied.decision.denied_by is not None
        assert denied.decision.denied_by.retry_after_s == NEVER
        assert denied.decision.headers_info.tokens is not None
        assert denied.decision.headers_info.tokens.remaining == 1000

    run(scenario)


def test_a_quota_starts_again_at_midnight(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:requests", 10, WindowKind.DAY, 4)
        before = T0 + DAY - 2 * S
        assert (await store.admit("r1", [quota], before)).allowed
        assert (await store.admit("r2", [quota], before)).allowed
        denied = await store.admit("r3", [quota], before)
        assert denied.decision.denied_by is not None
        assert denied.decision.denied_by.limit_type is LimitType.QUOTA
        assert denied.decision.denied_by.current_usage == 8
        assert denied.decision.denied_by.retry_after_s == 2
        after = await store.admit("r4", [quota], T0 + DAY)
        assert after.allowed
        old, new = state_key(quota, before), state_key(quota, T0 + DAY)
        assert (old, new) == (
            f"org:acme:requests:{T0 // DAY}",
            f"org:acme:requests:{T0 // DAY + 1}",
        )
        assert await store.get(old, before) == 8
        assert await store.get(new, T0 + DAY) == 4
        assert await store.get(old, T0 + DAY) is None  # its day is over

    run(scenario)


def test_a_monthly_budget_rolls_over_into_a_leap_february(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        budget = BudgetSpec("org:acme:spend", 100, WindowKind.MONTH, 60)
        jan_31 = FEB_2040 - 60 * S
        first = await store.admit("r1", [budget], jan_31)
        assert first.allowed
        denied = await store.admit("r2", [budget], jan_31)
        assert denied.decision.denied_by is not None
        assert denied.decision.denied_by.limit_type is LimitType.BUDGET
        assert denied.decision.denied_by.retry_after_s == 60
        feb = await store.admit("r3", [budget], FEB_2040)
        assert feb.allowed
        write = feb.decision.new_states[0]
        assert write.key == f"org:acme:spend:{window_of(WindowKind.MONTH, FEB_2040).id}"
        assert write.expire_at_us == MAR_2040  # 29 days
        assert write.state == BudgetState(0, 60)

    run(scenario)


def test_budget_reserve_settle_and_release(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        budget = BudgetSpec("org:acme:spend", 1_000, WindowKind.DAY, 600)
        first = await store.admit("r1", [budget], T0)
        assert first.allowed
        assert not (await store.admit("r2", [budget], T0)).allowed  # 600 + 600 > 1000
        await store.settle(first.holds, [250], T0 + 1)
        key = first.holds[0].key
        assert await store.get(key, T0 + 1) == BudgetState(committed=250, reserved=0)
        second = await store.admit("r3", [budget], T0 + 2)
        assert second.allowed
        await store.settle(second.holds, [0], T0 + 3)  # released: nothing consumed
        assert await store.get(key, T0 + 3) == BudgetState(committed=250, reserved=0)

    run(scenario)


def test_a_hold_settles_once(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        specs: list[Spec] = [
            QuotaSpec("org:acme:tokens", 1_000, WindowKind.DAY, 300),
            BudgetSpec("org:acme:spend", 1_000, WindowKind.TOTAL, 500),
        ]
        admitted = await store.admit("r1", specs, T0)
        assert await store.open_holds() == 2
        await store.settle(admitted.holds, [120, 200], T0 + 1)
        await store.settle(admitted.holds, [120, 200], T0 + 2)
        quota_key, budget_key = (hold.key for hold in admitted.holds)
        assert budget_key == "org:acme:spend:0"
        assert await store.get(quota_key, T0 + 3) == 120
        assert await store.get(budget_key, T0 + 3) == BudgetState(committed=200, reserved=0)
        assert await store.open_holds() == 0

    run(scenario)


def test_a_denial_writes_nothing(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        rate = rps()
        quota = QuotaSpec("org:acme:requests", 10, WindowKind.DAY, 4)
        budget = BudgetSpec("org:acme:spend", 100, WindowKind.DAY, 101)
        denied = await store.admit("r1", [rate, quota, budget], T0)
        assert not denied.allowed
        assert denied.decision.denied_by is not None
        assert denied.decision.denied_by.key == state_key(budget, T0)
        assert denied.decision.denied_by.retry_after_s == NEVER  # above the whole budget
        assert denied.decision.new_states == ()
        assert denied.holds == ()
        # Headers come from a peek: the rate limit is untouched.
        assert denied.decision.headers_info.requests is not None
        assert denied.decision.headers_info.requests.remaining == 5
        for spec in (rate, quota, budget):
            assert await store.get(state_key(spec, T0), T0) is None
        assert await store.open_holds() == 0

    run(scenario)


def test_peeks_are_checked_but_never_written(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:tokens", 10, WindowKind.DAY, 0)
        admitted = await store.admit("r1", [rps(cost=0), quota], T0)
        assert admitted.allowed
        assert admitted.decision.new_states == ()
        assert admitted.holds == ()
        assert await store.get("org:acme:rps", T0) is None

    run(scenario)


def test_open_holds_counts_unsettled_holds(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        specs: list[Spec] = [
            rps(burst=100),
            QuotaSpec("org:acme:tokens", 10_000, WindowKind.MONTH, 100),
            BudgetSpec("org:acme:spend", 10_000, WindowKind.DAY, 100),
        ]
        admissions = [await store.admit(f"r{i}", specs, T0 + i) for i in range(5)]
        assert all(len(a.holds) == 2 for a in admissions)
        assert await store.open_holds() == 10
        for a in admissions[:3]:
            await store.settle(a.holds, [50, 50], T0 + 10)
        assert await store.open_holds() == 4
        assert await store.get(admissions[0].holds[1].key, T0 + 10) == BudgetState(150, 200)

    run(scenario)


def test_holds_settle_into_the_window_they_were_taken_in(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:tokens", 100, WindowKind.DAY, 80)
        late = T0 + DAY - 10
        first = await store.admit("r1", [quota], late)
        assert not (await store.admit("r2", [quota], late + 5)).allowed
        second = await store.admit("r3", [quota], T0 + DAY)
        assert second.allowed
        assert first.holds[0].key != second.holds[0].key
        assert first.holds[0].expire_at_us == T0 + DAY
        await store.settle(first.holds, [30], T0 + DAY + 1)
        assert await store.get(second.holds[0].key, T0 + DAY + 2) == 80
        assert await store.open_holds() == 1
        # Settled within its own day, a hold moves that day's counter only.
        third = await store.admit("r4", [quota], T0 + DAY + 3)
        assert not third.allowed
        await store.settle(second.holds, [5], T0 + DAY + 4)
        assert await store.get(second.holds[0].key, T0 + DAY + 5) == 5

    run(scenario)


def test_each_check_needs_its_own_key(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:tokens", 100, WindowKind.DAY, 1)
        with pytest.raises(ValueError, match="own key"):
            await store.admit("r1", [quota, quota], T0)

    run(scenario)


def test_a_hold_past_its_lifetime_is_reaped_by_the_next_admission(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        budget = BudgetSpec("org:acme:spend", 1_000, WindowKind.TOTAL, 600)
        first = await store.admit("r1", [budget], T0)
        key = first.holds[0].key
        assert not (await store.admit("r2", [budget], T0 + HOLD_TTL - 1)).allowed
        # At its reap time, r1's hold (a request the router lost) is returned first.
        third = await store.admit("r3", [budget], T0 + HOLD_TTL)
        assert third.allowed
        assert third.decision.new_states[0].state == BudgetState(committed=0, reserved=600)
        assert await store.open_holds() == 1
        # r1 settles after all: its actual is charged, once.
        await store.settle(first.holds, [250], T0 + HOLD_TTL + 1)
        await store.settle(first.holds, [250], T0 + HOLD_TTL + 2)
        assert await store.get(key, T0 + HOLD_TTL + 2) == BudgetState(250, 600)
        await store.settle(third.holds, [100], T0 + HOLD_TTL + 3)
        await store.settle(third.holds, [100], T0 + HOLD_TTL + 4)
        assert await store.get(key, T0 + HOLD_TTL + 4) == BudgetState(350, 0)
        assert await store.open_holds() == 0

    run(scenario)


def test_reap_returns_every_hold_past_its_lifetime(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        specs: list[Spec] = [
            QuotaSpec("org:acme:tokens", 1_000, WindowKind.MONTH, 300),
            BudgetSpec("org:acme:spend", 10_000, WindowKind.TOTAL, 500),
            BudgetSpec("org:acme:spend:day", 10_000, WindowKind.DAY, 500),
        ]
        other = QuotaSpec("org:globex:requests", 10, WindowKind.DAY, 1)
        lost = await store.admit("r1", specs, T0)
        late = await store.admit("r2", [other], T0 + 1)
        assert await store.reap(T0 + HOLD_TTL - 1) == 0
        assert await store.reap(T0 + HOLD_TTL) == 3
        assert await store.open_holds() == 1
        assert await store.reap(T0 + HOLD_TTL + 1) == 1
        assert await store.reap(T0 + HOLD_TTL + 1) == 0
        assert await store.open_holds() == 0
        tokens, spend, spend_day = (hold.key for hold in lost.holds)
        at = T0 + HOLD_TTL + 2
        # Reserved returns to 0, in every window kind (a total budget's included).
        assert await store.get(tokens, at) == 0
        assert await store.get(spend, at) == BudgetState(0, 0)
        assert await store.get(spend_day, at) == BudgetState(0, 0)
        assert await store.get(late.holds[0].key, at) == 0
        # The settlements arrive late: each charges exactly its actual, once.
        for _ in range(2):
            await store.settle(lost.holds, [120, 200, 0], at)
            await store.settle(late.holds, [1], at)
        assert await store.get(tokens, at) == 120
        assert await store.get(spend, at) == BudgetState(200, 0)
        assert await store.get(spend_day, at) == BudgetState(0, 0)
        assert await store.get(late.holds[0].key, at) == 1
        assert await store.reap(at) == 0

    run(scenario)


def test_an_admission_reaps_at_most_sixteen_holds_of_a_window_oldest_first(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1)
        admitted = [await store.admit(f"r{i:02}", [quota], T0 + i) for i in range(20)]
        key = admitted[0].holds[0].key
        now = T0 + HOLD_TTL + 19
        assert (await store.admit("r20", [quota], now)).allowed
        assert await store.get(key, now) == 20 - 16 + 1
        assert await store.open_holds() == 4 + 1
        # The oldest sixteen were reaped: r15's settlement charges its actual
        # alone, r16's replaces its hold (still open until the reaper comes).
        await store.settle(admitted[15].holds, [1], now)
        await store.settle(admitted[16].holds, [0], now)
        assert await store.get(key, now) == 20 - 16 + 1 + 1 - 1
        assert await store.reap(now) == 3
        assert await store.get(key, now) == 1 + 1

    run(scenario)


def test_a_reaped_hold_is_remembered_for_a_week(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        budget = BudgetSpec("org:acme:spend", 1_000, WindowKind.TOTAL, 100)
        first = await store.admit("r1", [budget], T0)
        second = await store.admit("r2", [budget], T0)
        key = first.holds[0].key
        reaped_at = T0 + HOLD_TTL
        assert await store.reap(reaped_at) == 2
        await store.settle(first.holds, [40], reaped_at + WEEK - 1_000)
        assert await store.get(key, reaped_at + WEEK) == BudgetState(40, 0)
        # A week after the reap, a settlement finds nothing left to charge.
        await store.settle(second.holds, [40], reaped_at + WEEK)
        assert await store.get(key, reaped_at + WEEK) == BudgetState(40, 0)

    run(scenario)


def test_an_admission_after_its_deadline_writes_nothing(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:requests", 10, WindowKind.DAY, 4)
        budget = BudgetSpec("org:acme:spend", 100, WindowKind.TOTAL, 10)
        specs: list[Spec] = [rps(), quota, budget]
        first = await store.admit("r1", specs, T0)
        now = T0 + HOLD_TTL  # r1's holds are due: a live admission would reap them
        keys = [state_key(spec, now) for spec in specs]
        before = [await store.get(key, 0) for key in keys]
        for deadline in (now - 1, T0):
            with pytest.raises(StoreUnavailable, match=RAN_LATE):
                await store.admit("r2", specs, now, deadline_us=deadline)
        assert [await store.get(key, 0) for key in keys] == before
        assert await store.open_holds() == 2
        # Right at its deadline, an admission still runs.
        on_time = await store.admit("r3", specs, now, deadline_us=now)
        assert on_time.allowed
        assert await store.get(keys[1], now) == 4
        assert await store.get(keys[2], now) == BudgetState(0, 10)
        assert await store.open_holds() == 2
        await store.settle(first.holds, [1, 1], now)
        assert await store.get(keys[2], now) == BudgetState(1, 10)

    run(scenario)


def test_a_deadline_out_of_range_is_refused(run: Runner) -> None:
    async def scenario(store: ContractStore) -> None:
        quota = QuotaSpec("org:acme:requests", 10, WindowKind.DAY, 1)
        for deadline in (-1, MAX_NOW_US + 1):
            with pytest.raises(ValueError, match="deadline"):
                await store.admit("r1", [quota], T0, deadline_us=deadline)
        # Bad specs are refused first, even past the deadline.
        with pytest.raises(ValueError, match="own key"):
            await store.admit("r2", [quota, quota], T0, deadline_us=T0 - 1)
        assert await store.open_holds() == 0

    run(scenario)
