"""Settlements the shared limit store could not take yet, kept on disk until it does.

Rules:
- A settlement the store refuses (down, or no answer in time) is written here
  before the request's usage record is, so a record never exists whose
  settlement could be lost: not by a store outage, not by the router being
  killed (the file is read again at start-up).
- Replaying is safe however often it happens: a store applies a settlement
  once per hold (the hold is removed as it is settled; a settlement whose
  hold is gone, already settled, changes nothing), so a settlement that the
  store applied although its answer never came, replayed later, is a no-op.
- One row per settlement: its holds as the store needs them (id, state key,
  kind, amount, window end) and the actual amounts, as JSON.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import orjson

from router_core.limits.admission import LimitKind
from router_core.limits.ledger import Hold
from router_server.state.errors import Store
from router_server.state.sqlite import SqliteFile

OUTBOX_FILE = "settlements.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settlements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL);
"""


@attrs.frozen
class Pending:
    row: int
    holds: tuple[Hold, ...]
    actuals: tuple[int, ...]


def _encode(holds: Sequence[Hold], actuals: Sequence[int]) -> bytes:
    return orjson.dumps({
        "holds": [[h.id, h.key, h.kind.value, h.amount, h.expire_at_us] for h in holds],
        "actuals": list(actuals),
    })  # fmt: skip


def _decode(row: int, body: bytes) -> Pending:
    data = orjson.loads(body)
    holds = tuple(
        Hold(str(i), str(key), LimitKind(kind), int(amount), int(expire), str(key))
        for i, key, kind, amount, expire in data["holds"]
    )
    return Pending(row, holds, tuple(int(a) for a in data["actuals"]))


class SettlementOutbox:
    """The file of settlements waiting for the store (`state.dir/settlements.sqlite3`)."""

    def __init__(self, path: Path) -> None:
        self.file = SqliteFile(path, _SCHEMA, Store.LIMITS)
        # Rows known to wait (None: not read yet since start-up).
        self.count: int | None = None

    async def add(self, holds: Sequence[Hold], actuals: Sequence[int]) -> None:
        body = _encode(holds, actuals)

        def run(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO settlements (request_id, body, created_at) VALUES (?, ?, ?)",
                    (holds[0].id, body, time.time()),
                )

        await self.file.call("add", run, create=True, default=None)
        if self.count is not None:
            self.count += 1

    async def pending(self, limit: int) -> list[Pending]:
        def run(db: sqlite3.Connection) -> list[Pending]:
            rows = db.execute(
                "SELECT id, body FROM settlements ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [_decode(row, body) for row, body in rows]

        return await self.file.call("read", run, create=False, default=[])

    async def applied(self, rows: Sequence[int]) -> None:
        def run(db: sqlite3.Connection) -> int:
            with db:
                db.executemany("DELETE FROM settlements WHERE id = ?", [(r,) for r in rows])
                left = db.execute("SELECT COUNT(*) FROM settlements").fetchone()
            return int(left[0])

        self.count = await self.file.call("delete", run, create=False, default=0)

    async def size(self) -> int:
        def run(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT COUNT(*) FROM settlements").fetchone()[0])

        self.count = await self.file.call("count", run, create=False, default=0)
        return self.count

    def close(self) -> None:
        self.file.close()
