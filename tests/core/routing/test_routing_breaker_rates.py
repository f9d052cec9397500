"""The breaker's rate rule: the failure rate over a sliding window, with a minimum
volume below which only a streak of failures counts."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router_core.breaker import BUCKETS, Breaker, Circuit, FailureWindow, WindowCounts
from router_core.config import HealthSettings

CLOSED, OPEN = Circuit.CLOSED, Circuit.OPEN

rates = st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
volumes = st.integers(min_value=1, max_value=60)
thresholds = st.integers(min_value=1, max_value=5)


def breaker(**changes: Any) -> Breaker:
    settings = HealthSettings(**changes)
    return Breaker(lambda: settings)


def rated(failure_rate: float, min_requests: int, failure_threshold: int) -> Breaker:
    # open_s longer than any test: an opened circuit stays open.
    return breaker(
        failure_rate=failure_rate, min_requests=min_requests,
        failure_threshold=failure_threshold, window_s=10.0, open_s=1000.0,
    )  # fmt: skip


@given(
    failure_rate=rates,
    min_requests=volumes,
    failure_threshold=thresholds,
    wanted=st.lists(st.booleans(), max_size=300),
)
def test_below_the_failure_rate_at_volume_it_never_opens(
    failure_rate: float, min_requests: int, failure_threshold: int, wanted: list[bool]
) -> None:
    """Once the window holds `min_requests` results, failures at a rate below
    `failure_rate` never open it, however many come in a row."""
    b = rated(failure_rate, min_requests, failure_threshold)
    for _ in range(min_requests):
        b.success(0.0)
    requests, failures = min_requests, 0
    now = 0.0
    for i, wants_failure in enumerate(wanted):
        # Within one window (3 s of 10): every result counts.
        now = i * 0.01
        if wants_failure and (failures + 1) / (requests + 1) < failure_rate:
            b.failure(now, "HTTP 500")
            failures += 1
        else:
            b.success(now)
        requests += 1
        assert b.current(now) is CLOSED, (requests, failures)
    assert b.counts(now).requests == requests
    assert b.counts(now).failures == failures


@given(
    failure_rate=rates,
    min_requests=volumes,
    failure_threshold=thresholds,
    outcomes=st.lists(st.booleans(), min_size=1, max_size=300),
)
def test_at_the_failure_rate_at_volume_the_failure_reaching_it_opens(
    failure_rate: float, min_requests: int, failure_threshold: int, outcomes: list[bool]
) -> None:
    """A failure after which the window holds `min_requests` results or more,
    `failure_rate` or more of them failed, opens the circuit."""
    b = rated(failure_rate, min_requests, failure_threshold)
    failures = 0
    for requests, failed in enumerate(outcomes, 1):
        now = requests * 0.01
        if b.current(now) is OPEN:
            break
        if failed:
            failures += 1
            b.failure(now, "HTTP 500")
            if requests >= min_requests and failures / requests >= failure_rate:
                assert b.current(now) is OPEN, (requests, failures)
        else:
            b.success(now)
            assert b.current(now) is CLOSED  # a success never opens it


@given(
    min_requests=st.integers(min_value=2, max_value=60),
    failure_threshold=thresholds,
    before=st.integers(min_value=0, max_value=60),
)
def test_the_streak_counts_only_below_the_minimum_volume(
    min_requests: int, failure_threshold: int, before: int
) -> None:
    b = rated(1.0, min_requests, failure_threshold)
    for _ in range(before):
        b.success(0.0)
    for n in range(1, failure_threshold + 1):
        b.failure(0.0, "timed out")
        volume = before + n
        if volume < min_requests and n == failure_threshold:
            assert b.current(0.0) is OPEN
        elif volume >= min_requests:
            # At volume only the rate counts, and failure_rate 1.0 needs every result failed.
            assert b.current(0.0) is (OPEN if before == 0 else CLOSED)
        else:
            assert b.current(0.0) is CLOSED


def test_five_percent_errors_at_850_per_second_never_open_it() -> None:
    """The issue's case: with the defaults, 1 error in 20 at 850 requests/s for a
    minute. Three failures in a row opened the old streak breaker within 33 ms."""
    b = breaker()
    for i in range(850 * 60):
        now = i / 850
        # Errors in bursts of three, the streak that used to open it.
        if i % 60 in (30, 31, 32):
            b.failure(now, "HTTP 500")
        else:
            b.success(now)
        assert b.current(now) is CLOSED
    counts = b.counts(60.0)
    assert counts.requests >= 850 * 9
    assert counts.failure_rate is not None
    assert 0.04 < counts.failure_rate < 0.06


def test_a_backend_failing_half_its_requests_at_volume_opens_with_the_defaults() -> None:
    b = breaker()
    for i in range(19):
        b.success(i * 0.01)
    # 19 successes, then failures: the 19th makes 19 of 38, exactly the rate.
    for i in range(18):
        b.failure(1.0 + i * 0.01, "HTTP 503")
        assert b.current(1.0 + i * 0.01) is CLOSED
    b.failure(2.0, "HTTP 503")
    assert b.current(2.0) is OPEN
    # The window starts again once the circuit opened.
    assert b.counts(2.0).requests == 0


def test_results_leave_the_window_after_window_s() -> None:
    b = rated(0.5, 20, 3)
    for _ in range(20):
        b.success(0.0)
    # Still in the window at 9.9 s: three failures in a row are noise at volume.
    for _ in range(3):
        b.failure(9.9, "x")
    assert b.current(9.9) is CLOSED
    assert b.counts(9.9).requests == 23
    # At 10 s the first bucket has left: the window holds only the three failures,
    # too few for a rate, and a fourth failure in a row is a streak past 3.
    assert b.counts(10.0).requests == 3
    b.failure(10.0, "x")
    assert b.current(10.0) is OPEN


def test_a_stream_that_breaks_after_its_success_counts_once() -> None:
    b = rated(0.5, 4, 10)
    b.success(0.0)
    b.success(0.0)
    b.failure(0.5, "stream cut short", answered=True)
    assert (b.counts(0.5).requests, b.counts(0.5).failures) == (2, 1)
    b.success(0.6)
    b.failure(0.7, "stream cut short", answered=True)
    # 3 requests, 2 failed (< 4 results: still the streak rule, 2 < 10).
    assert (b.counts(0.7).requests, b.counts(0.7).failures) == (3, 2)
    assert b.current(0.7) is CLOSED
    b.success(0.8)
    b.failure(0.9, "stream cut short", answered=True)
    # 4 requests, 3 failed: the rate rule, 0.75 >= 0.5.
    assert b.current(0.9) is OPEN


def test_a_broken_stream_whose_success_left_the_window_is_a_failure_now() -> None:
    window = FailureWindow()
    window.add(0.0, 10.0, failed=False)
    window.revise(20.0, 10.0)
    assert window.counts(20.0, 10.0).requests == 1
    assert window.counts(20.0, 10.0).failures == 1


def test_the_window_follows_a_reloaded_length() -> None:
    """Buckets of the old width age out; new results go in buckets of the new one."""
    window = FailureWindow()
    for t in range(10):
        window.add(float(t), 10.0, failed=t % 2 == 0)
    assert window.counts(9.0, 10.0).requests == 10
    # Shortened to 2 s: only the results of the last 2 s count (8 s: failed, 9 s: not).
    assert window.counts(9.0, 2.0) == WindowCounts(2, 1)
    window.add(9.5, 2.0, failed=True)
    assert window.counts(9.5, 2.0) == WindowCounts(3, 2)
    assert window.counts(10.1, 2.0) == WindowCounts(2, 1)


def test_no_results_no_rate() -> None:
    b = breaker()
    assert b.counts(0.0).requests == 0
    assert b.counts(0.0).failure_rate is None


@given(
    window_s=st.sampled_from([1.0, 2.5, 5.0, 10.0]),
    steps=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.125, 0.25, 0.5, 1.0, 3.0]),
            st.sampled_from(["success", "failure", "revise"]),
        ),
        max_size=200,
    ),
)
def test_the_window_counts_what_its_buckets_should_hold(
    window_s: float, steps: list[tuple[float, str]]
) -> None:
    """Against every result kept in a list: a result counts while its bucket's
    start is after `now - window_s`; a revision turns the latest success still
    counted into a failure (a failure now if there is none)."""
    window = FailureWindow()
    kept: list[list[Any]] = []  # [bucket start, failed]
    width = window_s / BUCKETS
    now = 0.0
    for gap, what in steps:
        now += gap
        counted = [r for r in kept if r[0] > now - window_s]
        successes = [r for r in counted if not r[1]]
        if what == "revise":
            window.revise(now, window_s)
            if successes:
                successes[-1][1] = True
            else:
                kept.append([math.floor(now / width) * width, True])
        else:
            window.add(now, window_s, failed=what == "failure")
            kept.append([math.floor(now / width) * width, what == "failure"])
        counted = [r for r in kept if r[0] > now - window_s]
        assert window.counts(now, window_s) == WindowCounts(
            len(counted), sum(r[1] for r in counted)
        )
