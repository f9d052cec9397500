"""The idempotency matrix across two router replicas sharing Redis.

Sequential retry on the other replica: the stored answer, no backend call,
no second charge. Concurrent duplicate: exactly one is served, the other
gets 409. Same key, different body: 422.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import auth, eventually, with_changes
from tests.helpers.usage_support import ledger_rows

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT_PATH = "/v1/chat/completions"


def backend_hits(mocks: Mocks) -> int:
    return sum(m.stats()["by_path"].get(CHAT_PATH, 0) for m in mocks)


def replicas(
    start_router: Any, config_data: dict[str, Any], redis_url: str, tmp_path: Path
) -> list[RouterProcess]:
    data = with_changes(
        config_data,
        prices={"chat": {"input": 1, "output": 1}},
        # Probes only at start: a probe meeting the errors a test injects would
        # open the circuits, and a failed request would be 503, not 502.
        health={"probe_interval_s": 600},
    )
    routers = []
    for i in range(2):
        directory = {"state": {"store": "redis", "dir": str(tmp_path / f"replica-{i}")}}
        routers.append(
            start_router(with_changes(data, **directory), {"ROUTER_REDIS_URL": redis_url})
        )
    return routers


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": content}], **extra}


def records(tmp_path: Path, key: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [
            r
            for i in range(2)
            for r in ledger_rows(tmp_path / f"replica-{i}")
            if r["client_request_id"] == key
        ]

    eventually(lambda: len(found()) >= count)
    return found()


def test_sequential_retry_on_the_other_replica_replays_without_charge(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    first, second = replicas(start_router, config_data, redis_url, tmp_path)
    request_id = str(uuid.uuid4())
    body = {"request_id": request_id, "model": "chat", "payload": {"messages": chat()["messages"]}}
    original = httpx.post(first.url + "/v1/inference", json=body, headers=auth(), timeout=10)
    assert original.status_code == 200
    hits = backend_hits(mocks)
    retry = httpx.post(second.url + "/v1/inference", json=body, headers=auth(), timeout=10)
    assert retry.status_code == 200
    assert retry.json() == original.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["x-router-backend"] == original.headers["x-router-backend"]
    assert backend_hits(mocks) == hits
    found = records(tmp_path, request_id, 2)
    charged = [r for r in found if r["outcome"] == "success"]
    replayed = [r for r in found if r["outcome"] == "replayed"]
    assert len(charged) == len(replayed) == 1
    assert charged[0]["usage"]["total_tokens"] > 0
    assert float(charged[0]["cost_usd"]) > 0
    assert replayed[0]["usage"]["total_tokens"] == 0
    assert replayed[0]["cost_usd"] == "0.000000000"


def test_streams_replay_their_events(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    first, second = replicas(start_router, config_data, redis_url, tmp_path)
    headers = {**auth(), "idempotency-key": "stream-" + uuid.uuid4().hex}
    body = chat(stream=True, max_tokens=5)
    original = httpx.post(first.url + CHAT_PATH, json=body, headers=headers, timeout=10)
    hits = backend_hits(mocks)
    retry = httpx.post(second.url + CHAT_PATH, json=body, headers=headers, timeout=10)
    assert original.status_code == retry.status_code == 200
    assert retry.headers["content-type"].startswith("text/event-stream")
    assert retry.text == original.text
    assert retry.text.rstrip().endswith("data: [DONE]")
    assert backend_hits(mocks) == hits


def test_concurrent_duplicates_one_served_one_409(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    first, second = replicas(start_router, config_data, redis_url, tmp_path)
    for mock in mocks:
        mock.configure(latency_ms=1000)
    key = "dup-" + uuid.uuid4().hex
    headers = {**auth(), "idempotency-key": key}

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            urls = [r.url + CHAT_PATH for r in (first, second)]
            calls = [client.post(url, json=chat(), headers=headers) for url in urls]
            return list(await asyncio.gather(*calls))

    hits = backend_hits(mocks)
    answers = asyncio.run(both())
    assert sorted(a.status_code for a in answers) == [200, 409]
    conflict = next(a for a in answers if a.status_code == 409)
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert conflict.headers["retry-after"] == "1"
    assert backend_hits(mocks) == hits + 1
    found = records(tmp_path, key, 2)
    assert sorted(r["outcome"] for r in found) == ["denied", "success"]
    assert [r["reason"] for r in found if r["outcome"] == "denied"] == ["idempotency_conflict"]
    # Once the first is answered, a retry of it replays.
    for mock in mocks:
        mock.configure(latency_ms=0)
    again = httpx.post(second.url + CHAT_PATH, json=chat(), headers=headers, timeout=10)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert backend_hits(mocks) == hits + 1


def test_same_key_different_body_is_422_on_either_replica(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    first, second = replicas(start_router, config_data, redis_url, tmp_path)
    headers = {**auth(), "idempotency-key": "reuse-" + uuid.uuid4().hex}
    assert httpx.post(first.url + CHAT_PATH, json=chat("a"), headers=headers).status_code == 200
    hits = backend_hits(mocks)
    for router in (first, second):
        reused = httpx.post(router.url + CHAT_PATH, json=chat("b"), headers=headers)
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert backend_hits(mocks) == hits


def test_failures_release_the_key_so_a_retry_is_served(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    first, second = replicas(start_router, config_data, redis_url, tmp_path)
    headers = {**auth(), "idempotency-key": "fail-" + uuid.uuid4().hex}
    for mock in mocks:
        mock.configure(error_rate=1.0)
    failed = httpx.post(first.url + CHAT_PATH, json=chat(), headers=headers)
    assert failed.status_code == 502, failed.text
    for mock in mocks:
        mock.configure(error_rate=0.0)
    retry = httpx.post(second.url + CHAT_PATH, json=chat(), headers=headers)
    assert retry.status_code == 200
    assert "idempotent-replayed" not in retry.headers


def test_a_replay_wins_over_the_quota_and_neither_it_nor_a_conflict_is_charged(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_url: str, tmp_path: Path
) -> None:
    """The claim and the limits are asked at once; the claim's outcome decides
    as if asked first: a replay is answered (not charged) even past the quota,
    and a 409 gives back the admission taken alongside it."""
    data = with_changes(config_data)
    data["organizations"]["acme"]["limits"] = {"quotas": {"requests_per_day": 3}}
    first, second = replicas(start_router, data, redis_url, tmp_path)
    keyed = {**auth(), "idempotency-key": "quota-" + uuid.uuid4().hex}

    def post(router: RouterProcess, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(router.url + CHAT_PATH, json=chat(), headers=headers, timeout=10)

    assert post(first, keyed).status_code == 200  # 1 of 3
    retry = post(second, keyed)
    assert retry.headers.get("idempotent-replayed") == "true"  # not charged

    # A duplicate while the original is in flight: 409, its admission given back.
    for mock in mocks:
        mock.configure(latency_ms=1000)
    slow = {**auth(), "idempotency-key": "slow-" + uuid.uuid4().hex}

    async def duplicates() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            urls = [r.url + CHAT_PATH for r in (first, second)]
            return list(
                await asyncio.gather(*(client.post(u, json=chat(), headers=slow) for u in urls))
            )

    assert sorted(a.status_code for a in asyncio.run(duplicates())) == [200, 409]  # 2 of 3
    for mock in mocks:
        mock.configure(latency_ms=0)
    assert post(first, auth()).status_code == 200  # 3 of 3: neither the replay nor the 409 counted
    over = post(second, auth())
    assert over.status_code == 402, over.text
    assert over.json()["error"]["code"] == "quota_exceeded"
    # Past the quota, a retry of an answered request still gets its answer.
    again = post(second, keyed)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
