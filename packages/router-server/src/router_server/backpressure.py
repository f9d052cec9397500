"""Backpressure: a cap on requests in flight, a short bounded queue, then shedding.

Rules:
- At most `max_in_flight` requests are served at once. The next ones wait,
  first come first served, at most `queue_timeout_ms`, and at most
  `max_queued` of them; past either bound a request is shed with 503
  `overloaded` and `Retry-After`, before any limit is charged or backend
  contacted. Admitted requests therefore never queue for long: their
  latency stays bounded however many clients arrive.
- Per-backend caps are routing's business (a full backend is skipped); when
  every candidate is full the pipeline waits for a slot within the same
  queue timeout (see `pipeline`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import anyio
import attrs

from router_core.config import ServerSettings
from router_core.problems import Catalog, DependencyError


def overloaded(detail: str, wait_s: float) -> DependencyError:
    return DependencyError(
        Catalog.OVERLOADED, detail, headers={"retry-after": str(max(1, math.ceil(wait_s)))}
    )


@attrs.define
class Backpressure:
    """Live counts only: the caps are read from the running config on every call
    (`settings`), so a reload needs no copy patched here."""

    settings: Callable[[], ServerSettings]
    in_flight: int = 0
    shed: int = 0
    # Waiters in arrival order; `leave` hands its slot to the first (in_flight
    # is counted for it before it wakes), so nobody can jump the queue.
    _waiters: deque[anyio.Event] = attrs.field(factory=deque, init=False)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def queue_timeout_s(self) -> float:
        return self.settings().queue_timeout_ms / 1000

    def reconfigured(self) -> None:
        """The caps may have grown (a config reload): let waiters in if they fit now;
        requests already in keep their slots."""
        self._hand_over()

    async def enter(self) -> None:
        """Take a slot, or raise 503 `overloaded`; pair with `leave()`."""
        settings = self.settings()
        if self.in_flight < settings.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        timeout_s = settings.queue_timeout_ms / 1000
        if len(self._waiters) >= settings.max_queued or timeout_s <= 0:
            self.shed += 1
            raise overloaded(
                f"The router is at capacity ({self.in_flight} requests in flight, "
                f"{len(self._waiters)} waiting). Retry shortly.",
                timeout_s,
            )
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            with anyio.move_on_after(timeout_s):
                await turn.wait()
        except BaseException:
            self._give_up(turn)
            raise
        if turn.is_set():
            return
        self._give_up(turn)
        self.shed += 1
        raise overloaded(
            f"The router is at capacity: no slot freed within "
            f"{timeout_s * 1000:g} ms. Retry shortly.",
            timeout_s,
        )

    def _give_up(self, turn: anyio.Event) -> None:
        if turn.is_set():
            self.leave()  # the slot was handed over as we left: pass it on
        else:
            self._waiters.remove(turn)

    def leave(self) -> None:
        self.in_flight -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        cap = self.settings().max_in_flight
        while self._waiters and self.in_flight < cap:
            self.in_flight += 1
            self._waiters.popleft().set()

    def status(self) -> dict[str, int]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.settings().max_in_flight,
            "queued": len(self._waiters),
            "shed": self.shed,
        }
