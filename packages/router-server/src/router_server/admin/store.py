"""The override store port, and opening the configured one.

Rules:
- A change and its audit entry are written together (one transaction), so
  there is never a change without its record, nor a record without a change.
- `load(now)` answers the overrides active at `now` and prunes the expired
  ones: an expired override is never applied again, so keeping it is clutter.
- Every failure of the backing service is raised as `OverrideStoreUnavailable`
  (a `DependencyError`, 503), whose message never carries a URL or password.
- A store that can tell replicas about changes also implements
  `shared_state.ChangeFeed`;
  the others are only re-read every `overrides.refresh_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from router_core.config import RouterConfig
from router_core.overrides import Override
from router_core.problems import Catalog, DependencyError
from router_server.admin.audit import AuditEntry

# Audit entries each store keeps (the durable trail is the router.audit log).
AUDIT_KEPT = 1000


class OverrideStoreUnavailable(DependencyError):
    def __init__(self, detail: str) -> None:
        super().__init__(Catalog.OVERRIDES_UNAVAILABLE, detail)


class OverrideStore(Protocol):
    async def load(self, now: float) -> list[Override]:
        """The overrides active at `now`; expired ones are deleted."""
        ...

    async def put(self, override: Override, entry: AuditEntry) -> None: ...

    async def delete(self, override_id: str, entry: AuditEntry) -> bool:
        """Whether the override existed (and is now deleted, with `entry` recorded)."""
        ...

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The most recent entries, newest first."""
        ...

    async def aclose(self) -> None: ...


def open_override_store(config: RouterConfig, env: Mapping[str, str]) -> OverrideStore:
    settings = config.overrides
    if settings.store == "redis":
        from router_server.admin.redis_store import RedisOverrideStore

        return RedisOverrideStore.from_url(env[settings.redis_url_env])
    from router_server.admin.sqlite_store import SqliteOverrideStore

    return SqliteOverrideStore(settings.sqlite_path)
