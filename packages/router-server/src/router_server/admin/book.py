"""The live view of the overrides that requests consult.

Rules:
- Requests read `applicable(model, organization, now)`, which touches no
  store: with no overrides it returns `NO_OVERRIDES` at once, otherwise it
  scans the few overrides in memory (the core's `applicable`).
- The view is replaced whole on each refresh: from the store every
  `refresh_s`, at once when the store's change feed says another replica
  changed something, and after this replica's own changes.
- Expiry is wall-clock time, checked on every read, so an override stops
  applying at its expiry even between refreshes.
- A store that cannot be read keeps the last view in force (logged); the
  router does not fall back to "no overrides" because Redis blinked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from router_core.overrides import NO_OVERRIDES, Applied, Override, applicable
from router_server.admin.audit import AuditEntry, log_entry
from router_server.admin.store import OverrideStore
from router_server.state.errors import StoreUnavailable
from router_server.state.live import LiveView

log = logging.getLogger("router.admin")


class OverrideBook(LiveView[OverrideStore]):
    def __init__(
        self,
        store: OverrideStore,
        *,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._overrides: tuple[Override, ...] = ()
        self.last_refresh: float | None = None
        self.last_error: str | None = None

    def applicable(self, model: str, organization: str, now: float) -> Applied:
        overrides = self._overrides
        if not overrides:
            return NO_OVERRIDES
        return applicable(overrides, model, organization, now)

    def active(self, now: float) -> list[Override]:
        return [o for o in self._overrides if o.active(now)]

    def get(self, override_id: str, now: float) -> Override | None:
        return next((o for o in self.active(now) if o.id == override_id), None)

    async def refresh(self) -> None:
        try:
            overrides = await self.store.load(self.clock())
        except StoreUnavailable as exc:
            if self.last_error != exc.detail:
                log.warning("overrides not refreshed; keeping the last view", extra={
                    "error": exc.detail, "overrides": len(self._overrides),
                })  # fmt: skip
            self.last_error = exc.detail
            return
        self._overrides = tuple(overrides)
        self.last_refresh = self.clock()
        self.last_error = None

    async def create(self, override: Override, entry: AuditEntry) -> None:
        await self.store.put(override, entry)
        log_entry(entry)
        await self.refresh()

    async def delete(self, override_id: str, entry: AuditEntry) -> bool:
        deleted = await self.store.delete(override_id, entry)
        if deleted:
            log_entry(entry)
            await self.refresh()
        return deleted

    def status(self) -> dict[str, object]:
        return {
            "active": len(self.active(self.clock())),
            "last_refresh": self.last_refresh,
            "error": self.last_error,
        }
