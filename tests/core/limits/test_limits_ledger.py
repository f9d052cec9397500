"""The in-memory ledger: windows, holds and settlement."""

from __future__ import annotations

from router_core.limits.admission import LimitKind, LimitType
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import BudgetSpec, MemoryLedger, QuotaSpec, RateSpec
from router_core.limits.windows import WindowKind

DAY_US = 86_400_000_000
T0 = 20_000 * DAY_US  # a midnight, UTC


def test_rate_limit_admits_burst_then_denies() -> None:
    ledger = MemoryLedger()
    spec = RateSpec("org:acme:rps", LimitKind.RATE, GcraLimit(10, 1_000_000, 5), 1)
    results = [ledger.admit(f"r{i}", [spec], T0).allowed for i in range(7)]
    assert results == [True] * 5 + [False] * 2
    assert ledger.admit("later", [spec], T0 + 100_000).allowed


def test_denial_writes_nothing() -> None:
    ledger = MemoryLedger()
    quota = QuotaSpec("q", 10, WindowKind.DAY, 4)
    budget = BudgetSpec("b", 100, WindowKind.DAY, 101)
    denied = ledger.admit("r1", [quota, budget], T0)
    assert not denied.allowed
    assert denied.decision.denied_by is not None
    assert denied.decision.denied_by.limit_type is LimitType.BUDGET
    assert ledger.get(f"q:{T0 // DAY_US}", T0) is None
    assert denied.holds == ()


def test_holds_settle_to_actuals_once() -> None:
    ledger = MemoryLedger()
    budget = BudgetSpec("b", 1_000, WindowKind.DAY, 600)
    admitted = ledger.admit("r1", [budget], T0)
    assert admitted.allowed
    assert not ledger.admit("r2", [budget], T0).allowed  # 600 + 600 > 1000
    ledger.settle(admitted.holds, [250], T0 + 1)
    ledger.settle(admitted.holds, [250], T0 + 2)  # a second settle is a no-op
    key = admitted.holds[0].key
    assert ledger.get(key, T0 + 3) == BudgetState(committed=250, reserved=0)
    assert ledger.admit("r3", [budget], T0 + 4).allowed
    assert ledger.open_holds == 1


def test_a_new_day_starts_at_zero_and_old_holds_settle_in_their_day() -> None:
    ledger = MemoryLedger()
    quota = QuotaSpec("tokens", 100, WindowKind.DAY, 80)
    first = ledger.admit("r1", [quota], T0 + DAY_US - 10)
    assert first.allowed
    assert not ledger.admit("r2", [quota], T0 + DAY_US - 5).allowed
    second = ledger.admit("r3", [quota], T0 + DAY_US)
    assert second.allowed
    ledger.settle(first.holds, [30], T0 + DAY_US + 1)
    assert ledger.get(second.holds[0].key, T0 + DAY_US + 2) == 80
    assert first.holds[0].key != second.holds[0].key
