"""Budgets: exact prices, worst-case reservations, and committed + reserved <= limit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from router_core.limits import (
    BudgetState,
    Price,
    ReserveResult,
    cost,
    max_affordable_tokens,
    price_from_usd_per_million,
    release,
    reserve,
    settle,
    worst_case,
)

# --- prices -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd_per_million", "nanos"),
    [
        ("0.15", 150),
        ("2.50", 2500),
        (" 10 ", 10_000),
        (Decimal("0.075"), 75),
        (3, 3000),
        ("0", 0),
        ("1.5000", 1500),
        ("1E+2", 100_000),
        ("0.001", 1),
    ],
)
def test_prices_convert_exactly(usd_per_million: str | Decimal | int, nanos: int) -> None:
    assert price_from_usd_per_million(usd_per_million, "0") == Price(nanos, 0)
    assert price_from_usd_per_million("0", usd_per_million) == Price(0, nanos)


@pytest.mark.parametrize(
    ("usd_per_million", "message"),
    [
        ("0.0375", "at most 3 decimal places"),
        ("0.0001", "at most 3 decimal places"),
        ("-1", ">= 0"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("Infinity", "finite"),
        ("", "not a number"),
        ("two dollars", "not a number"),
        ("1." + "0" * 70 + "1", "too many digits"),
        ("1e20", "too large"),
    ],
)
def test_unrepresentable_prices_are_refused(usd_per_million: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        price_from_usd_per_million("1", usd_per_million)
    assert "output price" in str(raised.value)


@pytest.mark.parametrize("value", [0.15, True, None])
def test_floats_and_other_types_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="input price"):
        price_from_usd_per_million(value, "1")  # type: ignore[arg-type]


@given(st.integers(0, 10**12))
def test_any_whole_nano_price_round_trips(nanos: int) -> None:
    usd_per_million = Decimal(nanos).scaleb(-3)
    assert (
        price_from_usd_per_million(str(usd_per_million), usd_per_million).input_nanos_per_token
        == nanos
    )


# --- costs --------------------------------------------------------------------------

PRICE = Price(input_nanos_per_token=150, output_nanos_per_token=600)  # $0.15 / $0.60 per 1M


def test_costs_are_exact_nanos() -> None:
    assert cost(PRICE, prompt_tokens=1000, completion_tokens=500) == 450_000
    assert worst_case(PRICE, prompt_tokens_upper_bound=1000, max_tokens=4096) == 2_607_600
    with pytest.raises(ValueError, match="completion_tokens"):
        cost(PRICE, 1, -1)


def test_max_affordable_tokens() -> None:
    assert max_affordable_tokens(PRICE, prompt_tokens=1000, remaining=1_000_000) == 1416
    assert worst_case(PRICE, 1000, 1416) <= 1_000_000 < worst_case(PRICE, 1000, 1417)
    assert max_affordable_tokens(PRICE, 1000, 150_000) == 0
    assert max_affordable_tokens(PRICE, 1000, 149_999) == -1
    assert max_affordable_tokens(PRICE, 1000, -5) == -1
    assert max_affordable_tokens(Price(150, 0), 1000, 150_000) is None
    assert max_affordable_tokens(Price(150, 0), 1000, 149_999) == -1


@given(
    st.integers(0, 10**4), st.integers(1, 10**4), st.integers(0, 10**6), st.integers(-10, 10**10)
)
def test_max_affordable_is_the_largest_that_fits(
    input_price: int, output_price: int, prompt: int, remaining: int
) -> None:
    price = Price(input_price, output_price)
    m = max_affordable_tokens(price, prompt, remaining)
    assert m is not None
    if m == -1:
        assert cost(price, prompt, 0) > remaining
    else:
        assert worst_case(price, prompt, m) <= remaining < worst_case(price, prompt, m + 1)


# --- reservations ---------------------------------------------------------------------


def test_cache_reads_and_writes_cost_their_own_rates() -> None:
    # Anthropic's shape: reads at a tenth of input, writes at 1.25 times.
    price = price_from_usd_per_million("3", "15", cache_read="0.3", cache_write="3.75")
    # 1,000 prompt tokens: 600 read from the cache, 300 written to it, 100 fresh.
    assert cost(price, 1000, 10, cached_tokens=600, cache_write_tokens=300) == (
        100 * 3000 + 600 * 300 + 300 * 3750 + 10 * 15000
    )
    # Without cache rates, cached tokens cost the input rate: nothing changes.
    plain = price_from_usd_per_million("3", "15")
    assert cost(plain, 1000, 10, cached_tokens=600, cache_write_tokens=300) == cost(plain, 1000, 10)
    # A report of more cached tokens than the prompt holds is capped at the prompt.
    assert cost(price, 10, 0, cached_tokens=50, cache_write_tokens=50) == 10 * 300
    with pytest.raises(ValueError, match="cached_tokens"):
        cost(price, 10, 0, cached_tokens=-1)


def test_the_worst_case_prices_the_prompt_at_its_dearest_rate() -> None:
    price = price_from_usd_per_million("3", "15", cache_read="0.3", cache_write="3.75")
    assert worst_case(price, 1000, 10) == 1000 * 3750 + 10 * 15000
    assert max_affordable_tokens(price, 1000, 1000 * 3750 + 10 * 15000) == 10


@given(
    st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
    st.integers(0, 10**5), st.integers(0, 10**5), st.integers(0, 10**5), st.integers(0, 10**5),
)  # fmt: skip
def test_no_split_of_the_prompt_costs_more_than_the_worst_case(
    prompt: int, completion: int, read: int, written: int,
    fresh_rate: int, out_rate: int, read_rate: int, write_rate: int,
) -> None:  # fmt: skip
    """What a reservation holds is a true upper bound, however the cache served it."""
    price = Price(fresh_rate, out_rate, read_rate, write_rate)
    assert cost(price, prompt, completion, read, written) <= worst_case(price, prompt, completion)


def test_reserve_settle_release_by_hand() -> None:
    state = BudgetState()
    first = reserve(state, 600, limit=1000)
    assert first == ReserveResult(True, BudgetState(0, 600), 400)
    second = reserve(first.new_state, 500, limit=1000)
    assert second == ReserveResult(False, BudgetState(0, 600), 400)
    third = reserve(first.new_state, 400, limit=1000)
    assert third == ReserveResult(True, BudgetState(0, 1000), 0)
    settled = settle(third.new_state, reserved_amount=600, actual=250)
    assert settled == BudgetState(committed=250, reserved=400)
    assert release(settled, 400) == BudgetState(250, 0)
    assert reserve(BudgetState(250, 0), 750, 1000).allowed
    assert reserve(BudgetState(), 0, 0) == ReserveResult(True, BudgetState(), 0)


def test_an_actual_above_its_reservation_is_charged_and_blocks_later_reservations() -> None:
    held = reserve(BudgetState(), 900, limit=1000).new_state
    over = settle(held, reserved_amount=900, actual=1200)
    assert over == BudgetState(1200, 0)
    assert over.spent > 1000
    assert reserve(over, 0, 1000).allowed is False
    assert reserve(over, 1, 1000) == ReserveResult(False, over, 0)


def test_settling_more_than_is_reserved_clamps_at_zero() -> None:
    assert settle(BudgetState(10, 100), reserved_amount=300, actual=40) == BudgetState(50, 0)


class Reservations(RuleBasedStateMachine):
    """Requests reserve their worst case, then settle (or release) in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = 2_000_000
        self.state = BudgetState()
        self.open: list[tuple[int, int, int]] = []  # (amount, prompt bound, max_tokens)
        self.settled_total = 0

    @rule(prompt=st.integers(0, 4000), max_tokens=st.integers(0, 4000))
    def admit(self, prompt: int, max_tokens: int) -> None:
        amount = worst_case(PRICE, prompt, max_tokens)
        r = reserve(self.state, amount, self.limit)
        assert r.allowed == (self.state.spent + amount <= self.limit)
        self.state = r.new_state
        if r.allowed:
            self.open.append((amount, prompt, max_tokens))

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """The response ends, or the client cancels: charge what was consumed."""
        amount, prompt_bound, max_tokens = self.open.pop(
            data.draw(st.integers(0, len(self.open) - 1))
        )
        used = cost(
            PRICE,
            data.draw(st.integers(0, prompt_bound)),
            data.draw(st.integers(0, max_tokens)),
        )
        self.state = settle(self.state, amount, used)
        self.settled_total += used

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        """The backend failed before consuming anything."""
        amount, _, _ = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        self.state = release(self.state, amount)

    @invariant()
    def holds(self) -> None:
        assert self.state.committed + self.state.reserved <= self.limit
        assert self.state.reserved == sum(amount for amount, _, _ in self.open)
        assert self.state.committed == self.settled_total

    def teardown(self) -> None:
        for amount, _, _ in self.open:
            self.state = release(self.state, amount)
        assert self.state.reserved == 0
        assert self.state.committed == self.settled_total


TestReservations = Reservations.TestCase
