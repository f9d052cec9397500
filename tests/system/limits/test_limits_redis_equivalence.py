"""The Lua scripts and the Python core agree, step for step, on any sequence.

Hypothesis drives `MemoryLedger` (router_core's math) and `RedisLimitStore`
(admit.lua, settle.lua and reap.lua on a real server) with the same
operations: admissions over random mixes of rate, token-rate, quota and
budget limits, with limits reconfigured between calls, some with a deadline
just before, at or after their instant; settlements of earlier holds (open,
reaped, or settled already); and runs of the reaper, at instants that mostly
advance, jump across midnights and month ends, and sometimes go back, or land
exactly on the instant some state expires or some hold is due. Each sequence
has its own hold lifetime, from 1 µs to a day, so holds are often reaped,
by admissions and by the reaper, before their settlement comes. After every
step the admissions must be equal (decision, denial, headers, written
states, holds, now; or both ran late, writing nothing), and so must what is
stored under every key the step touched, expired or not; after each
settlement and reap, the open holds (and the holds reaped); at the end,
every key as read at the last instant.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router_core.limits.admission import LimitKind
from router_core.limits.gcra import MAX_SCALED_SPAN, GcraLimit
from router_core.limits.holds import REAPED_TTL_US
from router_core.limits.integers import MAX_SAFE_INTEGER
from router_core.limits.ledger import (
    Admission,
    AdmissionExpired,
    BudgetSpec,
    MemoryLedger,
    QuotaSpec,
    RateSpec,
    Spec,
    state_key,
)
from router_core.limits.windows import WindowKind, window_of
from router_server.redis_limits import RedisLimitStore
from router_server.state.errors import RAN_LATE, StoreUnavailable

from tests.helpers.redis_server import closed, redis_client

S = 1_000_000
DAY = 86_400 * S
# An hour before a month ends: after 2038-01 (31 days), 2040-02 (a leap
# February), 2100-02 (not leap: a century) and 2039-12 (a year's end). All lie
# in the future of the server's clock, so no TTL fires during the test.
STARTS = [
    2_148_595_200 * S - 3_600 * S,
    2_214_172_800 * S - 3_600 * S,
    4_107_542_400 * S - 3_600 * S,
    2_208_988_800 * S - 3_600 * S,
]

ORGS = ("acme", "globex")
RATE_KEYS = [("rate", i) for i in range(2)] + [("tokens", i) for i in range(2)]
WINDOW_KEYS = [(f"{limit}_{w.value}", 0) for limit in ("quota", "budget") for w in WindowKind]
WINDOWS = {w.value: w for w in WindowKind}

_prefixes = itertools.count()
# Hold lifetimes: a µs (every hold is due at once), up to a day.
HOLD_TTLS = [1, 1_000, S, 60 * S, 3_600 * S, DAY]


# Limits that recur, so that a key's TAT fraction builds up across calls
# until it carries into the microseconds.
COMMON_LIMITS = [GcraLimit(3, S, 10), GcraLimit(7, 60 * S, 20), GcraLimit(2, 1, 5)]


@st.composite
def gcra_limits(draw: st.DrawFn) -> GcraLimit:
    if draw(st.booleans()):
        return draw(st.sampled_from(COMMON_LIMITS))
    # Few distinct small rates, so that a key reconfigured to a lower rate
    # often holds a TAT fraction at or above it.
    rate = draw(st.one_of(st.sampled_from([1, 2, 3, 5, 7, 10]), st.integers(1, 10**6)))
    period_us = draw(
        st.one_of(
            st.sampled_from([S, 60 * S, 3_600 * S, 1, 1_000]),
            st.integers(1, 10**9),
        )
    )
    max_burst = min(10**4, (MAX_SCALED_SPAN - rate) // period_us)
    burst = draw(st.integers(1, max(1, max_burst)))
    return GcraLimit(rate, period_us, burst)


def window_limits(limit_type: str) -> st.SearchStrategy[int]:
    if limit_type == "quota":
        return st.one_of(st.integers(0, 100), st.integers(0, 10**9))
    return st.one_of(st.integers(0, 10**6), st.integers(0, 2**45))


def draw_specs(data: st.DataObject, org: str, config: dict[str, GcraLimit | int]) -> list[Spec]:
    """A request's limits; each key keeps the limit it was first given (`config`)
    three times in four, as configuration changes rarely, and is reconfigured
    otherwise."""
    names = data.draw(
        st.lists(st.sampled_from(RATE_KEYS + WINDOW_KEYS), min_size=1, max_size=5, unique=True)
    )
    specs: list[Spec] = []
    for name, i in names:
        key = f"org:{org}:{name}:{i}"
        reconfigure = key not in config or data.draw(st.integers(0, 3)) == 0
        if name in ("rate", "tokens"):
            if reconfigure:
                config[key] = data.draw(gcra_limits())
            limit = config[key]
            assert isinstance(limit, GcraLimit)
            cost = data.draw(
                st.one_of(st.just(1), st.integers(0, 3), st.integers(0, limit.burst + 2))
            )
            kind = LimitKind.RATE if name == "rate" else LimitKind.TOKENS_RATE
            specs.append(RateSpec(key, kind, limit, cost))
            continue
        limit_type, window = name.split("_")
        if reconfigure:
            config[key] = data.draw(window_limits(limit_type))
        value = config[key]
        assert isinstance(value, int)
        cost = data.draw(st.one_of(st.integers(0, 40), st.integers(0, value + value // 5 + 1)))
        cls = QuotaSpec if limit_type == "quota" else BudgetSpec
        specs.append(cls(key, value, WINDOWS[window], cost))
    return specs


# How `now` moves before an operation; staying put or moving a little is
# likelier, so that TATs stay ahead of it and build up.
STEPS = [
    "same",
    "same",
    "small",
    "small",
    "hours",
    "midnight",
    "month_end",
    "days",
    "back",
    "expiry",
]


def next_now(data: st.DataObject, now: int, start: int, instants: list[int]) -> int:
    step = data.draw(st.sampled_from(STEPS))
    if step == "same":
        return now
    if step == "small":
        return now + data.draw(st.one_of(st.integers(1, 1_000), st.integers(1, 2 * S)))
    if step == "hours":
        return now + data.draw(st.integers(1, 6 * 3_600 * S))
    if step == "midnight":
        end = window_of(WindowKind.DAY, now).end_us
        return end + data.draw(st.integers(-2, 2))
    if step == "month_end":
        end = window_of(WindowKind.MONTH, now).end_us
        return end + data.draw(st.integers(-2 * S, 2 * S))
    if step == "days":
        return now + data.draw(st.integers(1, 40)) * DAY
    if step == "expiry" and instants:
        # Exactly at, or a microsecond around, an instant some state expires.
        return max(start, data.draw(st.sampled_from(instants)) + data.draw(st.integers(-1, 1)))
    return max(start, now - data.draw(st.integers(1, 2 * DAY)))


async def assert_same_state(redis: RedisLimitStore, memory: MemoryLedger, keys: list[str]) -> None:
    """The same state is stored under each key, expired or not.

    At now = 0 no state has expired, so `get` reads what is stored without
    deleting anything: a key one side deleted and the other kept shows.
    """
    for key in keys:
        assert await redis.get(key, 0) == memory.get(key, 0), key


def draw_deadline(data: st.DataObject, now: int) -> int | None:
    """No deadline mostly; otherwise one just before, at or after `now`."""
    if data.draw(st.integers(0, 4)) > 0:
        return None
    return max(0, now + data.draw(st.one_of(st.integers(-2, 2), st.integers(-DAY, DAY))))


async def run_sequence(data: st.DataObject, url: str, steps: int) -> None:
    hold_ttl = data.draw(st.sampled_from(HOLD_TTLS))
    memory = MemoryLedger(hold_ttl_us=hold_ttl)
    redis = RedisLimitStore(
        redis_client(url), prefix=f"eq{next(_prefixes)}:", timeout_s=5.0, hold_ttl_s=hold_ttl / S
    )
    start = data.draw(st.sampled_from(STARTS))
    now = start + data.draw(st.integers(0, 3_000 * S))
    admissions: list[Admission] = []
    instants: list[int] = []
    touched: set[str] = set()
    config: dict[str, GcraLimit | int] = {}
    try:
        for step in range(steps):
            if data.draw(st.integers(0, 7)) == 0:
                now = next_now(data, now, start, instants)
                reaped = memory.reap(now)
                assert await redis.reap(now) == reaped
                instants.append(now + REAPED_TTL_US)  # when what it reaped is forgotten
                event("the reaper reaps holds" if reaped else "the reaper finds nothing due")
                await assert_same_state(redis, memory, sorted(touched))
                assert await redis.open_holds() == memory.open_holds
                continue
            if admissions and data.draw(st.integers(0, 3)) == 0:
                admission = data.draw(st.sampled_from(admissions))
                # Repeats included: a hold settles once.
                holds = data.draw(st.lists(st.sampled_from(admission.holds), max_size=3))
                # Now and then the most a settlement can charge: both sides saturate.
                actuals = [
                    data.draw(st.integers(0, 2 * hold.amount + 1) | st.just(MAX_SAFE_INTEGER))
                    for hold in holds
                ]
                ends = [hold.expire_at_us for hold in holds if hold.expire_at_us > 0]
                if data.draw(st.booleans()) and ends:
                    # Right at the end of a hold's window, or a microsecond around it.
                    now = max(
                        start, data.draw(st.sampled_from(ends)) + data.draw(st.integers(-1, 1))
                    )
                else:
                    now = next_now(data, now, start, instants)
                if any(0 <= hold.expire_at_us <= now for hold in holds):
                    event("a hold settles after its window ended")
                if holds and now >= admission.now_us + hold_ttl:
                    event("a hold settles at or after its reap time")
                memory.settle(holds, actuals, now)
                await redis.settle(holds, actuals, now)
                await assert_same_state(redis, memory, [hold.key for hold in holds])
                assert await redis.open_holds() == memory.open_holds
                continue
            now = next_now(data, now, start, instants)
            specs = draw_specs(data, data.draw(st.sampled_from(ORGS)), config)
            deadline = draw_deadline(data, now)
            keys = [state_key(spec, now) for spec in specs]
            touched.update(keys)
            try:
                expected = memory.admit(f"r{step}", specs, now, deadline_us=deadline)
            except AdmissionExpired:
                event("admission ran after its deadline")
                with pytest.raises(StoreUnavailable, match=RAN_LATE):
                    await redis.admit(f"r{step}", specs, now, deadline_us=deadline)
                await assert_same_state(redis, memory, keys)
                assert await redis.open_holds() == memory.open_holds
                continue
            actual = await redis.admit(f"r{step}", specs, now, deadline_us=deadline)
            assert actual == expected
            denial = expected.decision.denied_by
            event(f"admission denied by {denial.kind.value}" if denial else "admission allowed")
            if expected.holds:
                admissions.append(expected)
                # When its holds are due, and when they are forgotten if reaped then.
                instants += [now + hold_ttl, now + hold_ttl + REAPED_TTL_US]
            instants += [w.expire_at_us for w in expected.decision.new_states if w.expire_at_us > 0]
            await assert_same_state(redis, memory, keys)
        await assert_same_state(redis, memory, sorted(touched))
        for key in sorted(touched):
            assert await redis.get(key, now) == memory.get(key, now), key
        assert await redis.open_holds() == memory.open_holds
        assert await redis.reap(now) == memory.reap(now)
    finally:
        await closed(redis)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), steps=st.integers(1, 40))
def test_lua_and_python_agree_on_every_step(
    redis_url: str, data: st.DataObject, steps: int
) -> None:
    asyncio.run(run_sequence(data, redis_url, steps))
