"""Where idempotency keys live: SQLite for one process, Redis shared by replicas.

Both implement `IdempotencyStore`; the rules (who proceeds, who replays, who
gets 409 or 422) are `router_core.accounting.idempotency`. A claim is one
atomic step in either store: of two concurrent requests with one key, on
one replica or on two, exactly one gets `None` (the claim) back.

In Redis a key `<org>/<key>` is stored as `idem:{<org>}/<key>`: the
organization (up to its first `/`) is the Redis Cluster hash tag, as it is
of that organization's limit keys, so a lost cluster master takes away the
idempotency keys of the organizations whose limits it held, and no others.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

from router_core.accounting.idempotency import Entry, decode_entry, encode_entry
from router_server.state.batch import Calls
from router_server.state.errors import Store, StoreUnavailable
from router_server.state.redis import LuaScript, RedisClient, redis_guard
from router_server.state.sqlite import SqliteFile


class IdempotencyStore(Protocol):
    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        """Store `entry` under `key` for `lease_s` unless one is there: then return it."""
        ...

    def start_claim(self, key: str, entry: Entry, lease_s: int) -> Awaitable[Entry | None]:
        """`claim`, under way when this returns (so it runs beside whatever the
        caller awaits next), read when awaited; it must be awaited. It goes
        ahead even if its caller goes meanwhile."""
        ...

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        """Replace our claim by the answered entry, kept `retention_s`."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop our claim (the answer is not to be replayed)."""
        ...

    def start_complete(self, key: str, entry: Entry, retention_s: int) -> Awaitable[None]:
        """`complete`, under way when this returns (as `start_claim`)."""
        ...

    def start_release(self, key: str, owner: str) -> Awaitable[None]:
        """`release`, under way when this returns (as `start_claim`)."""
        ...

    async def aclose(self) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency
  (key TEXT PRIMARY KEY, entry BLOB NOT NULL, expires_ms INTEGER NOT NULL);
"""


class SqliteIdempotencyStore:
    """The embedded store: one process; each step is one call on the file's one
    worker thread, so steps never interleave."""

    PRUNE_EVERY = 1000

    def __init__(self, path: Path) -> None:
        # NORMAL (WAL): a crash of the router loses no claim.
        self._file = SqliteFile(path, _SCHEMA, Store.IDEMPOTENCY, synchronous="NORMAL")
        self._claims = 0

    def start_claim(self, key: str, entry: Entry, lease_s: int) -> Awaitable[Entry | None]:
        # A task on the file's thread; shielded, so a caller cancelled meanwhile
        # leaves the claim to finish (and lapse after its lease).
        return asyncio.shield(self.claim(key, entry, lease_s))

    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        now = _now_ms()
        self._claims += 1
        prune = self._claims % self.PRUNE_EVERY == 0
        encoded = encode_entry(entry)

        def run(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                "SELECT entry FROM idempotency WHERE key = ? AND expires_ms > ?", (key, now)
            ).fetchone()
            if row is not None:
                found: bytes = row[0]
                return found
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)",
                    (key, encoded, now + lease_s * 1000),
                )
                if prune:
                    db.execute("DELETE FROM idempotency WHERE expires_ms <= ?", (now,))
            return None

        found = await self._file.call("claim", run, create=True, default=None)
        return None if found is None else decode_entry(found)

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        encoded = encode_entry(entry)
        expires = _now_ms() + retention_s * 1000

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "UPDATE idempotency SET entry = ?, expires_ms = ? WHERE key = ?",
                    (encoded, expires, key),
                )

        await self._file.call("complete", run, create=True, default=None)

    async def release(self, key: str, owner: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT entry FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None and decode_entry(row[0]).owner == owner:
                with db:
                    db.execute("DELETE FROM idempotency WHERE key = ?", (key,))

        await self._file.call("release", run, create=True, default=None)

    def start_complete(self, key: str, entry: Entry, retention_s: int) -> Awaitable[None]:
        return asyncio.ensure_future(self.complete(key, entry, retention_s))

    def start_release(self, key: str, owner: str) -> Awaitable[None]:
        return asyncio.ensure_future(self.release(key, owner))

    async def aclose(self) -> None:
        self._file.close()


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
    """Shared by replicas, on the process's one Redis client (which it does not close)."""

    PREFIX = "idem:"

    def __init__(self, client: RedisClient, timeout_s: float, calls: Calls | None = None) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._claim = LuaScript(client, _CLAIM, calls)
        self._owned = LuaScript(client, _OWNED, calls)
        self._releases: set[asyncio.Task[None]] = set()

    @classmethod
    def name(cls, key: str) -> str:
        """The Redis key of `<org>/<key>`, tagged with the organization."""
        org, scoped, rest = key.partition("/")
        return f"{cls.PREFIX}{{{org}}}/{rest}" if scoped and org else cls.PREFIX + key

    async def claim(self, key: str, entry: Entry, lease_s: int) -> Entry | None:
        return await self.start_claim(key, entry, lease_s)

    def start_claim(self, key: str, entry: Entry, lease_s: int) -> Awaitable[Entry | None]:
        """The script is queued in this loop turn's pipeline before this returns:
        a request's claim and its limits' admission share one round trip, and
        the claim's reply is read without a task or another loop turn."""

        def orphaned(found: bytes | None) -> None:
            # Claimed for a caller that went: give the key back for its retry.
            if found is None:
                task = asyncio.get_running_loop().create_task(self._quiet_release(key, entry))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

        reply = self._claim.start(
            keys=[self.name(key)],
            args=[encode_entry(entry), lease_s * 1000],
            on_orphan=orphaned,
            timeout_s=self.timeout_s,
        )
        return self._claimed(reply)

    async def _claimed(self, reply: Awaitable[bytes | None]) -> Entry | None:
        async with redis_guard(Store.IDEMPOTENCY, "claim", self.timeout_s, timed=False):
            found = await reply
        return None if found is None else decode_entry(found)

    async def _quiet_release(self, key: str, entry: Entry) -> None:
        with contextlib.suppress(StoreUnavailable):  # the lease ends it then
            await self.release(key, entry.owner)

    async def complete(self, key: str, entry: Entry, retention_s: int) -> None:
        await self.start_complete(key, entry, retention_s)

    async def release(self, key: str, owner: str) -> None:
        await self.start_release(key, owner)

    def start_complete(self, key: str, entry: Entry, retention_s: int) -> Awaitable[None]:
        return self._update(key, entry.owner, encode_entry(entry), retention_s * 1000)

    def start_release(self, key: str, owner: str) -> Awaitable[None]:
        return self._update(key, owner, b"", 0)

    def _update(self, key: str, owner: str, value: bytes, ttl_ms: int) -> Awaitable[None]:
        """Queued in this loop turn's pipeline (beside the limits' settlement)."""
        marker = f'"owner":"{owner}"'
        reply = self._owned.start(
            keys=[self.name(key)], args=[marker, value, ttl_ms], timeout_s=self.timeout_s
        )
        return self._updated(reply)

    async def _updated(self, reply: Awaitable[object]) -> None:
        async with redis_guard(Store.IDEMPOTENCY, "update", self.timeout_s, timed=False):
            await reply

    async def aclose(self) -> None:
        return None
