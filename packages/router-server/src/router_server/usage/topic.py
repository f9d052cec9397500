"""Read a usage topic back: every record from the beginning up to the current end.

Used by `router usage reconcile --topic` and by the tests. A consumer of
the topic in production does the same with a consumer group: read, dedupe
by `record_id`, process.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every record in `topic`, partition by partition, up to the end offsets seen at start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(timeout_s):
            await consumer.topics()  # fresh metadata
            partitions = consumer.partitions_for_topic(topic) or set()
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not assigned:
                return records
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            remaining = {tp for tp in assigned if ends[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in batches.items():
                    records.extend(orjson.loads(m.value) for m in messages if m.value)
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return records
