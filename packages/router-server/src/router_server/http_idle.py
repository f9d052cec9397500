"""hypercorn's keep-alive idle timeout as a timer, not as tasks per request.

hypercorn's `TCPServer` (0.14 to 0.18) times an idle connection out with a
task (`AsyncioSingleTask`) that waits `keep_alive_timeout` in `wait_for`
(a second task on Python 3.11). Every request on a kept-alive connection
cancels it and waits for it to end before the app is called, and every
answer starts a new one: tasks created and cancelled per request, and three
or four loop turns between a request's bytes and the app. Each turn is
milliseconds on a saturated router: at twice the load that saturates one
core, this wait was 20 of a refusal's 24 ms at p99 (issue 13).

`RouterTCPServer` keeps hypercorn's connection handling and replaces only
that task with a `loop.call_later` timer (same interface: `restart`,
`stop`), so going busy or idle costs no loop turn. What the task did is
kept: an idle connection is closed after `keep_alive_timeout`, and at once
when its server terminates (graceful shutdown), as hypercorn's task did by
waiting on `context.terminated` too: one watcher per server does that for
every connection idle then, and a connection going idle after it is closed
at once.

`install()` puts the class where hypercorn's asyncio `serve` looks it up;
`router-server` installs it, an app embedded in another server is
unaffected. tests/server/pipeline/test_server_keep_alive.py runs a real
router process: a hypercorn that changes these methods fails it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.asyncio.run
from hypercorn.asyncio.task_group import TaskGroup
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext

log = logging.getLogger("router.server")

# The idle timers of each server's connections, for its termination.
_IDLE: weakref.WeakKeyDictionary[WorkerContext, set[_IdleTimer]] = weakref.WeakKeyDictionary()
# Each server's watcher of its termination (kept: a task nobody holds may be collected).
_WATCHERS: set[asyncio.Task[None]] = set()


def _idle_of(context: WorkerContext) -> set[_IdleTimer]:
    idle = _IDLE.get(context)
    if idle is None:
        idle = _IDLE[context] = set()
        task = asyncio.get_running_loop().create_task(_close_on_termination(context, idle))
        _WATCHERS.add(task)
        task.add_done_callback(_WATCHERS.discard)
    return idle


async def _close_on_termination(context: WorkerContext, idle: set[_IdleTimer]) -> None:
    await context.terminated.wait()
    for timer in list(idle):
        try:
            timer.expire()
        except Exception:  # one connection's failure leaves the others to close
            log.exception("idle connection not closed at shutdown")


class _IdleTimer:
    """hypercorn's idle `SingleTask` interface (`restart`, `stop`) on a timer:
    `restart` arms it (the action runs when it fires), `stop` disarms it."""

    def __init__(self, server: RouterTCPServer) -> None:
        self._server = server
        self._timer: asyncio.TimerHandle | None = None
        self._fire: Callable[[], None] | None = None

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        self._disarm()
        server = self._server

        def fire() -> None:
            if server.writer.is_closing():
                return  # closing already (its task group may have ended)
            task_group.spawn(action)

        if server.context.terminated.is_set():
            fire()
            return
        self._fire = fire
        timeout_s = server.config.keep_alive_timeout
        self._timer = server.loop.call_later(timeout_s, self.expire)
        _idle_of(server.context).add(self)

    async def stop(self) -> None:
        self._disarm()

    def expire(self) -> None:
        fire = self._fire
        self._disarm()
        if fire is not None:
            fire()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fire is not None:
            self._fire = None
            idle = _IDLE.get(self._server.context)
            if idle is not None:
                idle.discard(self)


class RouterTCPServer(TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleTimer(self)  # type: ignore[assignment]

    async def _idle_timeout(self) -> None:
        # Run when the timer fires: the wait itself is the timer's.
        await asyncio.shield(self._initiate_server_close())


def install() -> None:
    """Time idle connections out with a timer from now on, in this process."""
    hypercorn.asyncio.run.TCPServer = RouterTCPServer  # type: ignore[attr-defined]
