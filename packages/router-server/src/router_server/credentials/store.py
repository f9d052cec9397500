"""The key store port: managed keys and their audit trail, and opening the configured one.

Rules:
- A change (one or two keys: a rotation writes both) and its audit event are
  written together, so there is never a change without its record.
- Records hold the key's hash, never the key.
- Every failure of the backing service is raised as `StoreUnavailable`
  (`Store.KEYS`: 503 keys_unavailable), whose message never carries a URL or password.
- A store that can tell replicas about changes also implements
  `state.live.ChangeFeed`; the others are only re-read every `state.refresh_s`.
- Which store is opened is the state layer's choice (`router_server.state`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import attrs
import cattrs
import orjson

from router_core.auth import ManagedKey
from router_core.config_codec import make_converter

log = logging.getLogger("router.keys")
audit_log = logging.getLogger("router.audit")

AUDIT_KEPT = 1000


class KeyChange(enum.StrEnum):
    CREATED = "key_created"
    REVOKED = "key_revoked"
    ROTATED = "key_rotated"


@attrs.frozen
class KeyEvent:
    id: str
    at: float
    # The admin's certificate subject, or `cli:<user>`.
    actor: str
    change: KeyChange
    key_id: str
    organization: str
    reason: str
    # A rotation's successor.
    new_key_id: str | None = None


class KeyStore(Protocol):
    async def load(self) -> list[ManagedKey]: ...

    async def put(self, keys: Sequence[ManagedKey], event: KeyEvent) -> None: ...

    async def audit(self, limit: int) -> list[KeyEvent]:
        """The most recent events, newest first."""
        ...

    async def aclose(self) -> None: ...


_converter = make_converter()
T = TypeVar("T", ManagedKey, KeyEvent)


def to_data(value: ManagedKey | KeyEvent) -> dict[str, Any]:
    data: dict[str, Any] = _converter.unstructure(value)
    return data


def dumps(value: ManagedKey | KeyEvent) -> str:
    return orjson.dumps(to_data(value)).decode()


def loads(raw: str | bytes, kind: type[T]) -> T | None:
    """The stored record, or None (logged): one bad record must not hide the others."""
    try:
        return _converter.structure(orjson.loads(raw), kind)
    except (orjson.JSONDecodeError, cattrs.BaseValidationError, ValueError, TypeError) as exc:
        log.warning(
            "unreadable %s record skipped", kind.__name__, extra={"error": type(exc).__name__}
        )
        return None


def shown(managed: ManagedKey, now: float) -> dict[str, Any]:
    """A managed key as the CLI and admin API show it: everything but the hash."""
    key = managed.key
    state = "revoked" if key.revoked else "expired" if key.expired(now) else "active"
    return {
        "id": key.id,
        "organization": managed.organization,
        "state": state,
        "models": list(key.models),
        "routes": list(key.routes),
        "priority": key.priority,
        "expires_at": key.expires_at,
        "created_at": managed.created_at,
        "created_by": managed.created_by,
        "rotated_from": managed.rotated_from,
    }


def event_detail(event: KeyEvent) -> dict[str, object]:
    """What the change was, for the log event and the audit record (never a secret)."""
    return {
        "audit_id": event.id,
        "at": event.at,
        "actor": event.actor,
        "reason": event.reason,
        "key_id": event.key_id,
        "organization": event.organization,
        "new_key_id": event.new_key_id,
    }


def log_event(event: KeyEvent) -> None:
    audit_log.info("admin_change", extra={"event": str(event.change), **event_detail(event)})
