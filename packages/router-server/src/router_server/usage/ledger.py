"""The embedded ledger: usage and audit records in SQLite (WAL), fed from the spool.

Rules:
- The ledger is a reader of the spool: it inserts each batch in one
  transaction, keyed by record id (`INSERT OR IGNORE`), and only then
  acknowledges it, so a crash replays a batch and never doubles it.
- WAL with `synchronous=NORMAL`: a committed batch survives a process crash;
  the spool, fsynced by its own policy, covers the rest.
- `report` aggregates in SQL over whitelisted columns only.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson

from router_core.accounting import frames
from router_core.accounting.wire import parse_usd
from router_server.state.errors import Store, StoreUnavailable
from router_server.state.sqlite import SqliteFile
from router_server.usage.spool_reader import SpoolReader

log = logging.getLogger("router.usage.ledger")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
  record_id TEXT PRIMARY KEY,
  request_id TEXT NOT NULL,
  client_request_id TEXT,
  organization TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT,
  backend TEXT,
  outcome TEXT NOT NULL,
  reason TEXT,
  status INTEGER NOT NULL,
  started_at TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  total_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  estimated INTEGER NOT NULL,
  cost_nano_usd INTEGER,
  record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_started ON usage_records (started_at);
CREATE TABLE IF NOT EXISTS audit_records (
  record_id TEXT PRIMARY KEY,
  at TEXT NOT NULL,
  event TEXT NOT NULL,
  organization TEXT,
  record BLOB NOT NULL
);
"""

# --group-by names -> columns.
GROUPS = {
    "org": "organization",
    "model": "model",
    "key": "key_id",
    "backend": "backend",
    "outcome": "outcome",
    "day": "substr(started_at, 1, 10)",
}
_TOTALS = [
    "count(*) AS requests",
    "sum(outcome = 'success') AS success",
    "sum(outcome = 'denied') AS denied",
    "sum(outcome = 'backend_error') AS backend_error",
    "sum(outcome = 'client_cancelled') AS cancelled",
    "sum(outcome = 'replayed') AS replayed",
    "sum(prompt_tokens) AS prompt_tokens",
    "sum(completion_tokens) AS completion_tokens",
    "sum(total_tokens) AS total_tokens",
    "sum(estimated) AS estimated",
    "sum(cost_nano_usd) AS cost_nano_usd",
]
_USAGE_INSERT = (
    "INSERT OR IGNORE INTO usage_records VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _usage_row(payload: bytes) -> tuple[Any, ...]:
    r = orjson.loads(payload)
    u = r["usage"]
    cost = r["cost_usd"]
    return (
        r["record_id"], r["request_id"], r["client_request_id"], r["organization"],
        r["key_id"], r["model"], r["backend"], r["outcome"], r["reason"], r["status"],
        r["started_at"], u["prompt_tokens"], u["completion_tokens"], u["total_tokens"],
        u["cached_tokens"], u["reasoning_tokens"], int(u["estimated"]),
        None if cost is None else parse_usd(cost), payload,
    )  # fmt: skip


def _audit_row(payload: bytes) -> tuple[Any, ...]:
    r = orjson.loads(payload)
    return (r["record_id"], r["at"], r["event"], r["organization"], payload)


class UsageLedger:
    """The ledger file, through the state layer's one SQLite idiom (`SqliteFile`):
    the router writes on its worker thread (`append`); the CLI, which has no
    event loop, reads on its own (`report`, `records`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # NORMAL (WAL): a committed batch survives a crash; the spool covers the rest.
        self.file = SqliteFile(path, _SCHEMA, Store.LEDGER, synchronous="NORMAL")
        self.written = 0

    @classmethod
    def open_readonly(cls, path: Path) -> UsageLedger:
        """The ledger at `path`, opened now: FileNotFoundError when there is none,
        StoreUnavailable when it cannot be read."""
        if not path.exists():
            raise FileNotFoundError(f"no usage ledger at {path}")
        ledger = cls(path)
        ledger.file.call_blocking("open", lambda db: None, create=False, default=None)
        return ledger

    async def append(self, batch: Sequence[frames.Frame]) -> None:
        """Insert `batch` in one transaction, on the file's worker thread."""
        await self.file.call("write", self._writer(batch), create=True, default=None)
        self.written += len(batch)

    def write(self, batch: Sequence[frames.Frame]) -> None:
        """`append` on this thread (tools and tests without an event loop)."""
        self.file.call_blocking("write", self._writer(batch), create=True, default=None)
        self.written += len(batch)

    @staticmethod
    def _writer(batch: Sequence[frames.Frame]) -> Callable[[sqlite3.Connection], None]:
        def run(db: sqlite3.Connection) -> None:
            # Parsed here, on the file's thread: a batch of thousands of records
            # parsed on the event loop would hold every request up meanwhile.
            usage = [_usage_row(f.payload) for f in batch if f.kind is frames.FrameKind.USAGE]
            audit = [_audit_row(f.payload) for f in batch if f.kind is frames.FrameKind.AUDIT]
            with db:
                db.executemany(_USAGE_INSERT, usage)
                db.executemany("INSERT OR IGNORE INTO audit_records VALUES (?, ?, ?, ?, ?)", audit)

        return run

    def report(
        self, since: str, until: str | None, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Totals per group of records started in [since, until) (RFC 3339 strings)."""
        columns = [f"{GROUPS[g]} AS {g}" for g in group_by]
        where = "started_at >= ?" + (" AND started_at < ?" if until else "")
        params = [since, until] if until else [since]
        select = ", ".join([*columns, *_TOTALS])
        group = (
            f" GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}" if group_by else ""
        )
        # Only whitelisted column expressions (GROUPS, _TOTALS) are interpolated.
        sql = f"SELECT {select} FROM usage_records WHERE {where}{group}"  # noqa: S608

        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]

        return self.file.call_blocking("report", run, create=False, default=[])

    def records(self, since: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT record FROM usage_records"
        params: list[str] = []
        if since is not None:
            sql += " WHERE started_at >= ?"
            params.append(since)

        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            return [orjson.loads(payload) for (payload,) in db.execute(sql, params)]

        return self.file.call_blocking("records", run, create=False, default=[])

    def close(self) -> None:
        self.file.close()


async def feed(
    reader: SpoolReader, ledger: UsageLedger, batch_records: int = 2000, linger_s: float = 0.1
) -> None:
    """Drain the spool into the ledger forever; a failed write is retried, never skipped.

    After each batch it lingers, so that records arriving meanwhile share the
    next one: a batch costs two thread hops, a commit and a cursor write,
    which per record was about a sixth of the router's CPU under load.
    """
    delay = 0.1
    while True:
        batch = await reader.read(batch_records)
        try:
            await ledger.append(batch)
        except StoreUnavailable as exc:
            log.error("ledger write failed; retrying", extra={"error": exc.detail})
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        delay = 0.1
        reader.ack()
        await anyio.sleep(linger_s)
