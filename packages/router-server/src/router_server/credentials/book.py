"""The live view of the managed keys that requests consult, and the changes to them.

Rules (as `admin.book.OverrideBook`):
- Requests read `managed` (a dict by key id), which touches no store.
- The view is replaced whole: from the store every `refresh_s`, at once when
  the store's change feed reports a change on any replica, and after this
  replica's own changes. With Redis pub/sub a revocation is in force on every
  replica within milliseconds; without it, within `refresh_s` (2 s default).
- A store that cannot be read keeps the last view in force (logged).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from router_core import key_lifecycle
from router_core.auth import ManagedKey
from router_core.config import Limits
from router_core.config_enums import Priority
from router_core.key_lifecycle import NO_LIMITS
from router_server.credentials.store import (
    KeyChange,
    KeyEvent,
    KeyStore,
    log_event,
)
from router_server.state.errors import StoreUnavailable
from router_server.state.live import LiveView

log = logging.getLogger("router.keys")


class KeyNotFound(LookupError):
    pass


class KeyBook(LiveView[KeyStore]):
    def __init__(
        self, store: KeyStore, *, refresh_s: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self.managed: Mapping[str, ManagedKey] = {}
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        # Called with each change this book made, once it is stored (the router
        # makes it an `audit.router.v1` record beside overrides and limit denials).
        self.on_change: Callable[[KeyEvent], Awaitable[None]] | None = None

    async def refresh(self) -> None:
        try:
            loaded = await self.store.load()
        except StoreUnavailable as exc:
            if self.last_error != exc.detail:
                log.warning(
                    "keys not refreshed; keeping the last view",
                    extra={"error": exc.detail, "keys": len(self.managed)},
                )
            self.last_error = exc.detail
            return
        self.managed = {k.key.id: k for k in loaded}
        self.last_refresh = self.clock()
        self.last_error = None

    async def create(
        self,
        organization: str,
        actor: str,
        reason: str,
        *,
        models: tuple[str, ...] = ("*",),
        routes: tuple[str, ...] = ("*",),
        expires_at: float | None = None,
        limits: Limits = NO_LIMITS,
        priority: Priority | None = None,
    ) -> key_lifecycle.Created:
        now = self.clock()
        created = key_lifecycle.create(
            organization, now=now, actor=actor, choice=secrets.choice, models=models,
            routes=routes, expires_at=expires_at, limits=limits, priority=priority,
        )  # fmt: skip
        event = _event(now, actor, KeyChange.CREATED, created.managed, reason)
        await self._write([created.managed], event)
        return created

    async def revoke(self, key_id: str, actor: str, reason: str) -> ManagedKey:
        old = await self._get(key_id)
        revoked = key_lifecycle.revoke(old)
        await self._write([revoked], _event(self.clock(), actor, KeyChange.REVOKED, old, reason))
        return revoked

    async def rotate(
        self, key_id: str, actor: str, reason: str, overlap_s: float
    ) -> tuple[key_lifecycle.Created, ManagedKey]:
        old = await self._get(key_id)
        now = self.clock()
        successor, retiring = key_lifecycle.rotate(
            old, now=now, overlap_s=overlap_s, actor=actor, choice=secrets.choice
        )
        event = _event(now, actor, KeyChange.ROTATED, old, reason, successor.managed.key.id)
        await self._write([retiring, successor.managed], event)
        return successor, retiring

    async def _get(self, key_id: str) -> ManagedKey:
        await self.refresh()  # another replica (or the CLI) may have changed it
        found = self.managed.get(key_id)
        if found is None:
            raise KeyNotFound(key_id)
        return found

    async def _write(self, keys: list[ManagedKey], event: KeyEvent) -> None:
        await self.store.put(keys, event)
        log_event(event)
        if self.on_change is not None:
            await self.on_change(event)
        await self.refresh()

    def status(self) -> dict[str, object]:
        return {
            "managed": len(self.managed),
            "last_refresh": self.last_refresh,
            "error": self.last_error,
        }


def _event(
    now: float,
    actor: str,
    change: KeyChange,
    managed: ManagedKey,
    reason: str,
    new_key_id: str | None = None,
) -> KeyEvent:
    return KeyEvent(
        "aud_" + secrets.token_hex(8), now, actor, change, managed.key.id,
        managed.organization, reason[:500], new_key_id,
    )  # fmt: skip
