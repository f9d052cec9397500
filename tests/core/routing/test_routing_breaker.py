"""The circuit breaker: its transitions, checked one by one and against a reference model.

The rate rule and its window have their own properties in
test_routing_breaker_rates.py.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.breaker import BUCKETS, RAMP_FLOOR, Breaker, Circuit, Ewma
from router_core.config import HealthSettings

CLOSED, OPEN, HALF_OPEN = Circuit.CLOSED, Circuit.OPEN, Circuit.HALF_OPEN


def breaker(**changes: Any) -> Breaker:
    settings = HealthSettings(**{"failure_threshold": 3, "open_s": 5.0, "ramp_s": 10.0, **changes})
    return Breaker(lambda: settings)


def opened(at: float = 100.0, **changes: Any) -> Breaker:
    """A breaker whose circuit opened at `at` (by a failed probe)."""
    b = breaker(**changes)
    b.probe(at, ok=False, reason="down")
    assert b.current(at) is OPEN
    return b


def tried(b: Breaker, now: float, ok: bool, reason: str = "") -> None:
    """Run one trial probe at `now` that answers `ok`."""
    trial = b.begin_trial(now)
    assert trial is not None
    b.end_trial(now, trial, ok, reason)


def closed_after_recovery(at: float = 100.0, ramp_s: float = 10.0) -> Breaker:
    """A breaker that has just closed again (at `at`) after a trial succeeded."""
    b = opened(at - 5.0, open_s=5.0, ramp_s=ramp_s)
    tried(b, at, ok=True)
    assert b.current(at) is CLOSED
    return b


# Closed -> open, at low volume (the streak rule)


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
    b = breaker(failure_threshold=3, min_requests=1_000)
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


def test_an_unreachable_backend_asks_for_a_probe_once_per_probe_interval() -> None:
    b = breaker(failure_threshold=100, probe_interval_s=2.0)
    b.failure(0.0, "timed out")
    assert not b.take_early_probe(0.0)  # a timeout: a listing would prove nothing
    b.failure(0.0, "connection refused", unreachable=True)
    assert b.take_early_probe(0.0)
    assert not b.take_early_probe(0.0)  # taken
    b.failure(1.9, "connection refused", unreachable=True)
    assert not b.take_early_probe(1.9)  # not twice in an interval
    b.failure(2.0, "connection dropped", unreachable=True)
    assert b.take_early_probe(2.0)
    assert b.current(2.0) is CLOSED  # asking for a probe decides nothing by itself


def test_a_failure_that_opens_the_circuit_asks_for_no_probe() -> None:
    b = breaker(failure_threshold=1)
    b.failure(0.0, "connection refused", unreachable=True)
    assert b.current(0.0) is OPEN
    assert not b.take_early_probe(0.0)


# Open -> half-open


def test_open_rejects_until_open_s_then_half_opens_still_rejecting() -> None:
    b = opened(at=100.0, open_s=5.0)
    assert not b.available(104.75)
    assert b.current(104.75) is OPEN
    assert b.next_trial_at(104.75) == 105.0
    assert b.current(105.0) is HALF_OPEN
    # Half-open is for the trial probe, never for a client request.
    assert not b.available(105.0)
    assert b.next_trial_at(105.0) == 105.0


def test_failures_while_open_do_not_extend_the_cool_down() -> None:
    b = opened(at=100.0, open_s=5.0)
    b.failure(103.0, "late answer of an old request")
    assert b.current(105.0) is HALF_OPEN
    assert b.last_failure == "late answer of an old request"


def test_a_successful_probe_half_opens_at_once_for_a_trial() -> None:
    b = opened(at=100.0, open_s=60.0)
    b.probe(101.0, ok=True)
    assert b.current(101.0) is HALF_OPEN
    assert not b.available(101.0)
    assert b.next_trial_at(101.0) == 101.0


def test_a_successful_probe_does_not_shorten_an_outage_that_requests_found() -> None:
    """A hung or erroring backend can still list its models: only the cool-down counts."""
    b = breaker(failure_threshold=1, open_s=60.0)
    b.failure(100.0, "timed out")
    b.probe(101.0, ok=True)
    assert b.current(101.0) is OPEN
    assert b.begin_trial(101.0) is None
    assert b.next_trial_at(159.0) == 160.0
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


# Half-open: trial probes, one at a time


def test_one_trial_at_a_time() -> None:
    b = opened(at=0.0, open_s=1.0)
    assert b.begin_trial(0.5) is None  # not due yet
    first = b.begin_trial(1.0)
    assert first == 1
    assert b.begin_trial(1.0) is None
    assert b.next_trial_at(1.0) is None  # one is in flight
    assert b.current(1.0) is HALF_OPEN
    assert not b.available(1.0)


def test_client_results_while_half_open_decide_nothing() -> None:
    """A request sent before the circuit opened may end while it is half-open:
    neither its success nor its failure is a trial."""
    b = opened(at=0.0, open_s=1.0)
    b.success(1.0)
    assert b.current(1.0) is HALF_OPEN
    b.failure(1.0, "late timeout")
    assert b.current(1.0) is HALF_OPEN
    assert b.next_trial_at(1.0) == 1.0


def test_a_trial_success_closes() -> None:
    b = opened(at=0.0, open_s=1.0)
    trial = b.begin_trial(1.0)
    assert trial is not None
    b.end_trial(2.0, trial, ok=True)
    assert b.current(2.0) is CLOSED
    assert b.closed_at == 2.0
    assert b.available(2.0)
    assert b.last_trial_ok is True
    assert b.next_trial_at(2.0) is None


def test_a_trial_failure_reopens_and_restarts_the_cool_down() -> None:
    b = breaker(failure_threshold=1, open_s=5.0)
    b.failure(0.0, "timed out")
    trial = b.begin_trial(5.0)
    assert trial is not None
    b.end_trial(6.0, trial, ok=False, reason="trial probe: timed out")
    assert b.current(6.0) is OPEN
    assert b.last_failure == "trial probe: timed out"
    assert b.last_trial_ok is False
    assert b.next_trial_at(6.0) == 11.0
    assert b.current(11.0) is HALF_OPEN
    # Requests opened it: a probe's answer still proves nothing.
    b = breaker(failure_threshold=1, open_s=5.0)
    b.failure(0.0, "timed out")
    tried(b, 5.0, ok=False)
    b.probe(6.0, ok=True)
    assert b.current(6.0) is OPEN


def test_a_failed_trial_after_a_failed_probe_is_still_cut_short_by_a_probe() -> None:
    b = opened(at=0.0, open_s=5.0)
    tried(b, 5.0, ok=False)
    assert b.current(6.0) is OPEN
    b.probe(6.0, ok=True)
    assert b.next_trial_at(6.0) == 6.0


def test_a_cancelled_trial_gives_no_verdict_and_is_due_again() -> None:
    b = opened(at=0.0, open_s=1.0)
    trial = b.begin_trial(1.0)
    assert trial is not None
    b.end_trial(1.5, trial, ok=None)
    assert b.current(1.5) is HALF_OPEN
    assert b.last_trial_ok is None
    assert b.begin_trial(1.5) == trial + 1


def test_the_answer_of_a_superseded_trial_is_ignored() -> None:
    b = opened(at=0.0, open_s=1.0)
    old = b.begin_trial(1.0)
    assert old is not None
    b.probe(1.2, ok=False)  # reopened meanwhile
    new = b.begin_trial(2.2)
    assert new is not None
    assert new != old
    b.end_trial(2.3, old, ok=True)
    assert b.current(2.3) is HALF_OPEN
    b.end_trial(2.4, new, ok=True)
    assert b.current(2.4) is CLOSED


def test_a_failed_probe_reopens_a_half_open_circuit() -> None:
    b = opened(at=0.0, open_s=5.0)
    assert b.current(5.0) is HALF_OPEN
    b.probe(6.0, ok=False)
    assert b.current(6.0) is OPEN
    assert b.current(11.0) is HALF_OPEN


def test_after_closing_the_failure_count_starts_from_zero() -> None:
    b = opened(at=0.0, open_s=1.0, failure_threshold=2)
    tried(b, 1.0, ok=True)
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
    # Re-opened then half-open again: not ramping (and not routable).
    assert b.ramp(200.0) == 1.0
    tried(b, 200.0, ok=True)
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
    SUCCESS = "success"
    FAILURE = "failure"
    # A request counted as a success when its answer began, that broke later.
    BROKEN = "broken"
    PROBE_OK = "probe_ok"
    PROBE_FAIL = "probe_fail"
    TRIAL_BEGIN = "trial_begin"
    TRIAL_OK = "trial_ok"
    TRIAL_FAIL = "trial_fail"
    TRIAL_CANCEL = "trial_cancel"


@attrs.define
class Reference:
    """The breaker's rules, written out again as plainly as possible: every
    result kept in a list, the window counted from it."""

    threshold: int
    open_s: float
    ramp_s: float
    window_s: float
    min_requests: int
    failure_rate: float
    state: str = "closed"
    # (time, failed) of each result since the circuit last opened.
    results: list[list[Any]] = attrs.field(factory=list)
    streak: int = 0
    opened_at: float = 0.0
    closed_at: float | None = None
    by_probe: bool = False
    trials: int = 0
    trial: int | None = None

    def in_window(self, now: float) -> list[list[Any]]:
        width = self.window_s / BUCKETS
        return [r for r in self.results if math.floor(r[0] / width) * width > now - self.window_s]

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= self.open_s:
            self.state = "half_open"

    def trip(self, now: float) -> None:
        self.state, self.opened_at = "open", now
        self.streak = 0
        self.results = []
        self.closed_at = None
        self.by_probe = False
        self.trial = None

    def apply(self, event: Event, now: float, token: int | None) -> None:
        self.tick(now)
        if event is Event.SUCCESS and self.state == "closed":
            self.streak = 0
            self.results.append([now, False])
        elif event in (Event.FAILURE, Event.BROKEN) and self.state == "closed":
            self.streak += 1
            window = self.in_window(now)
            successes = [r for r in window if not r[1]]
            if event is Event.BROKEN and successes:
                successes[-1][1] = True
            else:
                self.results.append([now, True])
            window = self.in_window(now)
            failed = sum(r[1] for r in window)
            if len(window) >= self.min_requests:
                trip = failed / len(window) >= self.failure_rate
            else:
                trip = self.streak >= self.threshold
            if trip:
                self.trip(now)
        elif event is Event.PROBE_OK and self.state == "open" and self.by_probe:
            self.state = "half_open"
        elif event is Event.PROBE_FAIL and self.state != "open":
            self.trip(now)
            self.by_probe = True
        elif event is Event.TRIAL_BEGIN and self.state == "half_open" and self.trial is None:
            self.trials += 1
            self.trial = self.trials
        elif (
            event in (Event.TRIAL_OK, Event.TRIAL_FAIL, Event.TRIAL_CANCEL)
            and self.state == "half_open"
            and token is not None
            and self.trial == token
        ):
            self.trial = None
            if event is Event.TRIAL_OK:
                self.state, self.closed_at, self.streak = "closed", now, 0
            elif event is Event.TRIAL_FAIL:
                by_probe = self.by_probe
                self.trip(now)
                self.by_probe = by_probe

    def available(self) -> bool:
        return self.state == "closed"

    def ramp(self, now: float) -> float:
        if self.state != "closed" or self.closed_at is None:
            return 1.0
        elapsed = now - self.closed_at
        if elapsed >= self.ramp_s:
            return 1.0
        return RAMP_FLOOR + (1 - RAMP_FLOOR) * elapsed / self.ramp_s


def apply(b: Breaker, event: Event, now: float, token: int | None) -> int | None:
    """Apply `event`; the trial number taken, if it began one (else `token`)."""
    if event is Event.SUCCESS:
        b.success(now)
    elif event is Event.FAILURE:
        b.failure(now, "failed")
    elif event is Event.BROKEN:
        b.failure(now, "stream broke", answered=True)
    elif event is Event.PROBE_OK:
        b.probe(now, ok=True)
    elif event is Event.PROBE_FAIL:
        b.probe(now, ok=False, reason="probe failed")
    elif event is Event.TRIAL_BEGIN:
        taken = b.begin_trial(now)
        return token if taken is None else taken
    elif token is not None:
        ok = {Event.TRIAL_OK: True, Event.TRIAL_FAIL: False, Event.TRIAL_CANCEL: None}[event]
        b.end_trial(now, token, ok, "trial failed")
    return token


# Times are multiples of 1/4 s and bucket widths are 1/4, 1/2 or 1 s, so that
# "open_s has passed" and bucket edges are exact in floating point; mostly no
# or little time passes, so open circuits are seen while open, and windows fill.
gaps = st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 2.0, 4.0])
events = st.sampled_from(
    [Event.SUCCESS] * 4
    + [Event.FAILURE] * 4
    + [Event.BROKEN, Event.PROBE_OK, Event.PROBE_FAIL]
    + [Event.TRIAL_BEGIN] * 2
    + [Event.TRIAL_OK, Event.TRIAL_FAIL, Event.TRIAL_CANCEL]
)
steps = st.lists(st.tuples(gaps, events, st.booleans()), min_size=30, max_size=150)


@given(
    threshold=st.integers(min_value=1, max_value=6),
    open_s=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    ramp_s=st.sampled_from([0.0, 1.0, 4.0, 8.0]),
    window_s=st.sampled_from([2.5, 5.0, 10.0]),
    min_requests=st.integers(min_value=1, max_value=12),
    failure_rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    steps=steps,
)
def test_breaker_agrees_with_the_reference_model(
    threshold: int,
    open_s: float,
    ramp_s: float,
    window_s: float,
    min_requests: int,
    failure_rate: float,
    steps: list[tuple[float, Event, bool]],
) -> None:
    knobs = {
        "failure_threshold": threshold, "open_s": open_s, "ramp_s": ramp_s,
        "window_s": window_s, "min_requests": min_requests, "failure_rate": failure_rate,
    }  # fmt: skip
    b = breaker(**knobs)
    ref = Reference(threshold, open_s, ramp_s, window_s, min_requests, failure_rate)
    now = 1000.0
    token: int | None = None
    for dt, event, look_first in steps:
        now += dt
        if look_first:
            # Reading the state at an instant must not change what happens next.
            ref.tick(now)
            assert b.current(now).value == ref.state
            assert b.available(now) is ref.available()
        before = ref.state
        token = apply(b, event, now, token)
        ref.apply(event, now, token)
        ref.tick(now)
        assert b.current(now).value == ref.state, (event, now)
        assert b.available(now) is ref.available(), (event, now)
        assert b.ramp(now) == pytest.approx(ref.ramp(now)), (event, now)
        window = ref.in_window(now)
        counts = b.counts(now)
        assert (counts.requests, counts.failures) == (len(window), sum(r[1] for r in window))
        assert (b.trials, b.trial) == (ref.trials, ref.trial), (event, now)
        # Only a trial probe's success closes a circuit: a client request never does.
        if before != "closed" and ref.state == "closed":
            assert event is Event.TRIAL_OK


@given(steps=steps)
def test_client_requests_are_never_trials(steps: list[tuple[float, Event, bool]]) -> None:
    """Whatever happens, a circuit that is not closed admits no client request,
    and no client request's result closes it."""
    b = breaker(failure_threshold=2, open_s=1.0, min_requests=5)
    now = 0.0
    token: int | None = None
    for dt, event, _ in steps:
        now += dt
        before = b.current(now)
        token = apply(b, event, now, token)
        after = b.current(now)
        assert b.available(now) is (after is CLOSED)
        if before is not CLOSED and after is CLOSED:
            assert event is Event.TRIAL_OK
        if after is HALF_OPEN:
            assert b.trial is None or b.trial == b.trials


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
