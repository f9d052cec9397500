"""Stall a router process's event loop from outside: SIGSTOP, a pause, SIGCONT, again.

A stopped process runs nothing, so to its event loop every stop is a blocked turn
as long as the stop (what a CPU-bound handler or an overloaded core does to it),
seen on its own clock when it resumes. Stopping for `stopped_s` and letting it
run for `running_s` over and over keeps the loop's measured lag far above any
threshold below `stopped_s` however loaded the machine is: load only lengthens
the stops. Requests are still accepted by the kernel meanwhile and handled in
the short running spells.
"""

from __future__ import annotations

import os
import signal
import threading
from types import TracebackType
from typing import Self


class LoopStall:
    def __init__(self, pid: int, *, stopped_s: float = 0.5, running_s: float = 0.02) -> None:
        self.pid = pid
        self.stopped_s = stopped_s
        self.running_s = running_s
        self.stops = 0
        self._done = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._cycle, daemon=True)

    def _cycle(self) -> None:
        try:
            while not self._done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self._done.wait(self.stopped_s)
                os.kill(self.pid, signal.SIGCONT)
                self.stops += 1
                self._first.set()
                self._done.wait(self.running_s)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        self._thread.start()
        self._first.wait(10)  # the loop has been stalled once before any request
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(10)
        os.kill(self.pid, signal.SIGCONT)
