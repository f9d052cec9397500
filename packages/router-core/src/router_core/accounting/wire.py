"""Records <-> their JSON wire form (`usage.records.v1`, `audit.router.v1`).

Rules:
- The wire form is what the Kafka topics carry, what the ledger stores and
  what `schemas/*.json` describe; the attrs classes carry no serialization.
- Timestamps travel as RFC 3339 UTC with microseconds (`...T07:54:00.123456Z`);
  money as a decimal string of USD with 9 places (exact nano-USD), never a float.
- `structure(unstructure(r)) == r` for every record (a Hypothesis test holds it).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import cattrs

from router_core.accounting.records import AuditRecord, Outcome, TokenCounts, UsageRecord

_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_unstructure_hook(Outcome, lambda o: o.value)
_converter.register_structure_hook(Outcome, lambda v, _: Outcome(v))

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_us(us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC."""
    return (_EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_us(text: str) -> int:
    """RFC 3339 (any offset) as microseconds since the epoch."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_usd(nanos: int) -> str:
    return f"{Decimal(nanos).scaleb(-9):f}"


def parse_usd(text: str) -> int:
    return int(Decimal(text).scaleb(9))


def usage_to_wire(record: UsageRecord) -> dict[str, Any]:
    data: dict[str, Any] = _converter.unstructure(record)
    data["started_at"] = format_us(data.pop("started_at_us"))
    data["finished_at"] = format_us(data.pop("finished_at_us"))
    nanos = data.pop("cost_nano_usd")
    data["cost_usd"] = None if nanos is None else format_usd(nanos)
    return {"schema": data.pop("schema"), **data}


def usage_from_wire(data: dict[str, Any]) -> UsageRecord:
    fields = dict(data)
    fields["started_at_us"] = parse_us(fields.pop("started_at"))
    fields["finished_at_us"] = parse_us(fields.pop("finished_at"))
    cost = fields.pop("cost_usd")
    fields["cost_nano_usd"] = None if cost is None else parse_usd(cost)
    return _converter.structure(fields, UsageRecord)


def audit_to_wire(record: AuditRecord) -> dict[str, Any]:
    data: dict[str, Any] = _converter.unstructure(record)
    data["at"] = format_us(data.pop("at_us"))
    data["detail"] = dict(record.detail)
    return {"schema": data.pop("schema"), **data}


def audit_from_wire(data: dict[str, Any]) -> AuditRecord:
    fields = dict(data)
    fields["at_us"] = parse_us(fields.pop("at"))
    return _converter.structure(fields, AuditRecord)


__all__ = [
    "TokenCounts",
    "audit_from_wire",
    "audit_to_wire",
    "format_us",
    "parse_us",
    "usage_from_wire",
    "usage_to_wire",
]
