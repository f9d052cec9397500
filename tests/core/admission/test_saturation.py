"""The saturation math: smoothed event-loop lag and the gradient concurrency limit."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from router_core.config_enums import Priority
from router_core.saturation import (
    GradientLimit,
    busy_limit,
    expected_wait_s,
    lag_now,
    lag_threshold,
    smooth_hold,
    smooth_lag,
)

seconds = st.floats(min_value=0, max_value=60, allow_nan=False)
latencies = st.floats(min_value=1e-6, max_value=10, allow_nan=False)
limits = st.integers(min_value=1, max_value=5_000)
tolerances = st.floats(min_value=1, max_value=10, allow_nan=False)


@given(current=seconds, sample=st.floats(min_value=-1, max_value=60, allow_nan=False))
def test_the_smoothed_lag_moves_toward_the_sample_and_never_past_it(
    current: float, sample: float
) -> None:
    after = smooth_lag(current, sample)
    low, high = sorted((current, max(0.0, sample)))
    assert low <= after <= high
    assert after >= 0


def test_a_stall_shows_at_once_and_one_slow_turn_alone_does_not_shed() -> None:
    assert smooth_lag(0.0, 2.0) == 1.0  # a 2 s stall: 1 s of lag after one probe
    assert smooth_lag(0.0, 0.15) < 0.1  # one 150 ms turn stays under a 100 ms threshold
    lag = 0.0
    for _ in range(2):  # ...but two in a row do not
        lag = smooth_lag(lag, 0.15)
    assert lag > 0.1


def test_the_lag_stays_up_while_a_stalls_backlog_is_worked_off() -> None:
    lag = smooth_lag(0.0, 2.0)
    falls = 0
    while lag > 0.1:
        lag = smooth_lag(lag, 0.0)
        falls += 1
    assert falls == 11  # 11 healthy probes (0.55 s at 50 ms) to fall back under 100 ms


@given(smoothed=seconds, overdue=st.floats(min_value=-1, max_value=60, allow_nan=False))
def test_an_overdue_probe_only_ever_raises_the_lag(smoothed: float, overdue: float) -> None:
    now = lag_now(smoothed, overdue)
    assert now >= smoothed
    assert now == (smoothed if overdue <= smoothed else smooth_lag(smoothed, overdue))


def test_low_priority_is_shed_first() -> None:
    thresholds = [lag_threshold(0.1, p) for p in (Priority.LOW, Priority.NORMAL, Priority.HIGH)]
    assert thresholds == [0.05, 0.1, 0.2]


@given(
    limit=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    baseline=st.none() | latencies,
    latency=latencies,
    in_flight=st.integers(min_value=0, max_value=10_000),
    low=limits,
    high=limits,
    tolerance=tolerances,
)
def test_the_limit_stays_within_its_bounds(
    limit: float,
    baseline: float | None,
    latency: float,
    in_flight: int,
    low: int,
    high: int,
    tolerance: float,
) -> None:
    after = GradientLimit(limit, baseline).update(
        latency, in_flight, min_limit=low, max_limit=high, tolerance=tolerance
    )
    assert min(low, high) <= after.limit <= high
    assert min(low, high) <= after.admits(low, high) <= high
    assert after.baseline_s is not None
    assert after.baseline_s > 0


@given(
    limit=st.integers(min_value=16, max_value=1_000),
    baseline=latencies,
    slower=st.floats(min_value=1.01, max_value=100),
    in_flight=st.integers(min_value=0, max_value=2_000),
    tolerance=tolerances,
)
def test_a_latency_worse_than_tolerated_never_raises_the_limit(
    limit: int, baseline: float, slower: float, in_flight: int, tolerance: float
) -> None:
    latency = baseline * tolerance * slower
    after = GradientLimit(float(limit), baseline).update(
        latency, in_flight, min_limit=1, max_limit=5_000, tolerance=tolerance
    )
    assert after.limit <= limit
    # ...and starts from what is in flight when that is less (a limit far above use
    # says nothing of capacity).
    assert after.limit <= max(1, min(limit, in_flight))


@given(
    limit=st.integers(min_value=1, max_value=1_000),
    baseline=latencies,
    in_flight=st.integers(min_value=0, max_value=2_000),
    tolerance=tolerances,
)
def test_a_usual_latency_never_lowers_the_limit_and_only_use_raises_it(
    limit: int, baseline: float, in_flight: int, tolerance: float
) -> None:
    after = GradientLimit(float(limit), baseline).update(
        baseline, in_flight, min_limit=1, max_limit=5_000, tolerance=tolerance
    )
    assert after.limit >= limit
    if in_flight * 2 < limit:
        assert after.limit == limit  # no load earned growth
    else:
        # (close, not equal: the step is computed as base + 0.2 * (target - base))
        assert math.isclose(after.limit, limit + 0.2 * math.sqrt(limit), rel_tol=1e-12)


def test_the_limit_settles_near_what_the_system_can_take() -> None:
    """A system that takes 50 at once: latency grows with what is in flight above
    that. Light load first (the baseline is learned), then a flood far beyond it:
    within a few dozen windows the limit is near 50 x tolerance, not the hard cap."""
    capacity, tolerance = 50, 2.0
    gradient = GradientLimit(1024.0)
    for window in range(130):
        demand = 5 if window < 100 else 5_000
        in_flight = min(gradient.admits(4, 1024), demand)
        latency = 0.01 * max(1.0, in_flight / capacity)
        gradient = gradient.update(
            latency, in_flight, min_limit=4, max_limit=1024, tolerance=tolerance
        )
    assert capacity <= gradient.admits(4, 1024) <= capacity * tolerance * 1.5


def test_the_bounds_in_force_apply_to_a_limit_computed_before() -> None:
    gradient = GradientLimit(500.0)
    assert gradient.admits(16, 100) == 100  # the hard cap shrank on a reload
    assert gradient.admits(600, 1000) == 600
    assert gradient.admits(600, 400) == 400  # a floor above the cap yields to it


def test_the_expected_wait_follows_littles_law() -> None:
    assert expected_wait_s(0, None, 4) is None  # nothing measured: wait
    assert expected_wait_s(0, 2.0, 0) is None
    assert expected_wait_s(0, 2.0, 4) == 0.5  # a slot frees every 0.5 s
    assert expected_wait_s(3, 2.0, 4) == 2.0  # the fourth in line waits for four
    hold = smooth_hold(None, 10.0)
    assert hold == 10.0
    assert smooth_hold(hold, 0.0) == 8.0  # a fifth of the way
    assert smooth_hold(hold, -1.0) == 8.0  # a clock step back counts as 0


busy_shares = st.floats(min_value=0, max_value=4, allow_nan=False)
targets = st.floats(min_value=0.1, max_value=1, allow_nan=False)
in_flights = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(
    limit=st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False),
    in_flight=in_flights, busy=busy_shares, target=targets, low=limits, high=limits,
)  # fmt: skip
def test_the_busy_limit_stays_within_its_bounds(
    limit: float | None, in_flight: float, busy: float, target: float, low: int, high: int
) -> None:
    after = busy_limit(limit, in_flight, busy, target=target, min_limit=low, max_limit=high)
    assert min(low, high) <= after <= high


@given(in_flight=in_flights, busy=busy_shares, target=targets)
def test_over_the_target_the_limit_drops_to_what_fits_and_never_grows(
    in_flight: float, busy: float, target: float
) -> None:
    after = busy_limit(500.0, in_flight, busy, target=target, min_limit=1, max_limit=1_000)
    if busy > target:
        assert after <= 500.0
        assert after == max(1.0, min(500.0, in_flight * target / busy))
    else:
        assert after >= 500.0


def test_the_busy_limit_drops_at_once_to_the_measured_fit() -> None:
    # 400 streams kept the router 100 % busy: at 80 %, 320 fit.
    assert busy_limit(None, 400, 1.0, target=0.8, min_limit=16, max_limit=1024) == 320
    # ...never below the floor.
    assert busy_limit(320, 10, 1.0, target=0.8, min_limit=16, max_limit=1024) == 16


def test_under_the_target_only_a_limit_in_use_grows() -> None:
    # 300 in flight against a limit of 320, 60 % busy at an 80 % target: 400
    # would fit; the limit moves half way.
    assert busy_limit(320, 300, 0.6, target=0.8, min_limit=16, max_limit=1024) == 360
    # An idle router's few requests say nothing of its capacity: no move.
    assert busy_limit(320, 5, 0.02, target=0.8, min_limit=16, max_limit=1024) == 320
    # Growth is at least one request a window, and never past the cap.
    assert busy_limit(320, 320, 0.7999, target=0.8, min_limit=16, max_limit=1024) == 321
    assert busy_limit(1000, 1000, 0.1, target=0.8, min_limit=16, max_limit=1024) == 1024


def test_the_busy_limit_settles_where_the_cpu_meets_the_target() -> None:
    """A router whose requests cost 0.4 % of a core each, 1,000 clients: the limit
    settles at the 200 that keep it 80 % busy, and the CPU never stays above."""
    limit: float | None = None
    for _ in range(100):
        in_flight = min(1000.0, limit if limit is not None else 1024.0)
        busy = in_flight * 0.004
        limit = busy_limit(limit, in_flight, busy, target=0.8, min_limit=16, max_limit=1024)
    assert limit is not None
    assert 199 <= limit <= 201
