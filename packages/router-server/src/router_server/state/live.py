"""A live in-memory view of a small store that every replica must see within seconds
(admin overrides, managed keys): re-read on every change the store reports and
every `refresh_s` besides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

import anyio


@runtime_checkable
class ChangeFeed(Protocol):
    async def listen(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever any replica changes something (and after a
        reconnection, when a change may have been missed); runs until cancelled."""
        ...


S = TypeVar("S")


class LiveView(Generic[S]):
    """The part the books share: `follow()` keeps the view current."""

    store: S
    refresh_s: float
    _wake: anyio.Event | None = None

    async def refresh(self) -> None:
        raise NotImplementedError

    async def follow(self) -> None:
        """Re-read the store on every change it reports and every `refresh_s`,
        until cancelled (started in the app's lifespan)."""
        async with anyio.create_task_group() as tg:
            wake = self._wake = anyio.Event()
            if isinstance(self.store, ChangeFeed):
                tg.start_soon(self.store.listen, self._changed)
            while True:
                with anyio.move_on_after(self.refresh_s):
                    await wake.wait()
                # A new event before reading, so a change reported meanwhile
                # is read on the next turn rather than lost.
                wake = self._wake = anyio.Event()
                await self.refresh()

    def _changed(self) -> None:
        if self._wake is not None:
            self._wake.set()
