"""Nonces of signed requests, each kept for the skew window so a replay is refused.

Rules:
- `claim(key_id, nonce, ttl_s)` is true the first time a nonce is seen for a
  key within `ttl_s`, false on every replay. Nonces are per key, so one
  client cannot block another's.
- Embedded: a SQLite file (beside the key store's), so a restart forgets
  none; expiry is wall-clock time for the same reason. Distributed: Redis
  `SET NX EX`, shared by every replica. `MemoryNonces` is for embedding the
  router in one's own process and for tests.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from router_server.state.batch import Calls
from router_server.state.errors import Store
from router_server.state.redis import RedisClient, redis_guard
from router_server.state.sqlite import SqliteFile

MAX_REMEMBERED = 1_000_000


class NonceStore(Protocol):
    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryNonces:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        now = self.clock()
        if len(self._seen) >= MAX_REMEMBERED or len(self._seen) % 1024 == 0:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        expires = self._seen.get((key_id, nonce))
        if expires is not None and expires > now:
            return False
        self._seen[(key_id, nonce)] = now + ttl_s
        return True

    async def aclose(self) -> None:
        return None


class RedisNonces:
    """Shared by replicas, on the process's one Redis client."""

    def __init__(
        self,
        client: RedisClient,
        *,
        timeout_s: float,
        prefix: str = "router:",
        calls: Calls | None = None,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._prefix = prefix
        self._calls = calls

    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        name, ttl = f"{self._prefix}nonce:{key_id}:{nonce}", max(1, int(ttl_s))
        async with redis_guard(Store.NONCES, "claim", self._timeout_s):
            if self._calls is not None:
                fresh = await self._calls.command("SET", name, b"1", "NX", "EX", ttl)
            else:
                fresh = await self._client.set(name, b"1", nx=True, ex=ttl)
        return bool(fresh)

    async def aclose(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    key_id TEXT NOT NULL, nonce TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key_id, nonce));
"""


class SqliteNonces:
    """Nonces in a SQLite file: one process, kept across restarts."""

    PRUNE_EVERY = 1024

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        # NORMAL: a crash of the router loses no nonce (WAL), and no fsync per request.
        self._file = SqliteFile(path, _SCHEMA, Store.NONCES, synchronous="NORMAL")
        self.clock = clock
        self._claims = 0

    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        now = self.clock()
        self._claims += 1
        prune = self._claims % self.PRUNE_EVERY == 1

        def run(db: sqlite3.Connection) -> bool:
            with db:
                if prune:
                    db.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
                else:
                    db.execute(
                        "DELETE FROM nonces WHERE key_id = ? AND nonce = ? AND expires_at <= ?",
                        (key_id, nonce, now),
                    )
                inserted = db.execute(
                    "INSERT OR IGNORE INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)",
                    (key_id, nonce, now + ttl_s),
                )
                return inserted.rowcount == 1

        return await self._file.call("claim", run, create=True, default=False)

    async def aclose(self) -> None:
        self._file.close()
