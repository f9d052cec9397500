"""Managed keys: create, revoke and rotate, as pure functions of `now`.

Rules:
- Creating a key returns the key once (for the caller to show) and the
  record to store, which holds only its hash.
- Revocation is immediate and permanent; a revoked key is kept (so its id is
  never reused and audits can name it) but never admitted again.
- Rotation creates a successor with the same organization, scopes, limits
  and priority (and no expiry) and makes the old key expire after
  `overlap_s` (or sooner if it already would), so clients can switch over
  without an outage.
- Randomness is the caller's (`secrets.choice`), as is the clock.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from router_core import keys
from router_core.auth import ManagedKey
from router_core.config import ApiKey, Limits
from router_core.config_enums import Priority

NO_LIMITS = Limits()


@attrs.frozen
class Created:
    key: str = attrs.field(repr=False)
    managed: ManagedKey


def create(
    organization: str,
    *,
    now: float,
    actor: str,
    choice: Callable[[str], str],
    models: tuple[str, ...] = ("*",),
    routes: tuple[str, ...] = ("*",),
    expires_at: float | None = None,
    limits: Limits = NO_LIMITS,
    rotated_from: str | None = None,
    priority: Priority | None = None,
) -> Created:
    key_id = keys.new_key_id(choice)
    plaintext = keys.format_live_key(key_id, keys.new_secret(choice))
    api_key = ApiKey(
        id=key_id,
        hash=keys.hash_key(plaintext),
        limits=limits,
        models=models,
        routes=routes,
        expires_at=expires_at,
        priority=priority,
    )
    return Created(plaintext, ManagedKey(organization, api_key, now, actor, rotated_from))


def revoke(managed: ManagedKey) -> ManagedKey:
    return attrs.evolve(managed, key=attrs.evolve(managed.key, revoked=True))


def rotate(
    old: ManagedKey, *, now: float, overlap_s: float, actor: str, choice: Callable[[str], str]
) -> tuple[Created, ManagedKey]:
    """The successor (shown once) and the old key, now expiring after the overlap."""
    key = old.key
    successor = create(
        old.organization,
        now=now,
        actor=actor,
        choice=choice,
        models=key.models,
        routes=key.routes,
        limits=key.limits,
        rotated_from=key.id,
        priority=key.priority,
    )
    ends = now + overlap_s
    if key.expires_at is not None:
        ends = min(ends, key.expires_at)
    return successor, attrs.evolve(old, key=attrs.evolve(key, expires_at=ends))
