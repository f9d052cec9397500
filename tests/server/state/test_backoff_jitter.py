"""After a dependency goes away, replicas wait apart before trying again.

Two loops retry forever: the change feed of overrides and keys (Redis pub/sub)
and the Kafka exporter. Each replica builds them the default way, so each has
its own random generator; their waits must differ (full jitter), stay within
the capped exponential, and start again from the base after a success
(tests/core/routing/test_backoff.py proves the math). The dependency here is really
down: a loopback port nothing listens on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import orjson
from redis.asyncio import Redis

from router_core.accounting import frames
from router_core.config import KafkaSettings, SpoolSettings
from router_server.mock_backend import free_port
from router_server.state.redis import RESUBSCRIBE_BACKOFF, follow_channel
from router_server.usage.kafka_export import RETRY_BACKOFF, KafkaExporter
from router_server.usage.spool import Spool

RETRIES = 3
# Logged waits are rounded to the millisecond.
ROUNDING = 0.0005


class _Waits(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.waits: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        wait = getattr(record, "retry_in_s", None)
        if wait is not None:
            self.waits.append(wait)


@contextmanager
def logged_waits(logger: str) -> Iterator[list[float]]:
    """The `retry_in_s` of every record `logger` emits meanwhile."""
    handler = _Waits()
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield handler.waits
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


def retry_until(run: Callable[[], object], waits: list[float]) -> list[float]:
    """Run the loop `run` starts until it has waited RETRIES times."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)  # type: ignore[arg-type]
            with anyio.fail_after(20):
                while len(waits) < RETRIES:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    return waits[:RETRIES]


def within_the_backoff(waits: list[float], ceiling: Callable[[int], float]) -> bool:
    return all(0.0 <= w <= ceiling(n) + ROUNDING for n, w in enumerate(waits))


def feed_waits() -> list[float]:
    """One replica's change feed, following a Redis that is down."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)

    async def follow() -> None:
        try:
            await follow_channel(client, "router:test", lambda: None, "override")
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    with logged_waits("router.state") as waits:
        return retry_until(follow, waits)


def test_replicas_resubscribe_to_a_lost_change_feed_apart() -> None:
    first, second = feed_waits(), feed_waits()
    assert within_the_backoff(first, RESUBSCRIBE_BACKOFF.ceiling), first
    assert within_the_backoff(second, RESUBSCRIBE_BACKOFF.ceiling), second
    assert first != second, "both replicas would resubscribe at the same instants"


def export_waits(directory: Path) -> list[float]:
    """One replica's Kafka exporter, with a record to send and the broker down."""
    spool = Spool.open(directory, SpoolSettings(), ["kafka"])
    record = {"record_id": "rec-1", "organization": "acme"}
    spool.append(frames.FrameKind.USAGE, orjson.dumps(record), 0)
    exporter = KafkaExporter(
        KafkaSettings(request_timeout_ms=1000), f"127.0.0.1:{free_port()}", spool.readers["kafka"]
    )

    async def export() -> None:
        try:
            await exporter.run()
        finally:
            await exporter.aclose()

    try:
        with logged_waits("router.usage.kafka") as waits:
            return retry_until(export, waits)
    finally:
        spool.close()


def test_replicas_retry_a_failed_kafka_export_apart(tmp_path: Path) -> None:
    first, second = export_waits(tmp_path / "a"), export_waits(tmp_path / "b")
    assert within_the_backoff(first, RETRY_BACKOFF.ceiling), first
    assert within_the_backoff(second, RETRY_BACKOFF.ceiling), second
    assert first != second, "both replicas would retry the broker at the same instants"
