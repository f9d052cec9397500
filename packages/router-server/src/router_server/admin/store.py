"""The override store port (which one is opened is the state layer's choice).

Rules:
- A change and its audit entry are written together (one transaction), so
  there is never a change without its record, nor a record without a change.
- `load(now)` answers the overrides active at `now` and prunes the expired
  ones: an expired override is never applied again, so keeping it is clutter.
- Every failure of the backing service is raised as `StoreUnavailable`
  (`Store.OVERRIDES`: 503 overrides_unavailable), never carrying a URL or password.
- A store that can tell replicas about changes also implements
  `state.live.ChangeFeed`; the others are only re-read every `state.refresh_s`.
"""

from __future__ import annotations

from typing import Protocol

from router_core.overrides import Override
from router_server.admin.audit import AuditEntry

# Audit entries each store keeps (the durable trail is the router.audit log).
AUDIT_KEPT = 1000


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
