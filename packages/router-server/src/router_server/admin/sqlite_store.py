"""Overrides in SQLite: the embedded default, one file that survives restarts.

The file is created on the first change, so a router whose admins never made
one leaves nothing on disk. WAL mode lets other processes read it while one
writes; every call runs in a worker thread so the event loop never waits on
the disk or on another process's lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from router_core.overrides import Override
from router_server.admin import codec
from router_server.admin.audit import AuditEntry
from router_server.admin.store import AUDIT_KEPT, OverrideStoreUnavailable

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overrides (
    id TEXT PRIMARY KEY, expires_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


class SqliteOverrideStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One thread at a time: sqlite3 connections are not for concurrent use.
        self._limiter = anyio.CapacityLimiter(1)

    async def load(self, now: float) -> list[Override]:
        def run(db: sqlite3.Connection) -> list[Override]:
            with db:
                db.execute("DELETE FROM overrides WHERE expires_at <= ?", (now,))
            rows = db.execute("SELECT body FROM overrides ORDER BY id").fetchall()
            return [o for (body,) in rows if (o := codec.loads(body, Override)) is not None]

        return await self._call("list", run, create=False, default=[])

    async def put(self, override: Override, entry: AuditEntry) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO overrides (id, expires_at, body) VALUES (?, ?, ?)",
                    (override.id, override.expires_at, codec.dumps(override)),
                )
                self._record(db, entry)

        await self._call("put", run, create=True, default=None)

    async def delete(self, override_id: str, entry: AuditEntry) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with db:
                deleted = db.execute("DELETE FROM overrides WHERE id = ?", (override_id,))
                if deleted.rowcount == 0:
                    return False
                self._record(db, entry)
                return True

        return await self._call("delete", run, create=False, default=False)

    async def audit(self, limit: int) -> list[AuditEntry]:
        def run(db: sqlite3.Connection) -> list[AuditEntry]:
            rows = db.execute(
                "SELECT body FROM audit ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [e for (body,) in rows if (e := codec.loads(body, AuditEntry)) is not None]

        return await self._call("audit", run, create=False, default=[])

    async def aclose(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @staticmethod
    def _record(db: sqlite3.Connection, entry: AuditEntry) -> None:
        db.execute("INSERT INTO audit (body) VALUES (?)", (codec.dumps(entry),))
        db.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (AUDIT_KEPT,))

    async def _call(
        self, operation: str, run: Callable[[sqlite3.Connection], T], *, create: bool, default: T
    ) -> T:
        def in_thread() -> T:
            with self._lock:
                db = self._connect(create)
                return default if db is None else run(db)

        try:
            return await anyio.to_thread.run_sync(in_thread, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            raise OverrideStoreUnavailable(
                f"override store {operation}: SQLite file {self.path}: {exc}"
            ) from exc

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # An override is a deliberate operator act: make it survive power loss.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        return db
