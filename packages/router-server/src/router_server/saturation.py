"""How saturated this router is, measured: event-loop lag and the adaptive limit.

Rules:
- One probe task (`run`, started in the lifespan) sleeps
  `server.admission.lag_probe_interval_ms` at a time; how late it wakes is a
  lag sample, smoothed by `router_core.saturation`. While it sleeps, the time
  it is due is kept, so a request can see a stall the probe has not woken
  from yet (`lag_s`).
- With `server.admission.adaptive`, every request that reaches a backend
  reports how long the router's own part took (slot taken to backend
  called: limits, idempotency, routing); each `window_ms` their mean updates
  the gradient limit. Without it, the limit is `server.max_in_flight`.
- With `server.admission.max_busy_percent`, each `window_ms` the process's
  CPU time over the window's wall time (`busy`) and the mean number in
  flight over the probe's wake-ups move the busy limit
  (`router_core.saturation.busy_limit`).
- The capacity is the least of `server.max_in_flight`, the adaptive limit and
  the busy limit, those that are on.
- Everything is read from the running config on every call: a reload
  changes the interval, the threshold and the bounds without a restart.
- Time is `time.monotonic()`, passed to the core as numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import anyio
import attrs

from router_core.config import ServerSettings
from router_core.saturation import GradientLimit, busy_limit, lag_now, smooth_lag


@attrs.define
class Saturation:
    settings: Callable[[], ServerSettings]
    # The smoothed lag, as of the probe's last wake-up.
    smoothed_s: float = 0.0
    # The adaptive limit (None until adaptive admission has seen a window).
    gradient: GradientLimit | None = None
    windows: int = 0
    # The busy limit (None until a window was measured with it on), and the
    # share of a core the router used over the last window.
    busy_limit: float | None = None
    busy: float | None = None
    # When the sleeping probe is due to wake (None: it is not sleeping).
    _due: float | None = None
    _latency_sum: float = 0.0
    _latency_count: int = 0
    _window_started: float | None = None
    _cpu_started: float = 0.0
    _in_flight_sum: int = 0
    _in_flight_samples: int = 0

    @property
    def sleeping(self) -> bool:
        """Whether the probe is asleep, due to wake (and to tell a stall when it does)."""
        return self._due is not None

    def lag_s(self) -> float:
        """The loop's lag as a request arriving now sees it."""
        if self._due is None:
            return self.smoothed_s
        return lag_now(self.smoothed_s, time.monotonic() - self._due)

    def limit(self) -> int:
        """Requests that may be in flight now: the adaptive limit, or the hard cap."""
        settings = self.settings()
        admission = settings.admission
        cap = settings.max_in_flight
        if admission.adaptive and self.gradient is not None:
            cap = self.gradient.admits(admission.min_limit, cap)
        if admission.max_busy_percent is not None and self.busy_limit is not None:
            cap = min(cap, max(min(admission.min_limit, cap), math.floor(self.busy_limit)))
        return cap

    def observe(self, latency_s: float) -> None:
        """One request's own latency (slot taken to backend called)."""
        if self.settings().admission.adaptive:
            self._latency_sum += latency_s
            self._latency_count += 1

    async def run(self, in_flight: Callable[[], int], limit_changed: Callable[[], None]) -> None:
        """Measure forever (cancelled with the lifespan)."""
        while True:
            admission = self.settings().admission
            interval_s = admission.lag_probe_interval_ms / 1000
            self._due = time.monotonic() + interval_s
            await anyio.sleep(interval_s)
            now = time.monotonic()
            self.smoothed_s = smooth_lag(self.smoothed_s, now - self._due)
            self._due = None
            flying = in_flight()
            self._in_flight_sum += flying
            self._in_flight_samples += 1
            window_s = self._window_ends(now, admission.window_ms / 1000)
            if window_s is None:
                continue
            moved = self._update_busy(window_s, time.process_time())
            if self._update_limit(flying) or moved:
                limit_changed()

    def _window_ends(self, now: float, window_s: float) -> float | None:
        """The wall time of the window that ended now (None: it goes on)."""
        if self._window_started is None:
            self._window_started, self._cpu_started = now, time.process_time()
            self._in_flight_sum = self._in_flight_samples = 0
            return None
        elapsed = now - self._window_started
        if elapsed < window_s:
            return None
        self._window_started = now
        return elapsed

    def _update_busy(self, wall_s: float, cpu_now: float) -> bool:
        """A window ended: the CPU share it took moves the busy limit (True: moved)."""
        cpu_s, self._cpu_started = cpu_now - self._cpu_started, cpu_now
        samples = max(1, self._in_flight_samples)
        flying = self._in_flight_sum / samples
        self._in_flight_sum = self._in_flight_samples = 0
        self.busy = cpu_s / wall_s
        settings = self.settings()
        admission = settings.admission
        if admission.max_busy_percent is None:
            self.busy_limit = None
            return False
        before = self.limit()
        self.busy_limit = busy_limit(
            self.busy_limit, flying, self.busy, target=admission.max_busy_percent / 100,
            min_limit=admission.min_limit, max_limit=settings.max_in_flight,
        )  # fmt: skip
        return self.limit() != before

    def _update_limit(self, in_flight: int) -> bool:
        """A window ended: fold its latencies into the limit (True: the limit moved)."""
        settings = self.settings()
        count, total = self._latency_count, self._latency_sum
        self._latency_count, self._latency_sum = 0, 0.0
        admission = settings.admission
        if not admission.adaptive:
            self.gradient = None
            return False
        if count == 0:
            return False  # no request, no evidence
        before = self.limit()
        if self.gradient is None:
            self.gradient = GradientLimit(float(settings.max_in_flight))
        self.gradient = self.gradient.update(
            total / count, in_flight, min_limit=admission.min_limit,
            max_limit=settings.max_in_flight, tolerance=admission.tolerance,
        )  # fmt: skip
        self.windows += 1
        return self.limit() != before

    def status(self) -> dict[str, object]:
        settings = self.settings()
        admission = settings.admission
        baseline = None if self.gradient is None else self.gradient.baseline_s
        return {
            "loop_lag_ms": round(self.lag_s() * 1000, 3),
            "max_loop_lag_ms": admission.max_loop_lag_ms,
            "adaptive": admission.adaptive,
            "limit": self.limit(),
            "max_busy_percent": admission.max_busy_percent,
            "busy_percent": None if self.busy is None else round(self.busy * 100, 1),
            "latency_baseline_ms": None if baseline is None else round(baseline * 1000, 3),
        }
