"""Overload over real HTTP, against a router process and the mock backends: one
organization's flood leaves another's requests served, key priority orders the
queue, and a router whose event loop is stalled refuses at once with 503
`overloaded` (and says so in /v1/status and /metrics).

Every assertion is on answers and counters, reached by waiting for states the
router reports, never on how long anything took.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import pytest

from router_core import keys

from tests.helpers.in_process_backend import Backend
from tests.helpers.loop_stall import LoopStall
from tests.helpers.router_fixture import RouterFactory
from tests.helpers.support import ACME_KEY, GLOBEX_KEY, auth, base_config, eventually

CHAT_PATH = "/v1/chat/completions"

LOW_KEY = keys.format_key("acmelow1", "L" * 32)
HIGH_KEY = keys.format_key("acmehigh1", "H" * 32)

Answer = tuple[int, str | None, str | None, str | None]  # status, code, reason, retry-after


def overload_config(mocks: tuple[Backend, Backend], **server: Any) -> dict[str, Any]:
    """`a-only` on mock A (the one the tests hang), `b-only` on mock B."""
    config = base_config(mocks[0].url, mocks[1].url)
    config["server"] = {**config["server"], **server}
    # No periodic probe: a hung mock A must not be taken out while the test holds
    # its requests there; and A's requests wait there as long as the test needs.
    config["health"] = {"probe_interval_s": 3600, "probe_timeout_s": 5}
    config["backends"]["mock-a"]["read_timeout_s"] = 120
    config["models"]["a-only"] = {"backends": [{"backend": "mock-a", "model": "mock-gpt"}]}
    config["organizations"]["globex"]["models"] = ["b-only"]
    config["organizations"]["acme"]["keys"] += [
        {"id": "acmelow1", "hash": keys.hash_key(LOW_KEY), "priority": "low"},
        {"id": "acmehigh1", "hash": keys.hash_key(HIGH_KEY), "priority": "high"},
    ]
    return config


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def post(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    model: str,
    into: list[Answer],
    headers: dict[str, str] | None = None,
) -> None:
    async with session.post(
        url + CHAT_PATH, json=chat(model), headers={**auth(key), **(headers or {})}
    ) as response:
        body = await response.json(content_type=None)
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        reason = error.get("reason") if isinstance(error, dict) else None
        into.append((response.status, code, reason, response.headers.get("retry-after")))


async def status_until(
    session: aiohttp.ClientSession, url: str, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the router's backpressure status until `holds` (a generous bound: the
    router is expected to get there, and the bound only ends a broken run)."""
    with anyio.fail_after(60):
        while True:
            async with session.get(url + "/v1/status") as response:
                backpressure: dict[str, Any] = (await response.json())["backpressure"]
            if holds(backpressure):
                return backpressure
            await anyio.sleep(0.02)


def session() -> aiohttp.ClientSession:
    # No connection cap: every request has its own connection, all open at once.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    )


def test_a_flood_from_one_organization_does_not_starve_another(
    mocks: tuple[Backend, Backend], start_router: RouterFactory
) -> None:
    """Acme opens 24 connections at once on a router with 4 slots and 8 queue places;
    its requests hang at the backend. Globex then sends 3: they take queue places
    from acme's newest waiters, acme's next request is shed at once, and when slots
    free globex is served before acme's remaining waiters. Lag shedding is off: the
    subject is the fair shares, not how busy this machine is."""
    mock_a = mocks[0]
    router = start_router(
        overload_config(
            mocks, max_in_flight=4, max_queued=8, queue_timeout_ms=60_000,
            admission={"max_loop_lag_ms": None},
        )
    )  # fmt: skip
    mock_a.configure(hang=True)
    acme: list[Answer] = []
    globex: list[Answer] = []

    async def flood(s: aiohttp.ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(24):
                tg.start_soon(post, s, router.url, ACME_KEY, "a-only", acme)
            await status_until(s, router.url, lambda b: b["in_flight"] == 4 and b["queued"] == 8)
            assert len(acme) == 12  # shed at once: the queue was full
            for _ in range(3):
                tg.start_soon(post, s, router.url, GLOBEX_KEY, "b-only", globex)
            await status_until(
                s, router.url, lambda b: b["organizations"].get("globex", {}).get("queued") == 3
            )
            extra: list[Answer] = []
            await post(s, router.url, ACME_KEY, "a-only", extra)  # acme holds its share
            assert extra == [(503, "overloaded", "fair_share", "60")]
            await anyio.to_thread.run_sync(mock_a.kill)  # acme's held requests fail

    async def main() -> dict[str, Any]:
        async with session() as s:
            await flood(s)
            return await status_until(s, router.url, lambda b: b["in_flight"] == 0)

    status = anyio.run(main)
    assert globex == [(200, None, None, None)] * 3
    shed = [a for a in acme if a[0] == 503 and a[1] == "overloaded"]
    assert sorted(a[2] or "" for a in shed) == ["fair_share"] * 3 + ["queue_full"] * 12
    assert all(a[3] for a in shed)  # each with Retry-After
    # The rest reached the backend that was killed under them: never a 200 here.
    assert all(a[1] != "overloaded" and a[0] != 200 for a in acme if a not in shed)
    assert status["shed_by_reason"]["queue_full"] == 12
    assert status["shed_by_reason"]["fair_share"] == 4
    assert status["organizations"]["acme"]["shed"] == 16
    assert status["organizations"].get("globex", {}).get("shed", 0) == 0


def test_a_high_priority_key_is_served_before_a_low_one_of_its_organization(
    mocks: tuple[Backend, Backend], start_router: RouterFactory, tmp_path: Path
) -> None:
    """One slot, held by a request hung at mock A; two low-priority and then two
    high-priority requests queue behind it. When the slot frees, the router serves
    them high first (its access log, written while each still holds the slot, says
    in which order)."""
    mock_a = mocks[0]
    router = start_router(
        overload_config(
            mocks, max_in_flight=1, max_queued=8, queue_timeout_ms=60_000,
            admission={"max_loop_lag_ms": None},
        )
    )  # fmt: skip
    mock_a.configure(hang=True)
    answers: list[Answer] = []

    async def main() -> None:
        async with session() as s, anyio.create_task_group() as tg:
            tg.start_soon(post, s, router.url, ACME_KEY, "a-only", answers)
            await status_until(s, router.url, lambda b: b["in_flight"] == 1)
            for i, key in enumerate([LOW_KEY, LOW_KEY, HIGH_KEY, HIGH_KEY]):
                tg.start_soon(post, s, router.url, key, "b-only", answers)
                await status_until(s, router.url, queued(i + 1))
            await anyio.to_thread.run_sync(mock_a.kill)

    anyio.run(main)
    assert sorted(a[0] for a in answers)[:4] == [200] * 4
    served = [
        line["key_id"]
        for line in access_lines(tmp_path / "router-0.log")
        if line.get("model") == "b-only"
    ]
    assert served == ["acmehigh1", "acmehigh1", "acmelow1", "acmelow1"]


def queued(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda backpressure: bool(backpressure["queued"] == n)


def access_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("logger") == "router.access" and line.get("msg") == "request":
            lines.append(line)
    return lines


async def held_busy(
    s: aiohttp.ClientSession, tg: anyio.abc.TaskGroup, url: str, n: int, into: list[Answer]
) -> None:
    """`n` requests held in flight at mock A (hung), as a busy router has them."""
    for _ in range(n):
        tg.start_soon(post, s, url, ACME_KEY, "a-only", into)
    await status_until(s, url, lambda b: b["in_flight"] == n)


async def send_all(
    url: str, body: dict[str, Any], headers: list[dict[str, str]]
) -> list[httpx.Response]:
    """One request per headers, all at once, each on its own connection."""
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        answers: list[httpx.Response] = []

        async def one(h: dict[str, str]) -> None:
            answers.append(await client.post(url + CHAT_PATH, json=body, headers=h))

        async with anyio.create_task_group() as tg:
            for h in headers:
                tg.start_soon(one, h)
        return answers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_stalled_event_loop_refuses_new_requests_as_overloaded(
    mocks: tuple[Backend, Backend], start_router: RouterFactory, stream: bool
) -> None:
    """A busy router (16 requests in flight, the default `min_in_flight`) whose
    loop is stalled again and again (SIGSTOP/SIGCONT): 20 more requests sent at
    once, with idempotency keys, all get 503 `overloaded` for `loop_lag`, with
    Retry-After. Once the loop runs freely again the same requests are served
    fresh (no claim of theirs was ever taken)."""
    mock_a = mocks[0]
    router = start_router(overload_config(mocks))
    mock_a.configure(hang=True)
    body = {**chat("b-only"), "stream": stream}
    headers = [{**auth(), "idempotency-key": f"stalled-{stream}-{i}"} for i in range(20)]
    assert router.pid is not None
    stall = LoopStall(router.pid)
    held: list[Answer] = []

    async def stalled() -> list[httpx.Response]:
        async with session() as s:
            async with anyio.create_task_group() as tg:
                await held_busy(s, tg, router.url, 16, held)
                await anyio.to_thread.run_sync(stall.__enter__)
                try:
                    refused = await send_all(router.url, body, headers)
                finally:
                    await anyio.to_thread.run_sync(stall.__exit__, None, None, None)
                await anyio.to_thread.run_sync(mock_a.kill)  # the held requests end
            await status_until(s, router.url, lambda b: b["in_flight"] == 0)
        return refused

    refused = anyio.run(stalled)
    assert [r.status_code for r in refused] == [503] * 20
    assert {(r.json()["error"]["code"], r.json()["error"]["reason"]) for r in refused} == {
        ("overloaded", "loop_lag")
    }
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)

    def calm() -> bool:
        lag = httpx.get(router.url + "/v1/status").json()["backpressure"]["loop_lag_ms"]
        return bool(lag < 100)

    assert eventually(calm, timeout=30)
    status = httpx.get(router.url + "/v1/status").json()["backpressure"]
    assert status["shed_by_reason"]["loop_lag"] == 20
    metrics = httpx.get(router.url + "/metrics").text
    assert 'router_shed_requests_total{reason="loop_lag"} 20.0' in metrics
    assert "router_event_loop_lag_seconds " in metrics
    assert "router_concurrency_limit 1024.0" in metrics
    served = anyio.run(send_all, router.url, body, headers)
    assert [r.status_code for r in served] == [200] * 20
    assert not [r for r in served if "idempotent-replayed" in r.headers]
