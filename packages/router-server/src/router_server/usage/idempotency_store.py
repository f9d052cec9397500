"""Where idempotency keys live: SQLite for one replica, Redis shared by replicas.

Both implement `IdempotencyStore`; the rules (who proceeds, who replays, who
gets 409 or 422) are `router_core.accounting.idempotency`. A claim is one
atomic step in either store: of two concurrent requests with one key, on
one replica or on two, exactly one gets `None` (the claim) back.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router_core.accounting.idempotency import Entry, decode_entry, encode_entry


class IdempotencyUnavailable(Exception):
    """The store did not answer (raised by adapters; the sink answers 503)."""


class IdempotencyStore(Protocol):
    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        """Store `entry` under `key` for `lease_s` unless one is there: then return it."""
        ...

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        """Replace our claim by the answered entry, kept `retention_s`."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop our claim (the answer is not to be replayed)."""
        ...

    async def aclose(self) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteIdempotencyStore:
    """The embedded store: one process, so the event loop serializes every step."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency "
            "(key TEXT PRIMARY KEY, entry BLOB NOT NULL, expires_ms INTEGER NOT NULL)"
        )
        self._claims = 0

    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        now = _now_ms()
        try:
            row = self.db.execute(
                "SELECT entry FROM idempotency WHERE key = ? AND expires_ms > ?", (key, now)
            ).fetchone()
            if row is not None:
                return decode_entry(row[0])
            self.db.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)",
                (key, encode_entry(entry), now + lease_s * 1000),
            )
            self._claims += 1
            if self._claims % 1000 == 0:
                self.db.execute("DELETE FROM idempotency WHERE expires_ms <= ?", (now,))
        except sqlite3.Error as exc:
            raise IdempotencyUnavailable(str(exc)) from None
        return None

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        try:
            self.db.execute(
                "UPDATE idempotency SET entry = ?, expires_ms = ? WHERE key = ?",
                (encode_entry(entry), _now_ms() + retention_s * 1000, key),
            )
        except sqlite3.Error as exc:
            raise IdempotencyUnavailable(str(exc)) from None

    async def release(self, key: str, owner: str) -> None:
        try:
            row = self.db.execute("SELECT entry FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None and decode_entry(row[0]).owner == owner:
                self.db.execute("DELETE FROM idempotency WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise IdempotencyUnavailable(str(exc)) from None

    async def aclose(self) -> None:
        self.db.close()


# GET, or SET with a lease when absent: one atomic step.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# Replace or drop the entry only if our claim is still the one stored.
_OWNED = """
local current = redis.call('GET', KEYS[1])
if not current or not string.find(current, ARGV[1], 1, true) then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisIdempotencyStore:
    PREFIX = "idem:"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._owned = client.register_script(_OWNED)

    @classmethod
    def from_url(cls, url: str, timeout_s: float = 0.5) -> RedisIdempotencyStore:
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client)

    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        try:
            found = await self._claim(
                keys=[self.PREFIX + key], args=[encode_entry(entry), lease_s * 1000]
            )
        except (RedisError, OSError) as exc:
            raise IdempotencyUnavailable(str(exc)) from None
        return None if found is None else decode_entry(found)

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        await self._update(key, entry.owner, encode_entry(entry), retention_s * 1000)

    async def release(self, key: str, owner: str) -> None:
        await self._update(key, owner, b"", 0)

    async def _update(self, key: str, owner: str, value: bytes, ttl_ms: int) -> None:
        marker = f'"owner":"{owner}"'
        try:
            await self._owned(keys=[self.PREFIX + key], args=[marker, value, ttl_ms])
        except (RedisError, OSError) as exc:
            raise IdempotencyUnavailable(str(exc)) from None

    async def aclose(self) -> None:
        await self.client.aclose()
