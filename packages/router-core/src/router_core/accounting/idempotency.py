"""Idempotent retries: what a request with a key already seen gets.

Rules:
- The key is the caller's: `request_id` on `/v1/inference`, the
  `Idempotency-Key` header on the OpenAI routes. It is scoped to the
  organization, so two organizations never collide.
- The first request with a key claims it (`in_flight`, with a lease that
  expires if its replica dies) and, when answered, stores the answer
  (`completed`, kept `retention` >= 24 h).
- A later request with the same key and the same fingerprint (route and
  canonical JSON body) gets the stored answer without reaching a backend or
  being charged; while the first is still in flight it gets 409; with a
  different fingerprint it gets 422, whatever the first one's state.
- Only answers that a retry would get again are stored: successes and the
  caller's own faults. Limit refusals (402, 429), timeouts and dependency
  failures release the key, so a retry is served afresh.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from router_core.problems import Catalog, ClientError

MAX_KEY_LENGTH = 255
# Answers whose retry may well differ: the key is released, not stored.
_RETRYABLE_4XX = frozenset({402, 408, 409, 425, 429})


@attrs.frozen
class StoredResponse:
    status: int
    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = attrs.field(repr=False)


@attrs.frozen
class Entry:
    fingerprint: str
    # Which request holds the claim (its request id), so only it completes or releases it.
    owner: str
    response: StoredResponse | None = None

    @property
    def completed(self) -> bool:
        return self.response is not None


class Verdict(enum.Enum):
    PROCEED = "proceed"  # the claim is ours: serve the request
    REPLAY = "replay"  # answer with the stored response
    CONFLICT = "conflict"  # 409: the first request is still in flight
    MISMATCH = "mismatch"  # 422: the key was used for a different request


def decide(existing: Entry | None, fingerprint: str) -> Verdict:
    """What a request gets, given the entry its key already had (None: the claim is ours)."""
    if existing is None:
        return Verdict.PROCEED
    if existing.fingerprint != fingerprint:
        return Verdict.MISMATCH
    return Verdict.REPLAY if existing.completed else Verdict.CONFLICT


def refusal(verdict: Verdict, key: str) -> ClientError:
    if verdict is Verdict.CONFLICT:
        return ClientError(
            Catalog.IDEMPOTENCY_CONFLICT,
            f"A request with idempotency key {key!r} is still in progress; "
            "retry after it completes.",
            headers={"retry-after": "1"},
        )
    return ClientError(
        Catalog.IDEMPOTENCY_KEY_REUSED,
        f"Idempotency key {key!r} was already used for a different request "
        "(another route or body); use a new key for a new request.",
    )


def storable(status: int) -> bool:
    """Whether an answer is kept for retries (else the key is released)."""
    return status < 300 or (400 <= status < 500 and status not in _RETRYABLE_4XX)


def check_key(value: str) -> str:
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable() or not value.isascii():
        raise ClientError(
            Catalog.VALIDATION_FAILED,
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            param="Idempotency-Key",
            extra={"errors": [{"path": "Idempotency-Key", "message": "invalid"}]},
        )
    return value


def scope_key(organization: str, key: str) -> str:
    return f"{organization}/{key}"


def fingerprint(route: str, body: object) -> str:
    """The request's identity: its route and its JSON body, key order ignored."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def encode_entry(entry: Entry) -> bytes:
    """An entry as stored by the Redis and SQLite stores (JSON)."""
    data: dict[str, Any] = {"fingerprint": entry.fingerprint, "owner": entry.owner}
    if entry.response is not None:
        response = entry.response
        data["response"] = {
            "status": response.status,
            "content_type": response.content_type,
            "headers": [list(h) for h in response.headers],
            "body": base64.b64encode(response.body).decode(),
        }
    # orjson: the same compact JSON as json.dumps(separators=(",", ":")) would
    # write (non-ASCII as UTF-8 rather than escaped), at a fraction of the cost;
    # entries either wrote read back the same.
    return orjson.dumps(data)


def decode_entry(raw: bytes | str) -> Entry:
    data = orjson.loads(raw)
    response: Mapping[str, Any] | None = data.get("response")
    stored = None
    if response is not None:
        stored = StoredResponse(
            status=int(response["status"]),
            content_type=str(response["content_type"]),
            headers=tuple((str(k), str(v)) for k, v in response["headers"]),
            body=base64.b64decode(response["body"]),
        )
    return Entry(str(data["fingerprint"]), str(data["owner"]), stored)
