"""Reconciliation: the router's records against a client's own log.

Rules:
- Records are first deduplicated by record id: the export is at-least-once,
  so the topic may carry a record twice; that is not a duplicate charge.
- A request is matched by the caller's id (`client_request_id`: the body's
  `request_id` on /v1/inference, or the Idempotency-Key), else the router's
  `request_id` (the `x-request-id` the client received).
- Records of retries answered from the idempotency store (replayed) or
  refused by it (409, 422) are never charges: they are counted as retries,
  not matched. More than one charged record for one id is a duplicate.
- A client entry may carry fields to compare (`status`, `model` and token
  counts); any that differ from the record make the id mismatched.
- Agreement is exact: no tolerance, the spec's 1 % is not needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from router_core.accounting.records import Outcome
from router_core.accounting.wire import usage_from_wire

# Retries refused by their idempotency key: answered, never served nor charged.
IDEMPOTENT_REFUSALS = frozenset({"idempotency_conflict", "idempotency_key_reused"})
COMPARED = ("status", "model", "prompt_tokens", "completion_tokens", "total_tokens", "outcome")


@attrs.frozen
class Mismatch:
    id: str
    field: str
    client: Any
    router: Any


@attrs.frozen
class Report:
    client_ids: int
    records: int
    redelivered: int
    replayed: int
    matched: int
    missing: tuple[str, ...]
    duplicated: tuple[str, ...]
    mismatched: tuple[Mismatch, ...]
    unexpected: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.mismatched or self.unexpected)


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    usage = record.get("usage") or {}
    return {
        "status": record.get("status"),
        "model": record.get("model"),
        "outcome": record.get("outcome"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }


def reconcile(client: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]) -> Report:
    """Compare client entries (`{"request_id": ..., optional COMPARED fields}`) with
    wire-form usage records."""
    seen: set[str] = set()
    redelivered = replayed = total = 0
    charged: dict[str, list[Mapping[str, Any]]] = {}
    for raw in records:
        total += 1
        record = usage_from_wire(dict(raw))  # validates the shape
        if record.record_id in seen:
            redelivered += 1
            continue
        seen.add(record.record_id)
        if record.outcome is Outcome.REPLAYED or record.reason in IDEMPOTENT_REFUSALS:
            replayed += 1
            continue
        charged.setdefault(record.client_request_id or record.request_id, []).append(raw)
    wanted: dict[str, Mapping[str, Any]] = {}
    for entry in client:
        wanted[str(entry["request_id"])] = entry
    missing = sorted(i for i in wanted if i not in charged)
    duplicated = sorted(i for i in wanted if len(charged.get(i, ())) > 1)
    mismatched: list[Mismatch] = []
    for request_id, entry in wanted.items():
        found = charged.get(request_id)
        if not found:
            continue
        fields = _fields(found[0])
        for name in COMPARED:
            if name in entry and entry[name] != fields[name]:
                mismatched.append(Mismatch(request_id, name, entry[name], fields[name]))
    unexpected = sorted(i for i in charged if i not in wanted)
    return Report(
        client_ids=len(wanted),
        records=total,
        redelivered=redelivered,
        replayed=replayed,
        matched=len(wanted) - len(missing),
        missing=tuple(missing),
        duplicated=tuple(duplicated),
        mismatched=tuple(mismatched),
        unexpected=tuple(unexpected),
    )
