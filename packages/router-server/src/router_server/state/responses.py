"""Where stored OpenAI Responses live: SQLite for one process, Redis shared by replicas.

Both implement `ResponseStore`, keyed by organization and response id: one
organization's id never reaches another's entry. An entry expires after the
`ttl_s` it was put with (`responses.retention_s`); an expired entry is not
found. In Redis a response is `resp:{<org>}/<id>` (the organization is the
Cluster hash tag, as for its limits and idempotency keys), with the TTL
on the key; in SQLite, a row with its expiry, pruned as the store is written.
A conversation larger than the `max_bytes` given is refused (`TooLarge`)
before anything is written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

import attrs
import orjson

from router_server.state.errors import Store, StoreUnavailable
from router_server.state.redis import RedisClient, redis_guard
from router_server.state.sqlite import SqliteFile


@attrs.frozen
class StoredResponse:
    # The Response object as the client got it.
    response: dict[str, Any]
    # The conversation up to and including its output (history, input, output items).
    items: list[dict[str, Any]]
    created_at: int
    # The id of the conversation's first response (every turn of one
    # conversation has the same): what pins its turns to one backend.
    conversation: str | None = None


class TooLarge(ValueError):
    """The conversation is over the store's size bound; nothing was written."""


def _encode(stored: StoredResponse, max_bytes: int) -> bytes:
    entry: dict[str, Any] = {
        "response": stored.response,
        "items": stored.items,
        "created_at": stored.created_at,
    }
    if stored.conversation is not None:
        entry["conversation"] = stored.conversation
    data = orjson.dumps(entry)
    if len(data) > max_bytes:
        raise TooLarge(f"the conversation is {len(data)} bytes, over responses.max_bytes")
    return data


def _decode(data: bytes | str) -> StoredResponse:
    parsed = orjson.loads(data)
    return StoredResponse(
        parsed["response"], parsed["items"], parsed["created_at"], parsed.get("conversation")
    )


class ResponseStore(Protocol):
    async def put(
        self, organization: str, response_id: str, stored: StoredResponse, ttl_s: int
    ) -> None: ...

    async def get(self, organization: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, organization: str, response_id: str) -> bool:
        """True when there was one to delete."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  organization TEXT NOT NULL, id TEXT NOT NULL, entry BLOB NOT NULL,
  expires_ms INTEGER NOT NULL, PRIMARY KEY (organization, id)
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_ms);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# A row of the responses table: organization, id, entry, expires_ms.
_Row = tuple[str, str, bytes, int]


def _settle(batch: list[tuple[_Row, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


class SqliteResponseStore:
    """The embedded store (one process), on the file's one worker thread.

    Writes are coalesced: the puts made while a write is on the thread go
    together in the next one, one transaction, so a busy router pays one
    thread hop and one commit for many responses. Each put returns once its
    row is committed (or raises what the write raised).
    """

    # Expired rows are deleted every this many writes, at most this many at once.
    PRUNE_EVERY = 100
    PRUNE_BATCH = 1000

    def __init__(self, path: Path, max_bytes: int) -> None:
        self._file = SqliteFile(path, _SCHEMA, Store.RESPONSES, synchronous="NORMAL")
        self.max_bytes = max_bytes
        self._writes = 0
        self._queued: list[tuple[_Row, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(
        self, organization: str, response_id: str, stored: StoredResponse, ttl_s: int
    ) -> None:
        row = (organization, response_id, _encode(stored, self.max_bytes), _now_ms() + ttl_s * 1000)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((row, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued())
        # Shielded: a caller that goes away leaves its row to be written.
        await asyncio.shield(done)

    async def _write_queued(self) -> None:
        batch: list[tuple[_Row, asyncio.Future[None]]] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._write([row for row, _ in batch])
                except Exception as exc:  # handed to every put of the batch
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        except BaseException:  # cancelled (the loop is closing): nobody waits forever
            gone = StoreUnavailable(Store.RESPONSES, "responses store: the write was cancelled")
            _settle([*batch, *self._queued], gone)
            self._queued = []
            raise
        finally:
            self._writer = None

    async def _write(self, rows: list[_Row]) -> None:
        now = _now_ms()
        before, self._writes = self._writes, self._writes + len(rows)
        prune = before // self.PRUNE_EVERY != self._writes // self.PRUNE_EVERY

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", rows)
                if prune:
                    db.execute(
                        "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses "
                        "WHERE expires_ms <= ? LIMIT ?)",
                        (now, self.PRUNE_BATCH),
                    )

        await self._file.call("put", run, create=True, default=None)

    async def get(self, organization: str, response_id: str) -> StoredResponse | None:
        now = _now_ms()

        def run(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                "SELECT entry FROM responses WHERE organization = ? AND id = ? AND expires_ms > ?",
                (organization, response_id, now),
            ).fetchone()
            return None if row is None else bytes(row[0])

        found = await self._file.call("get", run, create=False, default=None)
        return None if found is None else _decode(found)

    async def delete(self, organization: str, response_id: str) -> bool:
        now = _now_ms()

        def run(db: sqlite3.Connection) -> bool:
            with db:
                gone = db.execute(
                    "DELETE FROM responses WHERE organization = ? AND id = ? AND expires_ms > ?",
                    (organization, response_id, now),
                )
            return gone.rowcount > 0

        deleted: bool = await self._file.call("delete", run, create=False, default=False)
        return deleted

    async def aclose(self) -> None:
        if self._writer is not None:  # what was put is written before the file closes
            await asyncio.wait([self._writer])
        self._file.close()


class RedisResponseStore:
    """Shared by replicas, on the process's one Redis client (which it does not close)."""

    PREFIX = "resp:"

    def __init__(self, client: RedisClient, timeout_s: float, max_bytes: int) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    @classmethod
    def name(cls, organization: str, response_id: str) -> str:
        return f"{cls.PREFIX}{{{organization}}}/{response_id}"

    async def put(
        self, organization: str, response_id: str, stored: StoredResponse, ttl_s: int
    ) -> None:
        data = _encode(stored, self.max_bytes)
        async with redis_guard(Store.RESPONSES, "put", self.timeout_s):
            await self.client.set(self.name(organization, response_id), data, ex=ttl_s)

    async def get(self, organization: str, response_id: str) -> StoredResponse | None:
        async with redis_guard(Store.RESPONSES, "get", self.timeout_s):
            found = await self.client.get(self.name(organization, response_id))
        if found is None:
            return None
        return _decode(found)

    async def delete(self, organization: str, response_id: str) -> bool:
        async with redis_guard(Store.RESPONSES, "delete", self.timeout_s):
            gone = await self.client.delete(self.name(organization, response_id))
        return bool(gone)

    async def aclose(self) -> None:
        return None
