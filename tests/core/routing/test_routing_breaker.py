"""The circuit breaker: its transitions, checked one by one and against a reference model."""

from __future__ import annotations

import enum

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.breaker import RAMP_FLOOR, Breaker, Circuit, Ewma
from router_core.config import HealthSettings

CLOSED, OPEN, HALF_OPEN = Circuit.CLOSED, Circuit.OPEN, Circuit.HALF_OPEN


def breaker(
    failure_threshold: int = 3, open_s: float = 5.0, half_open_max: int = 1, ramp_s: float = 10.0
) -> Breaker:
    settings = HealthSettings(
        failure_threshold=failure_threshold,
        open_s=open_s,
        half_open_max=half_open_max,
        ramp_s=ramp_s,
    )
    return Breaker(lambda: settings)


def opened(
    at: float = 100.0,
    *,
    failure_threshold: int = 3,
    open_s: float = 5.0,
    half_open_max: int = 1,
    ramp_s: float = 10.0,
) -> Breaker:
    """A breaker whose circuit opened at `at` (by a failed probe)."""
    b = breaker(failure_threshold, open_s, half_open_max, ramp_s)
    b.probe(at, ok=False, reason="down")
    assert b.current(at) is OPEN
    return b


def closed_after_recovery(at: float = 100.0, ramp_s: float = 10.0) -> Breaker:
    """A breaker that has just closed again (at `at`) after a trial succeeded."""
    b = opened(at - 5.0, open_s=5.0, ramp_s=ramp_s)
    b.begin(at)
    b.success(at)
    assert b.current(at) is CLOSED
    return b


# Closed -> open


def test_opens_after_exactly_threshold_consecutive_failures() -> None:
    b = breaker(failure_threshold=3)
    b.failure(1.0, "timeout")
    b.failure(2.0, "timeout")
    assert b.current(2.0) is CLOSED
    assert b.available(2.0)
    b.failure(3.0, "HTTP 502")
    assert b.current(3.0) is OPEN
    assert not b.available(3.0)
    assert b.last_failure == "HTTP 502"


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(failure_threshold=3)
    for t in range(10):
        b.failure(float(t), "x")
        b.failure(float(t), "x")
        b.success(float(t))
    assert b.current(10.0) is CLOSED


def test_threshold_one_opens_on_the_first_failure() -> None:
    b = breaker(failure_threshold=1)
    b.failure(0.0, "x")
    assert b.current(0.0) is OPEN


def test_one_failed_probe_opens_a_closed_circuit() -> None:
    b = breaker(failure_threshold=50)
    b.probe(7.0, ok=False)
    assert b.current(7.0) is OPEN
    assert b.last_failure == "active probe failed"


def test_a_failed_probe_keeps_its_reason() -> None:
    b = breaker()
    b.probe(7.0, ok=False, reason="connect refused")
    assert b.last_failure == "connect refused"


def test_a_successful_probe_does_not_change_a_closed_circuit() -> None:
    b = breaker(failure_threshold=2)
    b.failure(0.0, "x")
    b.probe(1.0, ok=True)
    b.failure(2.0, "x")
    # A probe is not a request: it does not reset the passive failure count.
    assert b.current(2.0) is OPEN


# Open -> half-open


def test_open_rejects_until_open_s_then_half_opens() -> None:
    b = opened(at=100.0, open_s=5.0)
    assert not b.available(104.75)
    assert b.current(104.75) is OPEN
    assert b.available(105.0)
    assert b.current(105.0) is HALF_OPEN


def test_failures_while_open_do_not_extend_the_cool_down() -> None:
    b = opened(at=100.0, open_s=5.0)
    b.failure(103.0, "late answer of an old request")
    assert b.current(105.0) is HALF_OPEN
    assert b.last_failure == "late answer of an old request"


def test_a_successful_probe_half_opens_at_once() -> None:
    b = opened(at=100.0, open_s=60.0)
    b.probe(101.0, ok=True)
    assert b.current(101.0) is HALF_OPEN
    assert b.available(101.0)


def test_a_successful_probe_does_not_shorten_an_outage_that_requests_found() -> None:
    """A hung or erroring backend can still list its models: only the cool-down counts."""
    settings = HealthSettings(failure_threshold=1, open_s=60.0)
    b = Breaker(lambda: settings)
    b.failure(100.0, "timed out")
    b.probe(101.0, ok=True)
    assert b.current(101.0) is OPEN
    assert not b.available(159.0)
    assert b.current(160.0) is HALF_OPEN


def test_settings_are_read_on_every_call_so_a_reload_reaches_a_breaker() -> None:
    """A breaker keeps no copy of its settings: lower the threshold and the next
    failure opens it; shorten the cool-down and it is half-open sooner."""
    settings = [HealthSettings(failure_threshold=5, open_s=60.0)]
    b = Breaker(lambda: settings[-1])
    b.failure(1.0, "timed out")
    b.failure(1.0, "timed out")
    assert b.current(1.0) is CLOSED
    settings.append(HealthSettings(failure_threshold=3, open_s=60.0))
    b.failure(2.0, "timed out")
    assert b.current(2.0) is OPEN
    assert b.current(10.0) is OPEN
    settings.append(HealthSettings(failure_threshold=3, open_s=5.0))
    assert b.current(10.0) is HALF_OPEN


def test_a_failed_probe_while_open_does_not_restart_the_cool_down() -> None:
    b = opened(at=100.0, open_s=5.0)
    b.probe(104.0, ok=False)
    assert b.current(105.0) is HALF_OPEN


# Half-open


def test_half_open_admits_half_open_max_trials_at_a_time() -> None:
    b = opened(at=0.0, open_s=1.0, half_open_max=2)
    assert b.available(1.0)
    b.begin(1.0)
    assert b.available(1.0)
    b.begin(1.0)
    assert not b.available(1.0)
    assert b.current(1.0) is HALF_OPEN


def test_available_does_not_take_a_trial_slot() -> None:
    b = opened(at=0.0, open_s=1.0, half_open_max=1)
    for _ in range(5):
        assert b.available(1.0)


def test_abandoned_frees_a_trial_slot() -> None:
    b = opened(at=0.0, open_s=1.0, half_open_max=1)
    b.begin(1.0)
    assert not b.available(1.0)
    b.abandoned(1.5)
    assert b.available(1.5)
    assert b.current(1.5) is HALF_OPEN


def test_abandoned_never_makes_trials_negative() -> None:
    b = opened(at=0.0, open_s=1.0, half_open_max=1)
    assert b.current(1.0) is HALF_OPEN
    b.abandoned(1.0)
    b.abandoned(1.0)
    b.begin(1.0)
    assert not b.available(1.0)


def test_abandoned_in_closed_or_open_changes_nothing() -> None:
    b = breaker()
    b.abandoned(0.0)
    assert b.current(0.0) is CLOSED
    b = opened(at=0.0, open_s=5.0)
    b.abandoned(1.0)
    assert b.current(1.0) is OPEN


def test_a_trial_success_closes() -> None:
    b = opened(at=0.0, open_s=1.0)
    b.begin(1.0)
    b.success(2.0)
    assert b.current(2.0) is CLOSED
    assert b.closed_at == 2.0
    assert b.available(2.0)


def test_a_trial_failure_reopens_and_restarts_the_cool_down() -> None:
    b = opened(at=0.0, open_s=5.0)
    b.begin(5.0)
    b.failure(6.0, "HTTP 503")
    assert b.current(6.0) is OPEN
    assert not b.available(10.5)
    assert b.current(11.0) is HALF_OPEN
    assert b.last_failure == "HTTP 503"


def test_a_failed_probe_reopens_a_half_open_circuit() -> None:
    b = opened(at=0.0, open_s=5.0)
    assert b.current(5.0) is HALF_OPEN
    b.probe(6.0, ok=False)
    assert b.current(6.0) is OPEN
    assert b.current(11.0) is HALF_OPEN


def test_after_closing_the_failure_count_starts_from_zero() -> None:
    b = opened(at=0.0, open_s=1.0, failure_threshold=2)
    b.begin(1.0)
    b.success(1.0)
    b.failure(2.0, "x")
    assert b.current(2.0) is CLOSED
    b.failure(3.0, "x")
    assert b.current(3.0) is OPEN


# Ramp


def test_ramp_is_one_for_a_breaker_that_never_opened() -> None:
    assert breaker().ramp(0.0) == 1.0


def test_ramp_starts_at_the_floor_and_is_linear() -> None:
    b = closed_after_recovery(at=100.0, ramp_s=10.0)
    assert b.ramp(100.0) == pytest.approx(RAMP_FLOOR)
    assert b.ramp(105.0) == pytest.approx(RAMP_FLOOR + (1 - RAMP_FLOOR) / 2)
    assert b.ramp(109.9) < 1.0
    assert b.ramp(110.0) == 1.0
    assert b.ramp(500.0) == 1.0


def test_ramp_zero_means_full_weight_at_once() -> None:
    b = closed_after_recovery(at=100.0, ramp_s=0.0)
    assert b.ramp(100.0) == 1.0


def test_ramp_is_cut_short_when_the_circuit_opens_again() -> None:
    b = closed_after_recovery(at=100.0, ramp_s=10.0)
    b.probe(101.0, ok=False)
    b.probe(200.0, ok=True)
    # Re-opened then half-open again: not ramping (and not routable beyond trials).
    assert b.ramp(200.0) == 1.0
    b.begin(200.0)
    b.success(200.0)
    assert b.ramp(200.0) == pytest.approx(RAMP_FLOOR)


@given(
    ramp_s=st.floats(min_value=0.001, max_value=1000),
    offsets=st.lists(st.floats(min_value=0, max_value=2000), min_size=1, max_size=30),
)
def test_ramp_never_decreases_and_reaches_one(ramp_s: float, offsets: list[float]) -> None:
    b = closed_after_recovery(at=100.0, ramp_s=ramp_s)
    values = [b.ramp(100.0 + offset) for offset in sorted(offsets)]
    assert all(RAMP_FLOOR - 1e-12 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    # (100 + ramp_s) - 100 may round to just under ramp_s: "reaches" is up to an ulp.
    assert b.ramp(100.0 + ramp_s) == pytest.approx(1.0)
    assert b.ramp(100.0 + ramp_s + 1e-6) == 1.0
    assert b.current(100.0 + ramp_s) is CLOSED


# The whole machine against a reference model


class Event(enum.Enum):
    BEGIN = "begin"
    SUCCESS = "success"
    FAILURE = "failure"
    ABANDONED = "abandoned"
    PROBE_OK = "probe_ok"
    PROBE_FAIL = "probe_fail"


@attrs.define
class Reference:
    """The breaker's rules, written out again as plainly as possible."""

    threshold: int
    open_s: float
    half_open_max: int
    ramp_s: float
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    trials: int = 0
    closed_at: float | None = None
    # Only a circuit a failed probe opened is half-opened by a good probe.
    by_probe: bool = False

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= self.open_s:
            self.state, self.trials = "half_open", 0

    def trip(self, now: float) -> None:
        self.state, self.opened_at = "open", now
        self.failures = self.trials = 0
        self.closed_at = None
        self.by_probe = False

    def apply(self, event: Event, now: float) -> None:
        self.tick(now)
        if event is Event.BEGIN and self.state == "half_open":
            self.trials += 1
        elif event is Event.SUCCESS:
            self.failures = 0
            if self.state == "half_open":
                self.state, self.closed_at, self.trials = "closed", now, 0
        elif event is Event.FAILURE:
            if self.state == "half_open":
                self.trip(now)
            elif self.state == "closed":
                self.failures += 1
                if self.failures >= self.threshold:
                    self.trip(now)
        elif event is Event.ABANDONED and self.state == "half_open":
            self.trials = max(0, self.trials - 1)
        elif event is Event.PROBE_OK and self.state == "open" and self.by_probe:
            self.state, self.trials = "half_open", 0
        elif event is Event.PROBE_FAIL and self.state != "open":
            self.trip(now)
            self.by_probe = True

    def available(self) -> bool:
        return self.state == "closed" or (
            self.state == "half_open" and self.trials < self.half_open_max
        )

    def ramp(self, now: float) -> float:
        if self.state != "closed" or self.closed_at is None:
            return 1.0
        elapsed = now - self.closed_at
        if elapsed >= self.ramp_s:
            return 1.0
        return RAMP_FLOOR + (1 - RAMP_FLOOR) * elapsed / self.ramp_s


def apply(b: Breaker, event: Event, now: float) -> None:
    if event is Event.BEGIN:
        b.begin(now)
    elif event is Event.SUCCESS:
        b.success(now)
    elif event is Event.FAILURE:
        b.failure(now, "failed")
    elif event is Event.ABANDONED:
        b.abandoned(now)
    elif event is Event.PROBE_OK:
        b.probe(now, ok=True)
    else:
        b.probe(now, ok=False, reason="probe failed")


# Times are multiples of 1/4 s so that "open_s has passed" is exact in floating
# point; mostly no or little time passes, so open circuits are seen while open.
# Requests and their outcomes are more common than probes.
gaps = st.sampled_from([0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 2.0])
events = st.sampled_from(
    [Event.BEGIN] * 3
    + [Event.SUCCESS] * 3
    + [Event.FAILURE] * 3
    + [Event.ABANDONED, Event.PROBE_OK, Event.PROBE_FAIL]
)
steps = st.lists(st.tuples(gaps, events, st.booleans()), min_size=30, max_size=100)


@given(
    threshold=st.integers(min_value=1, max_value=3),
    open_s=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    half_open_max=st.integers(min_value=1, max_value=3),
    ramp_s=st.sampled_from([0.0, 1.0, 4.0, 8.0]),
    steps=steps,
)
def test_breaker_agrees_with_the_reference_model(
    threshold: int,
    open_s: float,
    half_open_max: int,
    ramp_s: float,
    steps: list[tuple[float, Event, bool]],
) -> None:
    b = breaker(threshold, open_s, half_open_max, ramp_s)
    ref = Reference(threshold, open_s, half_open_max, ramp_s)
    now = 1000.0
    for dt, event, look_first in steps:
        now += dt
        if look_first:
            # Reading the state at an instant must not change what happens next.
            ref.tick(now)
            assert b.current(now).value == ref.state
            assert b.available(now) is ref.available()
        apply(b, event, now)
        ref.apply(event, now)
        ref.tick(now)
        assert b.current(now).value == ref.state, (event, now)
        assert b.available(now) is ref.available(), (event, now)
        assert b.ramp(now) == pytest.approx(ref.ramp(now)), (event, now)
        # Trial slots taken show in `available` only at the limit; compare them always.
        assert b.trials == ref.trials, (event, now)


@given(steps=steps)
def test_trials_in_flight_never_exceed_what_available_allowed(
    steps: list[tuple[float, Event, bool]],
) -> None:
    """A dispatcher that begins only when `available` says so never has more
    than `half_open_max` trials out at once while half-open."""
    b = breaker(failure_threshold=2, open_s=1.0, half_open_max=2)
    now = 0.0
    for dt, event, _ in steps:
        now += dt
        if event is Event.BEGIN and not b.available(now):
            continue
        apply(b, event, now)
        if b.current(now) is HALF_OPEN:
            assert 0 <= b.trials <= 2


# Latency average


def test_ewma_starts_at_the_first_sample_and_moves_by_alpha() -> None:
    assert Ewma().value is None
    e = Ewma(alpha=0.5)
    seen = []
    for sample in (100.0, 200.0, 150.0, 0.0):
        e.add(sample)
        seen.append(e.value)
    assert seen == [100.0, 150.0, 150.0, 75.0]


@given(
    alpha=st.floats(min_value=0.01, max_value=1.0),
    samples=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50),
)
def test_ewma_stays_within_the_samples(alpha: float, samples: list[float]) -> None:
    e = Ewma(alpha=alpha)
    for s in samples:
        e.add(s)
    assert e.value is not None
    assert min(samples) - 1e-6 <= e.value <= max(samples) + 1e-6
