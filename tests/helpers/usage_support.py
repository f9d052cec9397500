"""Helpers of the usage tests: the JSON Schemas, the ledger, the topic, a load generator."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jsonschema_rs
import orjson

from router_server.usage.topic import read_topic

from tests.helpers.support import ACME_KEY

SCHEMAS = Path(__file__).parents[2] / "schemas"
USAGE = jsonschema_rs.validator_for(json.loads((SCHEMAS / "usage.records.v1.json").read_text()))
AUDIT = jsonschema_rs.validator_for(json.loads((SCHEMAS / "audit.router.v1.json").read_text()))


def schema_errors(record: dict[str, Any]) -> list[str]:
    validator = USAGE if record.get("schema") == "usage.records.v1" else AUDIT
    return [str(e) for e in validator.iter_errors(record)]


def ledger_rows(directory: Path, table: str = "usage_records") -> list[dict[str, Any]]:
    path = directory / "usage.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute(f"SELECT record FROM {table}").fetchall()  # noqa: S608
        except sqlite3.OperationalError:
            return []
    return [orjson.loads(r[0]) for r in rows]


def wait_ledger(
    directory: Path, count: int, table: str = "usage_records", timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The ledger's records once it holds at least `count` (or whatever it has at timeout)."""
    deadline = time.monotonic() + timeout
    rows = ledger_rows(directory, table)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = ledger_rows(directory, table)
    return rows


def topic_records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        return await read_topic(bootstrap, topic)

    return anyio.run(read)


def data_dir(directory: Path) -> dict[str, str]:
    """A `state` section keeping the records (spool, ledger) in `directory`."""
    return {"dir": str(directory)}


def usage_config(bootstrap_env: str | None, topic: str, **spool: Any) -> Any:
    """A `usage` section: Kafka export to `topic` when a broker is given (the
    records' directory, `directory`, goes in the state section: `data_dir`)."""
    section: dict[str, Any] = {"spool": {"fsync": "interval", **spool}}
    if bootstrap_env is not None:
        section["kafka"] = {
            "bootstrap_env": bootstrap_env,
            "usage_topic": topic,
            "audit_topic": topic + ".audit",
            "enable_idempotence": False,  # Tansu has no idempotent producer
            "create_topics": True,
            "request_timeout_ms": 3000,
            "linger_ms": 5,
        }
    return section


def new_topic() -> str:
    return f"usage.test.{uuid.uuid4().hex[:12]}"


class Load:
    """Requests to `/v1/inference` from a background thread, each with its own request_id.

    `rate` per second (or as fast as `concurrency` allows when None); pause(),
    resume() and stop(). `answered` holds the ids of requests answered 200,
    `statuses` counts every status (0: no answer, e.g. a killed router).
    """

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 32,
        rate: float | None = None,
        total: int | None = None,
    ) -> None:
        self.url = url + "/v1/inference"
        self.concurrency = concurrency
        self.rate = rate
        self.total = total
        self.answered: list[str] = []
        self.sent_ids: list[str] = []
        self.statuses: dict[int, int] = {}
        self.sent = 0
        self.in_flight = 0
        self._paused = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def pause(self, timeout: float = 15.0) -> None:
        """Stop sending, and wait for the requests in flight to be answered."""
        self._paused.set()
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume(self) -> None:
        self._paused.clear()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopped.set()
        self._thread.join(timeout)

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        headers = {"authorization": f"Bearer {ACME_KEY}"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [self._worker(session, headers) for _ in range(self.concurrency)]
            await asyncio.gather(*workers)

    def _next(self) -> bool:
        if self._stopped.is_set() or (self.total is not None and self.sent >= self.total):
            return False
        self.sent += 1
        return True

    async def _worker(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        interval = self.concurrency / self.rate if self.rate else 0.0
        while True:
            while self._paused.is_set() and not self._stopped.is_set():
                await asyncio.sleep(0.01)
            if not self._next():
                return
            started = time.monotonic()
            request_id = str(uuid.uuid4())
            self.sent_ids.append(request_id)
            body = {
                "request_id": request_id,
                "model": "chat",
                "payload": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
            }
            self.in_flight += 1
            try:
                async with session.post(self.url, json=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            finally:
                self.in_flight -= 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.answered.append(request_id)
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
