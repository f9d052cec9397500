"""Audit entries: who changed what, when and why, for every admin change.

Each entry is written to the override store together with the change (one
transaction), and logged as one JSON event on the `router.audit` logger, which
the durable audit sink reads.
"""

from __future__ import annotations

import enum
import logging

import attrs

from router_core.overrides import Override

log = logging.getLogger("router.audit")


class Change(enum.StrEnum):
    CREATED = "override_created"
    DELETED = "override_deleted"


@attrs.frozen
class AuditEntry:
    id: str
    # Epoch seconds (wall clock).
    at: float
    # The admin: their client certificate's subject.
    actor: str
    change: Change
    override: Override
    reason: str


def audit_detail(entry: AuditEntry) -> dict[str, object]:
    """What the change was, for the log event and the audit record."""
    override = entry.override
    return {
        "audit_id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "reason": entry.reason,
        "override_id": override.id,
        "action": str(override.action),
        "backend": override.backend,
        "model": override.model,
        "organization": override.organization,
        "weight": override.weight,
        "expires_at": override.expires_at,
    }


def log_entry(entry: AuditEntry) -> None:
    log.info("admin_change", extra={"event": str(entry.change), **audit_detail(entry)})
