"""Managed keys in SQLite: the embedded default, one file that survives restarts.

As the override store: the file is created on the first change, WAL mode lets
the CLI write while a router reads, and every call runs in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from router_core.auth import ManagedKey
from router_server.credentials.store import (
    AUDIT_KEPT,
    KeyEvent,
    KeyStoreUnavailable,
    dumps,
    loads,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


class SqliteKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    async def load(self) -> list[ManagedKey]:
        def run(db: sqlite3.Connection) -> list[ManagedKey]:
            rows = db.execute("SELECT body FROM keys ORDER BY id").fetchall()
            return [k for (body,) in rows if (k := loads(body, ManagedKey)) is not None]

        return await self._call("list", run, create=False, default=[])

    async def put(self, keys: Sequence[ManagedKey], event: KeyEvent) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO keys (id, body) VALUES (?, ?)",
                    [(k.key.id, dumps(k)) for k in keys],
                )
                db.execute("INSERT INTO key_audit (body) VALUES (?)", (dumps(event),))
                db.execute(
                    "DELETE FROM key_audit WHERE seq <= (SELECT MAX(seq) FROM key_audit) - ?",
                    (AUDIT_KEPT,),
                )

        await self._call("put", run, create=True, default=None)

    async def audit(self, limit: int) -> list[KeyEvent]:
        def run(db: sqlite3.Connection) -> list[KeyEvent]:
            rows = db.execute(
                "SELECT body FROM key_audit ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [e for (body,) in rows if (e := loads(body, KeyEvent)) is not None]

        return await self._call("audit", run, create=False, default=[])

    async def aclose(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

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
            raise KeyStoreUnavailable(
                f"key store {operation}: SQLite file {self.path}: {exc}"
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
            # A revocation is a deliberate security act: make it survive power loss.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        return db
