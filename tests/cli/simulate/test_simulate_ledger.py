"""The simulator's ledger decides exactly as the router's MemoryLedger, step by step."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router_cli.simulate.ledger import CoreLedger, SimLedger
from router_core.limits.admission import LimitKind
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import BudgetSpec, Hold, QuotaSpec, RateSpec, Spec, storage_key
from router_core.limits.windows import WindowKind

from tests.helpers.support import JAN_31_NOON

MINUTE_US = 60_000_000
DAY_US = 86_400_000_000


@st.composite
def spec_pool(draw: st.DrawFn) -> list[Any]:
    """Small limits, so that refusals are common; each entry builds a spec from a cost."""
    rate = draw(st.integers(1, 5))
    burst = draw(st.integers(1, 5))
    quota = draw(st.integers(1, 8))
    tokens = draw(st.integers(50, 400))
    budget = draw(st.integers(1_000, 50_000))
    total = draw(st.integers(10_000, 200_000))
    return [
        lambda c: RateSpec(
            "org:a:rps", LimitKind.RATE, GcraLimit(rate, 1_000_000, burst), min(c, 1)
        ),
        lambda c: RateSpec("org:a:tpm", LimitKind.TOKENS_RATE, GcraLimit(100, MINUTE_US, 200), c),
        lambda c: QuotaSpec("org:a:req:day", quota, WindowKind.DAY, min(c, 1)),
        lambda c: QuotaSpec("org:a:tok:month", tokens, WindowKind.MONTH, c),
        lambda c: BudgetSpec("org:a:usd:day", budget, WindowKind.DAY, c * 37),
        lambda c: BudgetSpec("org:a:usd:total", total, WindowKind.TOTAL, c * 11),
    ]


admit_step = st.tuples(
    st.just("admit"),
    st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True),
    st.integers(0, 300),  # cost
    st.sampled_from([0, 1, 1_000, 500_000, MINUTE_US, DAY_US // 2, DAY_US]),  # time step
)
settle_step = st.tuples(
    st.just("settle"), st.integers(0, 1_000), st.integers(0, 3), st.integers(0, 1_000_000)
)
reap_step = st.tuples(st.just("reap"), st.sampled_from([0, 1, MINUTE_US, DAY_US // 2]))
# Hold lifetimes from a µs to an hour: holds are reaped, by admissions and by `reap`.
hold_ttls = st.sampled_from([1, 1_000, MINUTE_US, 3_600_000_000])


@given(
    pool=spec_pool(),
    steps=st.lists(st.one_of(admit_step, settle_step, reap_step), max_size=60),
    hold_ttl=hold_ttls,
)
def test_same_decisions_as_the_memory_ledger(
    pool: list[Any], steps: list[Any], hold_ttl: int
) -> None:
    sim, core = SimLedger(hold_ttl_us=hold_ttl), CoreLedger(hold_ttl_us=hold_ttl)
    now = JAN_31_NOON
    admitted: list[tuple[tuple[Hold, ...], str]] = []
    keys: set[str] = set()
    for n, step in enumerate(steps):
        if step[0] == "admit":
            _, chosen, cost, dt = step
            now += dt
            specs: list[Spec] = [pool[i](cost) for i in chosen]
            request_id = f"r{n}"
            got, want = sim.admit(request_id, specs, now), core.admit(request_id, specs, now)
            assert got == want
            refusal, holds = got
            if refusal is None:
                admitted.append((holds, request_id))
                keys.update(h.key for h in holds)
            keys.update(storage_key(s.key) for s in specs if isinstance(s, RateSpec))
        elif step[0] == "reap":
            now += step[1]
            assert sim.reap(now) == core.reap(now)
        elif admitted:
            _, which, factor, dt = step
            now += dt
            holds, _ = admitted[which % len(admitted)]
            # Actuals below, at and above what was held (the backend may overrun).
            actuals = [h.amount * factor // 2 for h in holds]
            sim.settle(holds, actuals, now)
            core.settle(holds, actuals, now)
        for key in keys:
            assert sim.state(key, now) == core.state(key, now), key
