"""The router SIGKILLed mid-load, a torn spool record, and a full spool: observed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router_core.accounting.frames import FrameKind, encode
from router_server.process import RouterProcess

from tests.helpers.kafka_broker import KafkaBroker
from tests.helpers.support import auth, eventually, with_changes
from tests.helpers.usage_support import (
    Load,
    data_dir,
    ledger_rows,
    new_topic,
    topic_records,
    usage_config,
)

BOOTSTRAP_ENV = "ROUTER_TEST_KAFKA_BOOTSTRAP"
Mocks = Any


def usage_status(router: RouterProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(router.url + "/v1/status", timeout=5).json()["usage"]
    return status


def inference(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model": "chat",
        "payload": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    }


def test_sigkill_mid_load_then_restart_delivers_every_answered_record(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    directory = tmp_path / "u"
    topic = new_topic()
    # fsync "never": a process crash must not lose what was written before the answer.
    data = with_changes(
        config_data,
        state=data_dir(directory),
        usage=usage_config(BOOTSTRAP_ENV, topic, fsync="never"),
    )
    router: RouterProcess = start_router(data, {BOOTSTRAP_ENV: kafka_bootstrap})
    load = Load(router.url, concurrency=32).start()
    assert eventually(lambda: len(load.answered) > 2000, timeout=30)
    router.kill()
    load.stop()
    answered = set(load.answered)
    assert load.statuses.get(0, 0) > 0  # requests were in flight when it died
    # A write cut short by the crash: half a record at the end of the spool.
    segment = max((directory / "spool").glob("*.spool"))
    torn_id = str(uuid.uuid4())
    frame = encode(FrameKind.USAGE, orjson.dumps({"record_id": torn_id}), 0)
    with segment.open("ab") as file:
        file.write(frame[: len(frame) // 2])

    router.start()
    assert eventually(lambda: usage_status(router)["kafka"]["pending_records"] == 0, timeout=30)
    status = usage_status(router)
    assert status["spool"]["torn_records"] == 1
    records = topic_records(kafka_bootstrap, topic)
    delivered = {r["client_request_id"] for r in records}
    assert answered <= delivered
    # Requests killed in flight may have records (written before the answer), never others.
    assert delivered <= set(load.sent_ids)
    assert torn_id not in str(records)
    assert (directory / "spool" / "quarantine").is_dir()
    log = (tmp_path / "router-0.log").read_text()
    assert "damaged record not delivered" in log
    # The ledger recovered the same records from the spool.
    assert eventually(lambda: answered <= {r["client_request_id"] for r in ledger_rows(directory)})
    print(
        f"\nSIGKILL: {len(answered)} answered, {load.statuses.get(0, 0)} cut off in flight; "
        f"{len(delivered)} delivered after restart, torn records {status['spool']['torn_records']}"
    )


def test_full_spool_refuses_new_requests_and_recovers(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, kafka_broker: KafkaBroker,
    kafka_bootstrap: str, tmp_path: Path,
) -> None:  # fmt: skip
    if not kafka_broker.controllable:
        pytest.skip("KAFKA_BOOTSTRAP points at a shared cluster: it cannot be stopped")
    directory = tmp_path / "u"
    topic = new_topic()
    data = with_changes(
        config_data,
        state=data_dir(directory),
        usage=usage_config(BOOTSTRAP_ENV, topic, max_bytes=65_536, warn_ratio=0.5),
    )
    kafka_broker.stop()
    router: RouterProcess = start_router(data, {BOOTSTRAP_ENV: kafka_bootstrap})
    answered: list[str] = []
    refused = None
    with httpx.Client(base_url=router.url, headers=auth(), timeout=10) as client:
        for _ in range(1000):
            request_id = str(uuid.uuid4())
            response = client.post("/v1/inference", json=inference(request_id))
            if response.status_code != 200:
                refused = response
                break
            answered.append(request_id)
        assert refused is not None
        assert refused.status_code == 503
        assert refused.json()["code"] == "USAGE_SPOOL_FULL"
        assert refused.headers["retry-after"] == "5"
        status = usage_status(router)
        assert status["spool"]["accepting"] is False
        assert status["spool"]["refused_requests"] == 1
        assert status["spool"]["fill_ratio"] >= 1
        log = [orjson.loads(line) for line in (tmp_path / "router-0.log").read_bytes().splitlines()]
        warnings = [e for e in log if e["msg"].startswith("usage spool filling up")]
        assert warnings[0]["level"] == "warning"
        assert 0.5 <= warnings[0]["fill_ratio"] < 0.7
        assert warnings[-1]["level"] == "error"

        kafka_broker.start()
        assert eventually(lambda: usage_status(router)["spool"]["accepting"], timeout=30)
        request_id = str(uuid.uuid4())
        assert client.post("/v1/inference", json=inference(request_id)).status_code == 200
        answered.append(request_id)
    assert eventually(lambda: usage_status(router)["kafka"]["pending_records"] == 0, timeout=30)
    delivered = {r["client_request_id"] for r in topic_records(kafka_bootstrap, topic)}
    assert delivered == set(answered)
