"""A per-backend circuit breaker, with gradual re-admission, as a pure state machine.

Rules:
- CLOSED: traffic flows. `failure_threshold` consecutive failures (passive:
  connect errors, timeouts, 5xx) or one failed active probe open the circuit.
- OPEN: no traffic for `open_s`; then HALF_OPEN. If a failed probe opened
  it (the backend was unreachable), a successful probe moves it to HALF_OPEN
  at once, so a restarted backend does not wait out the cool-down. If failed
  requests opened it, a probe proves nothing (a hung or erroring backend can
  still list its models), so the cool-down runs its course.
- HALF_OPEN: at most `half_open_max` trial requests at a time. A success
  closes the circuit; a failure opens it again (and restarts the cool-down).
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
from collections.abc import Callable

import attrs

from router_core.config import HealthSettings

RAMP_FLOOR = 0.1


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.define
class Breaker:
    settings: Callable[[], HealthSettings]
    state: Circuit = Circuit.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    closed_at: float | None = None
    trials: int = 0
    opened_by_probe: bool = False
    # Why the circuit last opened, for the routing explanation and /v1/status.
    last_failure: str = ""

    def _refresh(self, now: float) -> None:
        if self.state is Circuit.OPEN and now >= self.opened_at + self.settings().open_s:
            self.state = Circuit.HALF_OPEN
            self.trials = 0

    def current(self, now: float) -> Circuit:
        self._refresh(now)
        return self.state

    def available(self, now: float) -> bool:
        """Whether a new request may go to this backend now (does not take a trial slot)."""
        self._refresh(now)
        if self.state is Circuit.CLOSED:
            return True
        if self.state is Circuit.HALF_OPEN:
            return self.trials < self.settings().half_open_max
        return False

    def begin(self, now: float) -> None:
        """A request is being sent; in HALF_OPEN it takes a trial slot."""
        self._refresh(now)
        if self.state is Circuit.HALF_OPEN:
            self.trials += 1

    def success(self, now: float) -> None:
        self._refresh(now)
        if self.state is Circuit.HALF_OPEN:
            self.state = Circuit.CLOSED
            self.closed_at = now
            self.trials = 0
        self.failures = 0

    def failure(self, now: float, reason: str) -> None:
        self._refresh(now)
        self.last_failure = reason
        if self.state is Circuit.HALF_OPEN:
            self._open(now)
            return
        if self.state is Circuit.CLOSED:
            self.failures += 1
            if self.failures >= self.settings().failure_threshold:
                self._open(now)

    def abandoned(self, now: float) -> None:
        """A request that took a trial slot ended without a verdict (e.g. cancelled)."""
        if self.state is Circuit.HALF_OPEN and self.trials > 0:
            self.trials -= 1

    def probe(self, now: float, ok: bool, reason: str = "") -> None:
        """An active probe's result: decisive both ways."""
        self._refresh(now)
        if ok:
            if self.state is Circuit.OPEN and self.opened_by_probe:
                self.state = Circuit.HALF_OPEN
                self.trials = 0
            return
        self.last_failure = reason or "active probe failed"
        if self.state is not Circuit.OPEN:
            self._open(now)
            self.opened_by_probe = True

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
        self.failures = 0
        self.trials = 0
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
