"""A per-backend circuit breaker, with probe trials and gradual re-admission (a pure state machine).

Rules:
- CLOSED: traffic flows. Each request's result (passive: a success, or a
  failure: connect error, dropped connection, timeout, 5xx) is counted in a
  sliding window of the last `window_s` seconds, kept as `BUCKETS` buckets of
  counts. A failure opens the circuit when
  - the window holds at least `min_requests` results and the share of them
    that failed is `failure_rate` or more (the rate rule: at volume, a few
    errors in a row are noise, and only the rate says the backend is bad); or
  - the window holds fewer, and the last `failure_threshold` results were all
    failures (the streak rule: at low volume a rate says little).
  One failed active probe (the backend did not answer at all) also opens it.
- A failure that says the request could not reach the backend (`unreachable`:
  refused, unreachable, dropped) asks for an active probe at once
  (`probe_wanted`, taken by `take_early_probe`), at most once per
  `probe_interval_s`: a killed backend is found in milliseconds, where the
  rate would wait for half the window to fail. A timeout or a 5xx does not:
  a hung or erroring backend still lists its models.
- OPEN: no client request for `open_s`; then HALF_OPEN. If a failed probe
  opened it (the backend was unreachable), a successful probe moves it to
  HALF_OPEN at once, so a restarted backend does not wait out the cool-down.
  If failed requests or a failed trial opened it, a probe proves nothing (a
  hung or erroring backend can still list its models), so the cool-down runs
  its course.
- HALF_OPEN: still no client request. The health loop sends one trial probe
  at a time (`begin_trial`), a minimal real inference request; its result
  (`end_trial`) decides: a success closes the circuit, a failure or timeout
  opens it again for `open_s` (with the cause it had: a successful probe
  still cuts short an outage that a failed probe found). Results of client requests sent before the
  circuit opened change nothing while it is not CLOSED, so a client request
  is never a trial. A trial's result counts only for the trial it answers (a
  failed probe may have reopened the circuit meanwhile).
- The window starts empty whenever the circuit opens (and so when it closes).
- After closing from HALF_OPEN the backend ramps up: its weight is scaled by
  `ramp(now)`, from `RAMP_FLOOR` to 1 over `ramp_s`, so a recovered backend
  is re-admitted gradually rather than with a thundering herd.
- `now` is a monotonic time in seconds, passed in; nothing here reads a clock.
- The thresholds are read from `settings()` on every call (the running
  config's `health`), so a reload changes them without patching a copy; a
  breaker holds only its live state.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable

import attrs

from router_core.config import HealthSettings

RAMP_FLOOR = 0.1
# The window is this many buckets of `window_s / BUCKETS` seconds; a result
# leaves it between `window_s - window_s / BUCKETS` and `window_s` after it came.
BUCKETS = 10


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class WindowCounts:
    requests: int
    failures: int

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None


@attrs.define
class _Bucket:
    start: float
    requests: int = 0
    failures: int = 0


@attrs.define
class FailureWindow:
    """Results of the last `window_s` seconds, in buckets of `window_s / BUCKETS`.

    `window_s` is passed on every call (a reload may change it): buckets of
    the old width simply age out.
    """

    _buckets: deque[_Bucket] = attrs.field(factory=deque)

    def add(self, now: float, window_s: float, failed: bool) -> None:
        self._evict(now, window_s)
        width = window_s / BUCKETS
        start = math.floor(now / width) * width
        buckets = self._buckets
        # A result at a start before the last bucket's (the clock went back, a
        # reload widened the buckets) goes in the last bucket.
        if not buckets or start > buckets[-1].start:
            buckets.append(_Bucket(start))
        last = buckets[-1]
        last.requests += 1
        last.failures += failed

    def revise(self, now: float, window_s: float) -> None:
        """A success counted earlier failed after all: the latest one still in
        the window becomes a failure (none left: a failure is added now)."""
        self._evict(now, window_s)
        for bucket in reversed(self._buckets):
            if bucket.failures < bucket.requests:
                bucket.failures += 1
                return
        self.add(now, window_s, failed=True)

    def counts(self, now: float, window_s: float) -> WindowCounts:
        self._evict(now, window_s)
        buckets = self._buckets
        return WindowCounts(sum(b.requests for b in buckets), sum(b.failures for b in buckets))

    def clear(self) -> None:
        self._buckets.clear()

    def _evict(self, now: float, window_s: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0].start <= now - window_s:
            buckets.popleft()


@attrs.define
class Breaker:
    settings: Callable[[], HealthSettings]
    state: Circuit = Circuit.CLOSED
    window: FailureWindow = attrs.field(factory=FailureWindow)
    # Failures in a row (the streak rule).
    streak: int = 0
    opened_at: float = 0.0
    closed_at: float | None = None
    opened_by_probe: bool = False
    # Trial probes sent so far; the one in flight (its number), if any.
    trials: int = 0
    trial: int | None = None
    last_trial_ok: bool | None = None
    # An active probe is wanted now; when the last such probe was taken.
    probe_wanted: bool = False
    early_probe_at: float = -math.inf
    # Why the circuit last opened, for the routing explanation and /v1/status.
    last_failure: str = ""

    def _refresh(self, now: float) -> None:
        if self.state is Circuit.OPEN and now >= self.opened_at + self.settings().open_s:
            self.state = Circuit.HALF_OPEN

    def current(self, now: float) -> Circuit:
        self._refresh(now)
        return self.state

    def available(self, now: float) -> bool:
        """Whether a client request may go to this backend now: only while CLOSED."""
        self._refresh(now)
        return self.state is Circuit.CLOSED

    def counts(self, now: float) -> WindowCounts:
        """The results in the window now (empty unless CLOSED)."""
        return self.window.counts(now, self.settings().window_s)

    # Passive results: client requests.

    def success(self, now: float) -> None:
        self._refresh(now)
        if self.state is not Circuit.CLOSED:
            return
        self.streak = 0
        self.window.add(now, self.settings().window_s, failed=False)

    def failure(
        self, now: float, reason: str, *, answered: bool = False, unreachable: bool = False
    ) -> None:
        """A failed request; `answered`: one already counted as a success when
        its answer began, that broke later (a stream cut short), so the window
        counts the request once; `unreachable`: it could not reach the backend."""
        self._refresh(now)
        self.last_failure = reason
        if self.state is not Circuit.CLOSED:
            return
        settings = self.settings()
        self.streak += 1
        if answered:
            self.window.revise(now, settings.window_s)
        else:
            self.window.add(now, settings.window_s, failed=True)
        seen = self.window.counts(now, settings.window_s)
        if seen.requests >= settings.min_requests:
            trip = seen.failures / seen.requests >= settings.failure_rate
        else:
            trip = self.streak >= settings.failure_threshold
        if trip:
            self._open(now)
        elif unreachable and now - self.early_probe_at >= settings.probe_interval_s:
            self.probe_wanted = True

    def take_early_probe(self, now: float) -> bool:
        """Whether an active probe is wanted now (then it is taken: not again
        until `probe_interval_s` has passed)."""
        if not self.probe_wanted:
            return False
        self.probe_wanted = False
        self.early_probe_at = now
        return True

    # Active probes: "does it answer at all?", on an interval.

    def probe(self, now: float, ok: bool, reason: str = "") -> None:
        """An active probe's result: decisive both ways."""
        self._refresh(now)
        if ok:
            if self.state is Circuit.OPEN and self.opened_by_probe:
                self.state = Circuit.HALF_OPEN
            return
        self.last_failure = reason or "active probe failed"
        if self.state is not Circuit.OPEN:
            self._open(now)
            self.opened_by_probe = True

    # Trial probes: "does it serve inference?", while half-open.

    def next_trial_at(self, now: float) -> float | None:
        """When a trial probe will be due (`now` if it is; None: none to come)."""
        self._refresh(now)
        if self.state is Circuit.OPEN:
            return self.opened_at + self.settings().open_s
        if self.state is Circuit.HALF_OPEN and self.trial is None:
            return now
        return None

    def begin_trial(self, now: float) -> int | None:
        """Take the trial if one is due: its number, for `end_trial`; else None."""
        self._refresh(now)
        if self.state is not Circuit.HALF_OPEN or self.trial is not None:
            return None
        self.trials += 1
        self.trial = self.trials
        return self.trial

    def end_trial(self, now: float, trial: int, ok: bool | None, reason: str = "") -> None:
        """The result of trial number `trial`; None: no verdict (it was cancelled)."""
        self._refresh(now)
        if self.state is not Circuit.HALF_OPEN or self.trial != trial:
            return
        self.trial = None
        if ok is None:
            return
        self.last_trial_ok = ok
        if ok:
            self.state = Circuit.CLOSED
            self.closed_at = now
            self.streak = 0
            return
        self.last_failure = reason or "trial probe failed"
        by_probe = self.opened_by_probe
        self._open(now)
        # Still the outage it was: one a probe found is still ended by a probe.
        self.opened_by_probe = by_probe

    def ramp(self, now: float) -> float:
        """The share of its weight the backend gets now (1 once fully re-admitted)."""
        if self.closed_at is None or self.state is not Circuit.CLOSED:
            return 1.0
        elapsed = now - self.closed_at
        if elapsed >= self.settings().ramp_s or elapsed < 0:  # ramp_s may be 0
            self.closed_at = None
            return 1.0
        return RAMP_FLOOR + (1.0 - RAMP_FLOOR) * elapsed / self.settings().ramp_s

    def _open(self, now: float) -> None:
        self.state = Circuit.OPEN
        self.opened_by_probe = False
        self.opened_at = now
        self.streak = 0
        self.window.clear()
        self.trial = None
        self.closed_at = None


@attrs.define
class Ewma:
    """An exponentially weighted moving average of latency, in milliseconds."""

    alpha: float = 0.3
    value: float | None = None

    def add(self, sample_ms: float) -> None:
        if self.value is None:
            self.value = sample_ms
        else:
            self.value += self.alpha * (sample_ms - self.value)
