"""Export the spool to Kafka with aiokafka: acks=all, batched, keyed by organization.

Rules:
- The exporter is a reader of the spool: it sends a batch, waits for every
  record's acknowledgement, and only then moves its cursor. A batch that
  fails (broker down, timeout, unknown topic) is retried whole after a
  jittered backoff (`router_core.backoff`, so replicas do not all come back
  at the same instant after a broker restart), in order, forever: records
  wait in the spool, never dropped.
- Delivery is at least once: a batch that timed out may have been written,
  and is sent again. Every record carries its `record_id` (in the value and
  as a header) for consumers to dedupe by. The idempotent producer
  (`enable_idempotence`) removes the producer-retry duplicates where the
  broker supports it.
- The message key is the organization, so one organization's records stay
  in order on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import anyio
import attrs
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from router_core.accounting import frames
from router_core.backoff import Backoff, Retrying
from router_core.config import KafkaSettings
from router_server.usage.spool_reader import SpoolReader

log = logging.getLogger("router.usage.kafka")

_FAILURES = (KafkaError, OSError, TimeoutError)
_PARTITIONER = DefaultPartitioner()
# Waits between attempts at a failed batch: up to 0.2 s, doubling to 5 s.
RETRY_BACKOFF = Backoff(base_s=0.2, cap_s=5.0)


@attrs.define
class KafkaExporter:
    settings: KafkaSettings
    bootstrap: str
    reader: SpoolReader
    connected: bool = False
    sent: int = 0
    failures: int = 0
    last_error: str | None = None
    _producer: AIOKafkaProducer | None = None
    _last_logged: float = 0.0
    # Create the topics (if so configured) before the next send: at start, and
    # after a failure, since a restarted broker may have lost them.
    _ensure_topics: bool = True
    _retry: Retrying = attrs.field(factory=lambda: Retrying(RETRY_BACKOFF, random.Random()))

    def topic(self, kind: frames.FrameKind) -> str:
        s = self.settings
        return s.usage_topic if kind is frames.FrameKind.USAGE else s.audit_topic

    async def run(self) -> None:
        while True:
            batch = await self.reader.read(self.settings.batch_records)
            try:
                with anyio.fail_after(self.settings.request_timeout_ms / 1000 * 2 + 5):
                    await self._send(batch)
            except _FAILURES as exc:
                await anyio.sleep(self._failed(exc))
                continue
            self._retry.succeeded()
            self.connected = True
            self.sent += len(batch)
            self.reader.ack()
            # Let records gather for the next batch (see usage.ledger.feed).
            await anyio.sleep(self.settings.linger_ms / 1000)

    async def _send(self, batch: list[frames.Frame]) -> None:
        producer = await self._started()
        if self._ensure_topics and self.settings.create_topics:
            await self._create_topics()
        self._ensure_topics = False
        # Records go in aiokafka batches of our own, one open per partition:
        # `send` per record costs several times as much (a coroutine, a
        # future and the accumulator's bookkeeping each), on every request.
        # The partition is the one `send` would pick for the key (the default
        # partitioner over the topic's partitions, by ID).
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        delivered: list[asyncio.Future[Any]] = []
        for frame in batch:
            record = orjson.loads(frame.payload)
            topic = self.topic(frame.kind)
            key = (record.get("organization") or "").encode()
            headers = [("record_id", record["record_id"].encode())]
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = _PARTITIONER(key, partitions[topic], partitions[topic])
            where = (topic, partition)
            builder = open_batches.get(where)
            if builder is not None and _append(builder, key, frame.payload, headers):
                continue
            if builder is not None:  # full: send it, start the next
                delivered.append(await producer.send_batch(builder, topic, partition=partition))
            builder = open_batches[where] = producer.create_batch()
            if not _append(builder, key, frame.payload, headers):
                # Larger than a batch holds: sent alone, as `send` sends it.
                del open_batches[where]
                delivered.append(
                    await producer.send(
                        topic, value=frame.payload, key=key, partition=partition, headers=headers
                    )
                )
        for (topic, partition), builder in open_batches.items():
            delivered.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*delivered)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=s.client_id,
            acks="all",
            enable_idempotence=s.enable_idempotence,
            linger_ms=s.linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=s.request_timeout_ms,
            retry_backoff_ms=200,
        )
        try:
            await producer.start()
        except BaseException:
            with anyio.move_on_after(2, shield=True):
                await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _create_topics(self) -> None:
        s = self.settings
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=s.request_timeout_ms
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, s.partitions, s.replication_factor)
                for name in (s.usage_topic, s.audit_topic)
                if name not in existing
            ]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
        finally:
            await admin.close()

    def _failed(self, exc: BaseException) -> float:
        """Note a failed batch; the seconds to wait before sending it again."""
        self.failures += 1
        self.connected = False
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        wait = self._retry.failed()
        extra = {"error": self.last_error, "failures": self.failures, "retry_in_s": round(wait, 3)}
        now = time.monotonic()
        if now - self._last_logged >= 10:
            self._last_logged = now
            log.warning("kafka export failing; records wait in the spool", extra=extra)
        else:
            log.debug("kafka export retrying", extra=extra)
        self._ensure_topics = True
        return wait

    async def aclose(self) -> None:
        if self._producer is not None:
            with anyio.move_on_after(5, shield=True):
                await self._producer.stop()
            self._producer = None

    def status(self, now_us: int) -> dict[str, Any]:
        oldest = self.reader.oldest_unacked_us()
        return {
            "connected": self.connected,
            "lag_s": 0.0 if oldest is None else round(max(0, now_us - oldest) / 1e6, 3),
            "pending_records": self.reader.pending,
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
        }


def _append(
    builder: BatchBuilder, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> bool:
    """Whether `builder` took the record (False: it is full)."""
    return builder.append(timestamp=None, key=key, value=value, headers=headers) is not None
