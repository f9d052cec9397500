"""The one way the router uses SQLite: `SqliteFile`, every call in a worker thread.

Every embedded store (managed keys, nonces, overrides, idempotency keys) and the
usage ledger go through it, so the event loop never waits on the disk or on
another process's lock (the CLI writes the same files while a router reads them).
One file, WAL so readers and a writer do not block each other, created on the
first write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from router_server.state.errors import Store, StoreUnavailable

T = TypeVar("T")


class SqliteFile:
    """One SQLite file of records; `call` runs a function on it in a worker thread."""

    def __init__(
        self,
        path: str | Path,
        schema: str,
        store: Store,
        *,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        # FULL: each change survives power loss. NORMAL (WAL): a process crash
        # loses nothing, a power cut may lose the last moments.
        self.synchronous = synchronous
        self.schema = schema
        self.store = store
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One thread at a time: sqlite3 connections are not for concurrent use.
        self._limiter = anyio.CapacityLimiter(1)

    async def call(
        self, operation: str, run: Callable[[sqlite3.Connection], T], *, create: bool, default: T
    ) -> T:
        """`run(db)` on a worker thread, or `default` when the file does not exist
        and `create` is false."""
        return await anyio.to_thread.run_sync(
            lambda: self.call_blocking(operation, run, create=create, default=default),
            limiter=self._limiter,
        )

    def call_blocking(
        self, operation: str, run: Callable[[sqlite3.Connection], T], *, create: bool, default: T
    ) -> T:
        """The same on this thread: only for programs without an event loop (the CLI)."""
        try:
            with self._lock:
                db = self._connect(create)
                return default if db is None else run(db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                self.store, f"{self.store} store {operation}: SQLite file {self.path}: {exc}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(self.schema)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        return db
