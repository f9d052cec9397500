"""The retry budget: retries never exceed their share, however calls interleave."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from router_core.config import RoutingSettings
from router_core.retry_budget import RetryBudget

EPS = 1e-9


def retry_budget(
    ratio: float, min_per_s: float, balance: float = 0.0, last: float | None = None
) -> RetryBudget:
    """A budget whose settings never change (the router's follow its running config)."""
    settings = RoutingSettings(retry_budget_ratio=ratio, retry_min_per_s=min_per_s)
    return RetryBudget(lambda: settings, balance, last)


def test_a_fresh_budget_allows_one_seconds_floor() -> None:
    budget = retry_budget(ratio=0.0, min_per_s=3.0)
    granted = [budget.try_retry(10.0) for _ in range(5)]
    assert granted == [True, True, True, False, False]


def test_requests_earn_retries_at_the_ratio() -> None:
    budget = retry_budget(ratio=0.2, min_per_s=0.0)
    for _ in range(4):
        budget.request(0.0)
    assert not budget.try_retry(0.0)
    budget.request(0.0)
    assert budget.try_retry(0.0)
    assert not budget.try_retry(0.0)


def test_time_earns_retries_at_the_floor() -> None:
    budget = retry_budget(ratio=0.0, min_per_s=2.0)
    assert budget.try_retry(0.0)
    assert budget.try_retry(0.0)
    assert not budget.try_retry(0.0)
    assert not budget.try_retry(0.25)
    assert budget.try_retry(0.5)
    assert not budget.try_retry(0.5)


def test_banked_tokens_stop_at_the_cap() -> None:
    budget = retry_budget(ratio=1.0, min_per_s=2.0)
    assert budget.cap == 20.0
    for _ in range(1000):
        budget.request(0.0)
    budget.request(3600.0)
    assert sum(budget.try_retry(3600.0) for _ in range(100)) == 20


def test_a_long_quiet_spell_banks_at_most_the_cap() -> None:
    budget = retry_budget(ratio=0.5, min_per_s=3.0)
    assert budget.try_retry(0.0)
    assert sum(budget.try_retry(3600.0) for _ in range(100)) == budget.cap == 30.0


def test_the_cap_is_at_least_ten() -> None:
    assert retry_budget(ratio=0.1, min_per_s=0.0).cap == 10.0
    assert retry_budget(ratio=0.1, min_per_s=0.5).cap == 10.0
    assert retry_budget(ratio=0.1, min_per_s=5.0).cap == 50.0


def test_no_ratio_and_no_floor_means_no_retries() -> None:
    budget = retry_budget(ratio=0.0, min_per_s=0.0)
    for t in range(100):
        budget.request(float(t))
        assert not budget.try_retry(float(t))


def test_settings_are_read_on_every_call_so_a_reload_reaches_the_budget() -> None:
    settings = [RoutingSettings(retry_budget_ratio=0.0, retry_min_per_s=0.0)]
    budget = RetryBudget(lambda: settings[-1])
    budget.request(0.0)
    assert not budget.try_retry(0.0)
    settings.append(RoutingSettings(retry_budget_ratio=1.0, retry_min_per_s=0.0))
    budget.request(0.0)
    assert budget.try_retry(0.0)
    assert not budget.try_retry(0.0)
    settings.append(RoutingSettings(retry_budget_ratio=0.0, retry_min_per_s=2.0))
    assert budget.try_retry(1.0)  # one second of the new floor: two retries
    assert budget.try_retry(1.0)
    assert not budget.try_retry(1.0)


def test_time_going_back_earns_nothing_and_is_not_counted_twice() -> None:
    budget = retry_budget(ratio=0.0, min_per_s=1.0)
    assert budget.try_retry(100.0)
    assert not budget.try_retry(100.0)
    assert not budget.try_retry(90.0)
    # Back at 100 after a step back: still nothing new until time passes 100.
    assert not budget.try_retry(100.0)
    assert not budget.try_retry(100.5)
    assert budget.try_retry(101.0)


# For any interleaving


def interleavings(kinds: list[str]) -> st.SearchStrategy[list[tuple[str, float]]]:
    return st.lists(
        st.tuples(
            st.sampled_from(kinds),
            # Mostly forward in small steps; now and then a step back or a
            # quiet spell long enough to fill the bank.
            st.one_of(
                st.just(0.0),
                st.floats(min_value=0, max_value=2),
                st.floats(min_value=-5, max_value=0),
                st.floats(min_value=0, max_value=100),
            ),
        ),
        min_size=10,
        max_size=150,
    )


# Busy (requests bank more than the cap), mixed, and retry storms.
calls = st.sampled_from(
    [["request"] * 9 + ["retry"], ["request", "retry"], ["request"] + ["retry"] * 4]
).flatmap(interleavings)


@given(
    ratio=st.floats(min_value=0, max_value=2),
    min_per_s=st.floats(min_value=0, max_value=20),
    start=st.floats(min_value=0, max_value=1e6),
    calls=calls,
)
def test_retries_never_exceed_ratio_times_requests_plus_floor_plus_cap(
    ratio: float, min_per_s: float, start: float, calls: list[tuple[str, float]]
) -> None:
    """Over every stretch of calls i..j: retries granted <= ratio x requests +
    min_per_s x (how far the latest time seen moved) + cap. Time that goes back
    and forward again is counted once."""
    budget = retry_budget(ratio, min_per_s)
    times = list(itertools.accumulate((step for _, step in calls), initial=start))[1:]
    # After k calls (index 0: before any): counts, the latest time seen, and the
    # balance. The budget's clock starts at the first call, which finds one
    # second's worth of the floor banked.
    latests = [times[0], *itertools.accumulate(times, max)]
    requests, retries, banked = [0], [0], [min_per_s]
    for (kind, _), now in zip(calls, times, strict=True):
        is_request = kind == "request"
        if is_request:
            budget.request(now)
        granted = not is_request and budget.try_retry(now)
        requests.append(requests[-1] + is_request)
        retries.append(retries[-1] + granted)
        banked.append(budget.balance)
        assert 0.0 <= budget.balance <= budget.cap + EPS
    assert banked[0] <= budget.cap
    for i, j in itertools.combinations(range(len(latests)), 2):
        granted_in = retries[j] - retries[i]
        earned = ratio * (requests[j] - requests[i]) + min_per_s * (latests[j] - latests[i])
        # Retries are whole; the slack only absorbs floating-point sums.
        slack = 1e-6 * (1 + earned + budget.cap)
        assert granted_in <= budget.cap + earned + slack
        # Sharper: tokens never come from nowhere (what is left plus what was
        # spent is at most what was banked plus what was earned).
        assert banked[j] + granted_in <= banked[i] + earned + slack


@given(
    ratio=st.floats(min_value=0.05, max_value=1),
    requests=st.integers(min_value=0, max_value=200),
)
def test_a_busy_router_gets_its_full_share(ratio: float, requests: int) -> None:
    """The budget is not stingier than promised: with no floor, every
    `1 / ratio` requests earn one retry (up to the cap)."""
    budget = retry_budget(ratio, min_per_s=0.0)
    for _ in range(requests):
        budget.request(0.0)
    granted = 0
    while budget.try_retry(0.0):
        granted += 1
    earned = min(budget.cap, ratio * requests)
    assert int(earned + EPS) - 1 <= granted <= earned + EPS


@given(
    min_per_s=st.floats(min_value=0.1, max_value=20),
    seconds=st.integers(min_value=1, max_value=100),
)
def test_a_quiet_router_gets_its_floor(min_per_s: float, seconds: int) -> None:
    budget = retry_budget(ratio=0.0, min_per_s=min_per_s)
    granted = 0
    for t in range(seconds + 1):
        while budget.try_retry(float(t)):
            granted += 1
    expected = min_per_s * (seconds + 1)  # one second's worth at the start
    assert expected - 1 - EPS * seconds <= granted <= expected + EPS
