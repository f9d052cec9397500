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

import anyio
import attrs

from router_core.config import ServerSettings
from router_core.problems import Catalog, DependencyError


def overloaded(detail: str, wait_s: float) -> DependencyError:
    return DependencyError(
        Catalog.OVERLOADED, detail, headers={"retry-after": str(max(1, math.ceil(wait_s)))}
    )


@attrs.define
class Gate:
    max_in_flight: int
    max_queued: int
    queue_timeout_s: float
    in_flight: int = 0
    queued: int = 0
    shed: int = 0
    _slots: anyio.Semaphore | None = attrs.field(default=None, init=False)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Gate:
        return cls(settings.max_in_flight, settings.max_queued, settings.queue_timeout_ms / 1000)

    def _semaphore(self) -> anyio.Semaphore:
        if self._slots is None:
            self._slots = anyio.Semaphore(self.max_in_flight, fast_acquire=True)
        return self._slots

    async def enter(self) -> None:
        """Take a slot, or raise 503 `overloaded`; pair with `leave()`."""
        slots = self._semaphore()
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait(slots)
        self.in_flight += 1

    async def _wait(self, slots: anyio.Semaphore) -> None:
        if self.queued >= self.max_queued or self.queue_timeout_s <= 0:
            self.shed += 1
            raise overloaded(
                f"The router is at capacity ({self.max_in_flight} requests in flight, "
                f"{self.queued} waiting). Retry shortly.",
                self.queue_timeout_s,
            )
        self.queued += 1
        try:
            with anyio.move_on_after(self.queue_timeout_s) as scope:
                await slots.acquire()
        finally:
            self.queued -= 1
        if scope.cancelled_caught:
            self.shed += 1
            raise overloaded(
                f"The router is at capacity: no slot freed within "
                f"{self.queue_timeout_s * 1000:g} ms. Retry shortly.",
                self.queue_timeout_s,
            )

    def leave(self) -> None:
        self.in_flight -= 1
        self._semaphore().release()

    def status(self) -> dict[str, int]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": self.queued,
            "shed": self.shed,
        }
