"""The cycle collector, watched: how often it ran and how long it stopped the loop.

Rules:
- A collection stops every request in flight for as long as it walks the
  objects of its generations that are still alive, so its pauses are a
  latency every request may wait out, and they are measured here: by
  generation, the collections, the seconds paused, the objects collected,
  the longest pause, and the longest of the last `RECENT_S`.
- The collector and its callbacks are the process's: one `GcWatch` per
  process (`watch()`), whatever the number of apps in it.
- The server process (not `create_app`, which tests run in-process) sets the
  young generation's threshold (`server.gc_young_threshold`) and freezes the
  start-up heap: see `router_server.main`.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

import attrs

# The pauses the "recent" longest is taken over.
RECENT_S = 60.0
# Pauses kept for it at most (a collector that ran more often than this in a
# minute is reported by its counters; its longest recent pause may then be low).
RECENT_KEPT = 4096
_GENERATIONS = 3


@attrs.define(eq=False)
class GcWatch:
    collections: list[int] = attrs.field(factory=lambda: [0] * _GENERATIONS)
    pause_s: list[float] = attrs.field(factory=lambda: [0.0] * _GENERATIONS)
    collected: list[int] = attrs.field(factory=lambda: [0] * _GENERATIONS)
    longest_pause_s: float = 0.0
    # (when it ended, on the monotonic clock; how long it took)
    _recent: deque[tuple[float, float]] = attrs.field(factory=lambda: deque(maxlen=RECENT_KEPT))
    _started: float | None = None

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        """gc.callbacks' hook: it must not raise, and costs a collection a few µs."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is None:
            return
        took = time.perf_counter() - started
        generation = min(int(info.get("generation", 0)), _GENERATIONS - 1)
        self.collections[generation] += 1
        self.pause_s[generation] += took
        self.collected[generation] += int(info.get("collected", 0))
        self.longest_pause_s = max(self.longest_pause_s, took)
        self._recent.append((time.monotonic(), took))

    def recent_longest_pause_s(self) -> float:
        since = time.monotonic() - RECENT_S
        recent = self._recent
        while recent and recent[0][0] < since:
            recent.popleft()
        return max((took for _, took in recent), default=0.0)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": gc.isenabled(),
            "threshold": list(gc.get_threshold()),
            "frozen_objects": gc.get_freeze_count(),
            "collections": list(self.collections),
            "pause_s": [round(s, 6) for s in self.pause_s],
            "collected": list(self.collected),
            "longest_pause_ms": round(self.longest_pause_s * 1000, 3),
            "recent_longest_pause_ms": round(self.recent_longest_pause_s() * 1000, 3),
        }


_WATCH: GcWatch | None = None


def watch() -> GcWatch:
    """This process's watch, hooked into the collector the first time it is asked for."""
    global _WATCH
    if _WATCH is None:
        _WATCH = GcWatch()
        gc.callbacks.append(_WATCH.callback)
    return _WATCH
