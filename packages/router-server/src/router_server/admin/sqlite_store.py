"""Overrides in SQLite: the embedded default, one file that survives restarts.

The file is created on the first change, so a router whose admins never made
one leaves nothing on disk. WAL mode lets other processes read it while one
writes; every call runs in a worker thread so the event loop never waits on
the disk or on another process's lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TypeVar

from router_core.overrides import Override
from router_server.admin import codec
from router_server.admin.audit import AuditEntry
from router_server.admin.store import AUDIT_KEPT
from router_server.state.errors import Store
from router_server.state.sqlite import SqliteFile

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
        self._file = SqliteFile(self.path, _SCHEMA, Store.OVERRIDES)

    async def load(self, now: float) -> list[Override]:
        def run(db: sqlite3.Connection) -> list[Override]:
            with db:
                db.execute("DELETE FROM overrides WHERE expires_at <= ?", (now,))
            rows = db.execute("SELECT body FROM overrides ORDER BY id").fetchall()
            return [o for (body,) in rows if (o := codec.loads(body, Override)) is not None]

        return await self._file.call("list", run, create=False, default=[])

    async def put(self, override: Override, entry: AuditEntry) -> None:
        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO overrides (id, expires_at, body) VALUES (?, ?, ?)",
                    (override.id, override.expires_at, codec.dumps(override)),
                )
                self._record(db, entry)

        await self._file.call("put", run, create=True, default=None)

    async def delete(self, override_id: str, entry: AuditEntry) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with db:
                deleted = db.execute("DELETE FROM overrides WHERE id = ?", (override_id,))
                if deleted.rowcount == 0:
                    return False
                self._record(db, entry)
                return True

        return await self._file.call("delete", run, create=False, default=False)

    async def audit(self, limit: int) -> list[AuditEntry]:
        def run(db: sqlite3.Connection) -> list[AuditEntry]:
            rows = db.execute(
                "SELECT body FROM audit ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [e for (body,) in rows if (e := codec.loads(body, AuditEntry)) is not None]

        return await self._file.call("audit", run, create=False, default=[])

    async def aclose(self) -> None:
        self._file.close()

    @staticmethod
    def _record(db: sqlite3.Connection, entry: AuditEntry) -> None:
        db.execute("INSERT INTO audit (body) VALUES (?)", (codec.dumps(entry),))
        db.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (AUDIT_KEPT,))
