"""Overrides and audit entries to and from JSON: the one wire format of the stores
and of the admin API's answers."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import cattrs
import orjson

from router_core.overrides import Override
from router_server.admin.audit import AuditEntry

log = logging.getLogger("router.admin")

_converter = cattrs.Converter(forbid_extra_keys=False)
T = TypeVar("T", Override, AuditEntry)


def to_data(value: Override | AuditEntry) -> dict[str, Any]:
    data: dict[str, Any] = _converter.unstructure(value)
    return data


def dumps(value: Override | AuditEntry) -> str:
    return orjson.dumps(to_data(value)).decode()


def loads(raw: str | bytes, kind: type[T]) -> T | None:
    """The stored value, or None (logged) when a record cannot be read: one bad
    record written by hand must not hide every other override."""
    try:
        return _converter.structure(orjson.loads(raw), kind)
    except (orjson.JSONDecodeError, cattrs.BaseValidationError, ValueError, TypeError) as exc:
        log.warning("unreadable %s record skipped", kind.__name__, extra={"error": str(exc)})
        return None
