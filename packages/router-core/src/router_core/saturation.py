"""Saturation, measured: the event loop's lag, smoothed, and a gradient concurrency limit.

Rules:
- Lag: a probe sleeps a known interval; how much later than asked it wakes is
  one sample. The smoothed lag moves half way to a higher sample (a stall
  shows within a probe or two, and one slow turn of the loop alone does not
  shed) and a fifth of the way to a lower one (it stays up while the backlog a
  stall left behind is worked off). It is never negative and never above the
  highest sample since it was last 0.
- A probe that is overdue tells too: how late it already is counts as a
  sample when higher (`lag_now`), so the first request after a stall sees
  the stall before the probe has had its turn.
- Requests are shed for lag above `max_loop_lag` x their priority's factor
  (high 2, normal 1, low 0.5): low-priority traffic goes first.
- Gradient limit (after Netflix concurrency-limits' Gradient2): each window's
  mean latency is compared with the long-run `baseline`;
  gradient = clamp(tolerance x baseline / latency, 0.5, 1), and the next
  limit moves from `base` a fifth of the way to base x gradient + sqrt(base)
  when growing, half of the way when shrinking (overload is answered within
  a few windows, recovery is careful), clamped to [min_limit, max_limit].
  `base` is the limit, except when the latency is worse than tolerated:
  then it is what is in flight, if less (a limit far above use says nothing
  of capacity, and shrinking from it would take long), and the limit does
  not grow.
- The limit only grows while at least half of it is in use: growth that no
  load earned would leave a limit that was never tried.
- The baseline follows a lower window latency half way at once and a higher
  one by 1/600 a window (about two and a half minutes at 250 ms windows): a
  saturated spell is measured against the latency the router had before it,
  not against itself, for minutes.
- Expected wait (Little's law): with `in_flight` slots each held for `hold`
  on average (smoothed a fifth of the way to each slot's hold time), a slot
  frees every hold / in_flight; a waiter with `ahead` others before it waits
  about (ahead + 1) x hold / in_flight. A request that would so wait past
  the queue timeout is refused at once instead of after it (unknown until a
  first slot was given back: it waits).
- Busy limit: the router's CPU time over a window, as a share of one core
  (`busy`), says how much of its capacity the requests in flight use. Their
  cost is about proportional to their number (a stream costs per event, a
  short request per second it is in flight, by Little's law), so the
  requests that fit at `target` are about in_flight x target / busy. Above
  the target the limit drops to that at once (never below `min_limit`): the
  cost of what is already in is measured, not guessed. At or below it, while
  the limit is in use (at least 90 % of it in flight), it moves half way up
  to that (at least by 1, never above `max_limit`); a limit not in use does
  not move: an idle router's few requests would extrapolate its fixed costs
  into a limit no load ever tried.
- No clock: callers pass the samples, in seconds.
"""

from __future__ import annotations

import math

import attrs

from router_core.config_enums import Priority

LAG_RISE = 0.5
LAG_FALL = 0.2
LAG_FACTOR = {Priority.HIGH: 2.0, Priority.NORMAL: 1.0, Priority.LOW: 0.5}

# The baseline follows a lower latency fast and a higher one slowly (~600 windows).
BASELINE_FALL = 0.5
BASELINE_RISE = 1 / 600
# Growth is smoothed more than shrinking: overload is answered within a few windows.
GROWTH_SMOOTHING = 0.2
SHRINK_SMOOTHING = 0.5
MIN_GRADIENT = 0.5
# The mean hold time moves a fifth of the way to each slot's.
HOLD_SMOOTHING = 0.2
# The busy limit grows half way to its estimate a window, while this share of
# it is in use.
BUSY_GROWTH = 0.5
BUSY_IN_USE = 0.9


def smooth_lag(current_s: float, sample_s: float) -> float:
    """The smoothed lag after one more sample."""
    sample_s = max(0.0, sample_s)
    weight = LAG_RISE if sample_s > current_s else LAG_FALL
    return max(0.0, current_s + weight * (sample_s - current_s))


def lag_now(smoothed_s: float, overdue_s: float) -> float:
    """The lag a request sees: the smoothed lag, or what it would become if the
    probe, `overdue_s` late so far, woke now."""
    if overdue_s <= smoothed_s:
        return smoothed_s
    return smooth_lag(smoothed_s, overdue_s)


def smooth_hold(current_s: float | None, sample_s: float) -> float:
    """The smoothed time a slot is held, after one more slot was given back."""
    sample_s = max(0.0, sample_s)
    if current_s is None:
        return sample_s
    return current_s + HOLD_SMOOTHING * (sample_s - current_s)


def expected_wait_s(ahead: int, hold_s: float | None, in_flight: int) -> float | None:
    """How long a new waiter with `ahead` waiters before it waits for a slot
    (None: nothing measured yet)."""
    if hold_s is None or in_flight <= 0:
        return None
    return (ahead + 1) * hold_s / in_flight


def busy_limit(
    limit: float | None,
    in_flight: float,
    busy: float,
    *,
    target: float,
    min_limit: int,
    max_limit: int,
) -> float:
    """The in-flight limit after a window in which `in_flight` requests (on
    average) kept the router `busy` (CPU time over wall time; `target` is the
    share allowed). `limit` None: no window yet, the limit starts at the cap."""
    low = float(min(min_limit, max_limit))
    current = float(max_limit) if limit is None else min(float(max_limit), max(low, limit))
    fits = in_flight * target / max(busy, 1e-9)
    if busy > target:
        current = min(current, fits)
    elif in_flight >= BUSY_IN_USE * current and fits > current:
        current += max(1.0, BUSY_GROWTH * (fits - current))
    return min(float(max_limit), max(low, current))


def lag_threshold(max_loop_lag_s: float, priority: Priority) -> float:
    return max_loop_lag_s * LAG_FACTOR[priority]


@attrs.frozen
class GradientLimit:
    """How many requests may be in flight, from how the router's latency moves."""

    limit: float
    # The long-run average latency; None until a first window was seen.
    baseline_s: float | None = None

    def admits(self, min_limit: int, max_limit: int) -> int:
        """The limit in whole requests, within the bounds in force now (a reload may
        have moved them since the last window)."""
        low = min(min_limit, max_limit)
        return max(low, min(max_limit, math.floor(self.limit)))

    def update(
        self,
        latency_s: float,
        in_flight: int,
        *,
        min_limit: int,
        max_limit: int,
        tolerance: float,
    ) -> GradientLimit:
        """The limit after one window whose requests took `latency_s` on average."""
        low = min(min_limit, max_limit)
        latency_s = max(latency_s, 1e-9)
        previous = latency_s if self.baseline_s is None else self.baseline_s
        baseline = previous + (BASELINE_RISE if latency_s > previous else BASELINE_FALL) * (
            latency_s - previous
        )
        limit = min(float(max_limit), max(float(low), self.limit))
        # Against the baseline before this window: a slow window must not first
        # raise the average it is judged by (that could turn a latency worse than
        # tolerated into growth).
        gradient = min(1.0, max(MIN_GRADIENT, tolerance * previous / latency_s))
        if gradient < 1.0:
            base = min(limit, max(float(low), float(in_flight)))
        elif in_flight * 2 < limit:
            return GradientLimit(limit, baseline)  # no load to earn growth
        else:
            base = limit
        target = base * gradient + math.sqrt(base)
        if gradient < 1.0:
            target = min(target, base)  # a latency worse than tolerated never buys growth
        smoothing = SHRINK_SMOOTHING if gradient < 1.0 else GROWTH_SMOOTHING
        limit = base + smoothing * (target - base)
        return GradientLimit(min(float(max_limit), max(float(low), limit)), baseline)
