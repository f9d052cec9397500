"""What the stores of operator-made state share: admin overrides and managed keys.

Both keep a small set of records that every replica must see within seconds:
- in SQLite (the embedded default): one file, created on the first change,
  WAL so the CLI can write while a router reads, every call in a worker
  thread so the event loop never waits on the disk or another process's lock;
- in Redis: changes published on a channel that replicas follow, resubscribing
  after any failure;
- in memory (each store's book), a live view that re-reads the store on
  every published change and every `refresh_s` besides.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router_core.backoff import Backoff, Retrying

log = logging.getLogger("router.state")

T = TypeVar("T")
# How long one Redis call of a store may take.
REDIS_TIMEOUT_S = 2.0
# Waits between resubscriptions of a change feed: up to 0.1 s, doubling to 5 s.
RESUBSCRIBE_BACKOFF = Backoff(base_s=0.1, cap_s=5.0)


class SqliteFile:
    """One SQLite file of records; `call` runs a function on it in a worker thread."""

    def __init__(
        self,
        path: str | Path,
        schema: str,
        what: str,
        unavailable: type[Exception],
        *,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        # FULL: each change survives power loss. NORMAL (WAL): a process crash
        # loses nothing, a power cut may lose the last moments.
        self.synchronous = synchronous
        self.schema = schema
        self.what = what
        self.unavailable = unavailable
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One thread at a time: sqlite3 connections are not for concurrent use.
        self._limiter = anyio.CapacityLimiter(1)

    async def call(
        self, operation: str, run: Callable[[sqlite3.Connection], T], *, create: bool, default: T
    ) -> T:
        """`run(db)`, or `default` when the file does not exist and `create` is false."""

        def in_thread() -> T:
            with self._lock:
                db = self._connect(create)
                return default if db is None else run(db)

        try:
            return await anyio.to_thread.run_sync(in_thread, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            raise self.unavailable(
                f"{self.what} {operation}: SQLite file {self.path}: {exc}"
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


@asynccontextmanager
async def redis_guard(
    what: str, operation: str, unavailable: type[Exception]
) -> AsyncIterator[None]:
    """Bound a store's Redis call and turn its failures into `unavailable`."""
    try:
        with anyio.fail_after(REDIS_TIMEOUT_S):
            yield
    except TimeoutError as exc:
        raise unavailable(
            f"{what} {operation}: Redis did not answer within {REDIS_TIMEOUT_S:g} s"
        ) from exc
    except (RedisError, OSError) as exc:
        raise unavailable(f"{what} {operation}: Redis failed ({type(exc).__name__})") from exc


async def follow_channel(
    client: Redis,
    channel: str,
    on_change: Callable[[], None],
    what: str,
    *,
    rng: random.Random | None = None,
) -> None:
    """Call `on_change` for every message on `channel`; on any failure wait,
    resubscribe, and report a change (one may have been missed meanwhile).

    The wait is jittered (`router_core.backoff`): after a Redis restart the
    replicas resubscribe spread over the window, not all at the same instant."""
    retry = Retrying(RESUBSCRIBE_BACKOFF, rng or random.Random())
    while True:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                retry.succeeded()
                on_change()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        on_change()
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            wait = retry.failed()
            log.warning(
                f"{what} change feed lost; resubscribing",
                extra={"error": type(exc).__name__, "retry_in_s": round(wait, 3)},
            )
            await anyio.sleep(wait)


@runtime_checkable
class ChangeFeed(Protocol):
    async def listen(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever any replica changes something (and after a
        reconnection, when a change may have been missed); runs until cancelled."""
        ...


S = TypeVar("S")


class LiveView(Generic[S]):
    """The part the books share: `follow()` keeps the view current."""

    store: S
    refresh_s: float
    _wake: anyio.Event | None = None

    async def refresh(self) -> None:
        raise NotImplementedError

    async def follow(self) -> None:
        """Re-read the store on every change it reports and every `refresh_s`,
        until cancelled (started in the app's lifespan)."""
        async with anyio.create_task_group() as tg:
            wake = self._wake = anyio.Event()
            if isinstance(self.store, ChangeFeed):
                tg.start_soon(self.store.listen, self._changed)
            while True:
                with anyio.move_on_after(self.refresh_s):
                    await wake.wait()
                # A new event before reading, so a change reported meanwhile
                # is read on the next turn rather than lost.
                wake = self._wake = anyio.Event()
                await self.refresh()

    def _changed(self) -> None:
        if self._wake is not None:
            self._wake.set()
