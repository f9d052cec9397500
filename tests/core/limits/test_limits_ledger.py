"""The in-memory ledger: windows, holds, settlement, deadlines and reaping.

What every limit store does is in tests/system/limits/test_limits_store_contract.py;
here, what only the memory ledger's own bookkeeping shows.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router_core.limits.admission import LimitKind, LimitType
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit
from router_core.limits.holds import MAX_HOLD_TTL_US, Hold, HoldBook
from router_core.limits.ledger import (
    AdmissionExpired,
    BudgetSpec,
    MemoryLedger,
    QuotaSpec,
    RateSpec,
)
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


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: RateSpec("r", LimitKind.RATE, GcraLimit(10, 1_000_000, 5), -1), "cost"),
        (lambda: RateSpec("r", LimitKind.QUOTA, GcraLimit(10, 1_000_000, 5), 1), "kind"),
        (lambda: QuotaSpec("q", -1, WindowKind.DAY, 1), "limit"),
        (lambda: QuotaSpec("q", 10, WindowKind.DAY, -1), "cost"),
        (lambda: BudgetSpec("b", -1, WindowKind.DAY, 1), "limit"),
        (lambda: BudgetSpec("b", 10, WindowKind.DAY, 2**53), "cost"),
    ],
)
def test_a_spec_out_of_range_is_refused_when_made(make: Callable[[], object], field: str) -> None:
    # Before any store binds it: an admission never gets to reap or write for it.
    with pytest.raises(ValueError, match=field):
        make()


HOUR_US = 3_600_000_000


@pytest.mark.parametrize("ttl", [0, -1, MAX_HOLD_TTL_US + 1])
def test_a_hold_lifetime_out_of_range_is_refused(ttl: int) -> None:
    with pytest.raises(ValueError, match="hold_ttl_us"):
        MemoryLedger(hold_ttl_us=ttl)


def test_an_admission_after_its_deadline_raises_and_writes_nothing() -> None:
    ledger = MemoryLedger(hold_ttl_us=HOUR_US)
    quota = QuotaSpec("q", 10, WindowKind.DAY, 4)
    ledger.admit("r1", [quota], T0)
    with pytest.raises(AdmissionExpired) as raised:
        ledger.admit("r2", [quota], T0 + HOUR_US, deadline_us=T0 + HOUR_US - 1)
    assert (raised.value.now_us, raised.value.deadline_us) == (T0 + HOUR_US, T0 + HOUR_US - 1)
    # Not even r1's due hold was reaped.
    assert ledger.get(f"q:{T0 // DAY_US}", T0 + HOUR_US) == 4
    assert ledger.open_holds == 1


def test_a_hold_reaped_after_its_window_ended_is_not_remembered() -> None:
    ledger = MemoryLedger(hold_ttl_us=HOUR_US)
    quota = QuotaSpec("q", 10, WindowKind.DAY, 4)
    admitted = ledger.admit("r1", [quota], T0 + DAY_US - 1)
    key = admitted.holds[0].key
    assert ledger.reap(T0 + DAY_US + HOUR_US) == 1
    # The day is over, its counter gone: the late settlement has nothing to charge.
    ledger.settle(admitted.holds, [3], T0 + DAY_US + HOUR_US)
    assert ledger.get(key, 0) is None
    assert ledger.open_holds == 0


def test_windows_that_ended_are_forgotten_holds_included() -> None:
    ledger = MemoryLedger()
    quota = QuotaSpec("q", 10_000, WindowKind.DAY, 1)
    ledger.admit("r0", [quota], T0)
    assert ledger.open_holds == 1
    # The sweep every 1,024 admissions drops the ended day, and its open hold.
    for n in range(1, 1_024):
        ledger.admit(f"r{n}", [RateSpec("rps", LimitKind.RATE, GcraLimit(1, 1, 1), 0)], T0 + DAY_US)
    assert ledger.open_holds == 0


def test_settled_holds_do_not_pile_up_in_the_reap_queue() -> None:
    book = HoldBook()
    for n in range(10_000):
        hold = Hold(f"r{n}", "q:1", LimitKind.QUOTA, 1, -1, "q")
        book.add(hold, T0 + n)
        assert book.take(hold, T0 + n) == 1
    assert book.open == 0
    # The private queue of the window stays bounded: it is rebuilt as it grows.
    assert len(book._windows["q:1"].queue) <= 64
    assert book.due("q:1", T0 + 10_000) == []
