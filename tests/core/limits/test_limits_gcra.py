"""GCRA: hand-computed cases, an exact rational oracle, and the rate invariants."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from router_core.limits import MAX_NOW_US, MAX_SAFE_INTEGER, NEVER, GcraLimit, Tat, gcra_check
from router_core.limits.gcra import MAX_SCALED_SPAN, GcraResult

SECOND = 1_000_000
FRESH = Tat()


def run(tat: Tat, now: int, cost: int, limit: GcraLimit) -> GcraResult:
    return gcra_check(tat, now, cost, limit.rate, limit.period_us, limit.burst)


def drain(limit: GcraLimit, now: int, tat: Tat = FRESH) -> tuple[Tat, int]:
    """Admit cost-1 requests at `now` until refused; the TAT and the count admitted."""
    admitted = 0
    while (r := run(tat, now, 1, limit)).allowed:
        tat, admitted = r.new_tat, admitted + 1
    return tat, admitted


# --- hand-computed cases ------------------------------------------------------


def test_ten_per_second_with_burst_twenty() -> None:
    limit = GcraLimit(rate=10, period_us=SECOND, burst=20)
    tat, admitted = drain(limit, 0)
    assert admitted == 20
    assert tat == Tat(2 * SECOND, 0)
    refused = run(tat, 0, 1, limit)
    assert not refused.allowed
    assert refused.retry_after_us == 100_000  # one emission interval: 100 ms
    assert refused.remaining == 0
    assert refused.reset_after_us == 2 * SECOND
    assert refused.new_tat == tat
    # One second later ten more fit, and no eleventh.
    tat, admitted = drain(limit, SECOND, tat)
    assert admitted == 10
    assert not run(tat, SECOND, 1, limit).allowed
    assert run(tat, SECOND + 99_999, 1, limit).retry_after_us == 1
    assert run(tat, SECOND + 100_000, 1, limit).allowed


def test_first_request_reports_remaining_and_reset() -> None:
    r = run(Tat(), 5 * SECOND, 1, GcraLimit(10, SECOND, 20))
    assert r == GcraResult(True, Tat(5 * SECOND + 100_000, 0), 19, 0, 100_000)


def test_a_rate_that_does_not_divide_the_period_stays_exact() -> None:
    limit = GcraLimit(rate=7, period_us=SECOND, burst=2)  # T = 142857 + 1/7 µs
    tat, admitted = drain(limit, 0)
    assert admitted == 2
    assert tat == Tat(285_714, 2)
    assert run(tat, 0, 1, limit).reset_after_us == 285_715
    tat0 = tat
    for k in range(1, 8):
        due = math.ceil(Fraction(k * SECOND, 7))
        early = run(tat, due - 1, 1, limit)
        assert not early.allowed
        assert early.retry_after_us == 1
        r = run(tat, due, 1, limit)
        assert r.allowed, k
        tat = r.new_tat
    # Seven emission intervals are exactly one second: no drift.
    assert tat == Tat(tat0.us + SECOND, tat0.frac)


def test_with_no_tolerance_a_fractional_interval_cannot_be_met_in_whole_microseconds() -> None:
    # burst == cost leaves no jitter tolerance. Whole-microsecond sends at
    # ceil(k * T) are sometimes less than T apart, and admitting both would
    # break the rate bound, so the later one waits for its exact slot.
    limit = GcraLimit(rate=7, period_us=SECOND, burst=1)
    first = run(Tat(), 142_858, 1, limit)  # ceil(T), a fraction late: the fraction is lost
    assert first.new_tat == Tat(285_715, 1)
    assert Fraction(SECOND, 7) > 285_715 - 142_858
    second = run(first.new_tat, 285_715, 1, limit)  # ceil(2T)
    assert not second.allowed
    assert second.retry_after_us == 1


def test_token_rate_charges_the_cost() -> None:
    limit = GcraLimit(rate=1000, period_us=60 * SECOND, burst=1000)  # 1000 tokens/min
    first = run(Tat(), 0, 600, limit)
    assert first.allowed
    assert first.remaining == 400
    second = run(first.new_tat, 0, 600, limit)
    assert not second.allowed
    # 200 tokens over the burst at 60 ms per token.
    assert second.retry_after_us == 12 * SECOND
    assert second.remaining == 400
    assert run(first.new_tat, 12 * SECOND, 600, limit).allowed


# --- edge cases -----------------------------------------------------------------


def test_cost_zero_is_a_pure_peek() -> None:
    limit = GcraLimit(10, SECOND, 20)
    tat, _ = drain(limit, 0)
    peek = run(tat, 500_000, 0, limit)
    assert peek == GcraResult(True, tat, 5, 0, 1_500_000)
    idle = run(Tat(3, 0), SECOND, 0, limit)
    assert idle == GcraResult(True, Tat(3, 0), 20, 0, 0)


def test_cost_above_burst_is_never_admitted() -> None:
    limit = GcraLimit(10, SECOND, 20)
    r = run(Tat(), 10**9, 21, limit)
    assert not r.allowed
    assert r.retry_after_us == NEVER
    assert r.new_tat == Tat()
    assert r.remaining == 20
    assert run(Tat(), 10**9, 20, limit).allowed


def test_now_going_backwards_admits_nothing_extra() -> None:
    limit = GcraLimit(10, SECOND, 20)
    tat, _ = drain(limit, 10 * SECOND)
    back = run(tat, 9 * SECOND, 1, limit)
    # The TAT looks 3 s ahead instead of 2 s: refused, and the wait counts from the earlier now.
    assert not back.allowed
    assert back.retry_after_us == 1_100_000
    assert back.remaining == 0
    assert back.reset_after_us == 3 * SECOND
    assert back.new_tat == tat
    # Far in the past: still refused, all figures finite and exact.
    ancient = run(tat, 0, 0, limit)
    assert not ancient.allowed
    assert ancient.retry_after_us == 12 * SECOND - 2 * SECOND
    assert ancient.remaining == 0


def test_a_fraction_from_another_rate_rounds_up() -> None:
    limit = GcraLimit(10, SECOND, 1)
    r = run(Tat(1000, 7), 0, 1, limit)  # 1000.7 µs
    assert r.retry_after_us == 1000 + 1
    r = run(Tat(1000, 12), 0, 1, limit)  # frac 12 >= rate 10: read as 1001 µs
    assert r.retry_after_us == 1001
    assert r.reset_after_us == 1001


@pytest.mark.parametrize(
    ("tat", "now", "cost", "rate", "period_us", "burst"),
    [
        (Tat(), -1, 1, 10, SECOND, 1),
        (Tat(), MAX_NOW_US + 1, 1, 10, SECOND, 1),
        (Tat(), 0, -1, 10, SECOND, 1),
        (Tat(), 0, 1, 0, SECOND, 1),
        (Tat(), 0, 1, 10, 0, 1),
        (Tat(), 0, 1, 10, SECOND, 0),
        (Tat(), 0, 1, 1, 2**26, 2**25),  # burst * period_us + rate > 2**51
    ],
)
def test_out_of_range_arguments_are_refused(
    tat: Tat, now: int, cost: int, rate: int, period_us: int, burst: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        gcra_check(tat, now, cost, rate, period_us, burst)


def test_bools_and_bad_limits_are_refused() -> None:
    with pytest.raises(TypeError):
        gcra_check(Tat(), 0, True, 10, SECOND, 1)
    with pytest.raises(ValueError, match="2\\*\\*51"):
        GcraLimit(rate=1, period_us=86_400 * SECOND, burst=10**5)
    with pytest.raises(ValueError, match="us must be"):
        Tat(-1, 0)


def test_extremes_stay_exact() -> None:
    now = MAX_NOW_US
    wide = GcraLimit(rate=1, period_us=MAX_SCALED_SPAN - 1, burst=1)
    r = run(Tat(), now, 1, wide)
    assert r.new_tat == Tat(now + MAX_SCALED_SPAN - 1, 0)
    again = run(r.new_tat, now, 1, wide)
    assert again.retry_after_us == MAX_SCALED_SPAN - 1
    fast = GcraLimit(rate=MAX_SCALED_SPAN - 1, period_us=1, burst=1)
    r = run(Tat(), now, 1, fast)
    assert r.new_tat == Tat(now, 1)
    for value in (r.new_tat.us, r.remaining, r.reset_after_us, again.new_tat.us):
        assert value <= MAX_SAFE_INTEGER


# --- an exact rational oracle ---------------------------------------------------


def oracle(
    tat: Fraction, now: int, cost: int, rate: int, period_us: int, burst: int
) -> tuple[bool, Fraction, int, int, int]:
    """GCRA straight from its definition, in exact rationals."""
    t = Fraction(period_us, rate)
    base = max(tat, Fraction(now))
    allowed = cost <= burst and base + cost * t - now <= burst * t
    after = base + cost * t if allowed else base
    new_tat = after if allowed and cost > 0 else tat
    remaining = max(0, math.floor((burst * t - (after - now)) / t))
    if cost > burst:
        retry = NEVER
    else:
        retry = 0 if allowed else math.ceil(base + cost * t - now - burst * t)
    return allowed, new_tat, remaining, retry, math.ceil(after - now)


limits = st.builds(
    GcraLimit,
    rate=st.integers(1, 1000),
    period_us=st.integers(1, 120 * SECOND),
    burst=st.integers(1, 1000),
)


@given(limits, st.integers(0, 10**12), st.integers(0, 10**12), st.data())
def test_matches_the_rational_oracle(
    limit: GcraLimit, now: int, tat_us: int, data: st.DataObject
) -> None:
    frac = data.draw(st.integers(0, limit.rate - 1))
    cost = data.draw(st.integers(0, limit.burst + 2))
    exact = tat_us + Fraction(frac, limit.rate)
    r = run(Tat(tat_us, frac), now, cost, limit)
    allowed, new_tat, remaining, retry, reset = oracle(
        exact, now, cost, limit.rate, limit.period_us, limit.burst
    )
    assert r.allowed == allowed
    assert r.new_tat.us + Fraction(r.new_tat.frac, limit.rate) == new_tat
    assert 0 <= r.new_tat.frac < limit.rate
    assert (r.remaining, r.retry_after_us, r.reset_after_us) == (remaining, retry, reset)


# --- invariants -------------------------------------------------------------------

small_limits = st.builds(
    GcraLimit,
    rate=st.integers(1, 50),
    period_us=st.integers(1, 2 * SECOND),
    burst=st.integers(1, 20),
)


def assert_rate_bound(limit: GcraLimit, admitted: list[tuple[int, int]]) -> None:
    """Units admitted at instants in [t0, t1] <= burst + rate * (t1 - t0) / period_us."""
    events = sorted(admitted)
    for i, (t0, _) in enumerate(events):
        units = 0
        for t1, units_at in events[i:]:
            units += units_at
            assert units * limit.period_us <= (
                limit.burst * limit.period_us + limit.rate * (t1 - t0)
            ), (t0, t1, units)


@given(
    small_limits,
    st.lists(st.tuples(st.integers(0, 3 * SECOND), st.integers(0, 25)), max_size=80),
)
def test_admitted_never_exceeds_burst_plus_rate_times_elapsed(
    limit: GcraLimit, arrivals: list[tuple[int, int]]
) -> None:
    tat, now, admitted = Tat(), 10**12, []
    for gap, cost in arrivals:
        now += gap
        r = run(tat, now, cost, limit)
        if r.allowed:
            admitted.append((now, cost))
        tat = r.new_tat
    assert_rate_bound(limit, admitted)


@given(
    small_limits,
    st.lists(st.tuples(st.integers(-3 * SECOND, 3 * SECOND), st.integers(0, 25)), max_size=80),
)
def test_the_bound_holds_even_when_now_goes_backwards(
    limit: GcraLimit, arrivals: list[tuple[int, int]]
) -> None:
    tat, now, admitted = Tat(), 10**12, []
    for step, cost in arrivals:
        now += step
        r = run(tat, now, cost, limit)
        if r.allowed:
            admitted.append((now, cost))
        assert r.new_tat.us + Fraction(r.new_tat.frac, limit.rate) >= tat.us + Fraction(
            tat.frac, limit.rate
        )
        tat = r.new_tat
    assert_rate_bound(limit, admitted)


def tolerates_whole_microseconds(limit: GcraLimit, cost: int) -> bool:
    """cost * T is whole microseconds, or the burst leaves at least 1 µs of tolerance."""
    return (cost * limit.period_us) % limit.rate == 0 or (
        (limit.burst - cost) * limit.period_us >= limit.rate
    )


@given(small_limits, st.integers(0, 10**12), st.integers(1, 60), st.data())
def test_a_client_at_exactly_the_rate_is_never_refused_after_the_burst(
    limit: GcraLimit, start: int, sends: int, data: st.DataObject
) -> None:
    cost = data.draw(st.integers(1, limit.burst))
    assume(tolerates_whole_microseconds(limit, cost))
    tat, drained = drain(limit, start)
    assert drained == limit.burst
    interval = Fraction(cost * limit.period_us, limit.rate)
    for k in range(1, sends + 1):
        due = start + interval * k
        on_time = math.ceil(due)
        if on_time - 1 < due:
            # A microsecond before its slot is too early: the limit is tight, not loose.
            assert not run(tat, on_time - 1, cost, limit).allowed
        r = run(tat, on_time, cost, limit)
        assert r.allowed, k
        tat = r.new_tat


@given(small_limits, st.integers(0, 20))
def test_a_greedy_client_gets_exactly_burst_plus_rate_times_elapsed(
    limit: GcraLimit, periods: int
) -> None:
    assume(tolerates_whole_microseconds(limit, 1))
    horizon = periods * limit.period_us
    tat, now, admitted = Tat(), 0, 0
    while now <= horizon:
        r = run(tat, now, 1, limit)
        if r.allowed:
            admitted, tat = admitted + 1, r.new_tat
            continue
        # retry_after_us is the shortest wait that works.
        assert not run(tat, now + r.retry_after_us - 1, 1, limit).allowed
        now += r.retry_after_us
    assert admitted == limit.burst + limit.rate * horizon // limit.period_us


@given(small_limits, st.integers(0, 10**9), st.integers(0, 10**9), st.data())
def test_remaining_and_reset_are_exact(
    limit: GcraLimit, tat_us: int, now: int, data: st.DataObject
) -> None:
    tat = Tat(tat_us, data.draw(st.integers(0, limit.rate - 1)))
    r = run(tat, now, data.draw(st.integers(0, limit.burst)), limit)
    _, extra = drain(limit, now, r.new_tat)
    assert extra == r.remaining
    full = run(r.new_tat, now + r.reset_after_us, 0, limit)
    assert full.remaining == limit.burst
    if r.reset_after_us > 0:
        assert run(r.new_tat, now + r.reset_after_us - 1, 0, limit).remaining < limit.burst
