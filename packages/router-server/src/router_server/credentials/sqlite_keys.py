"""Managed keys in SQLite: the embedded default, one file that survives restarts.

As the override store: the file is created on the first change, WAL mode lets
the CLI write while a router reads, and every call runs in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from router_core.auth import ManagedKey
from router_server.credentials.store import (
    AUDIT_KEPT,
    KeyEvent,
    dumps,
    loads,
)
from router_server.state.errors import Store
from router_server.state.sqlite import SqliteFile

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


class SqliteKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, _SCHEMA, Store.KEYS)

    async def load(self) -> list[ManagedKey]:
        def run(db: sqlite3.Connection) -> list[ManagedKey]:
            rows = db.execute("SELECT body FROM keys ORDER BY id").fetchall()
            return [k for (body,) in rows if (k := loads(body, ManagedKey)) is not None]

        return await self._file.call("list", run, create=False, default=[])

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

        await self._file.call("put", run, create=True, default=None)

    async def audit(self, limit: int) -> list[KeyEvent]:
        def run(db: sqlite3.Connection) -> list[KeyEvent]:
            rows = db.execute(
                "SELECT body FROM key_audit ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
            return [e for (body,) in rows if (e := loads(body, KeyEvent)) is not None]

        return await self._file.call("audit", run, create=False, default=[])

    async def aclose(self) -> None:
        self._file.close()
