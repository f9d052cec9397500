"""Closed-loop load against a real router, recording every request, for failure tests.

The clients use aiohttp: at 48 connections httpx's async pool added up to
~600 ms of its own queueing per request, which hides what the router does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import anyio
import attrs


@attrs.frozen
class Sent:
    started: float  # seconds since the load began
    ended: float
    status: int
    backend: str | None
    code: str | None
    retry_after: str | None

    @property
    def latency(self) -> float:
        return self.ended - self.started


@attrs.define
class Event:
    """Something to do `at` seconds into the load (in a worker thread: it may block)."""

    at: float
    action: Callable[[], Any]
    done_at: float | None = None


def run_load(
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    *,
    concurrency: int,
    duration: float,
    events: Sequence[Event] = (),
    timeout: float = 30.0,
) -> list[Sent]:
    """`concurrency` clients sending `body` back to back for `duration` seconds."""
    return anyio.run(_load, url, headers, body, concurrency, duration, events, timeout)


async def _load(
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    concurrency: int,
    duration: float,
    events: Sequence[Event],
    timeout: float,
) -> list[Sent]:
    results: list[Sent] = []
    begin = time.monotonic()

    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as client:

        async def worker() -> None:
            while (started := time.monotonic() - begin) < duration:
                try:
                    async with client.post(url, json=body, headers=headers) as response:
                        status = response.status
                        answer = await response.json(content_type=None)
                        backend = response.headers.get("x-router-backend")
                        retry_after = response.headers.get("retry-after")
                except (aiohttp.ClientError, TimeoutError):
                    results.append(Sent(started, time.monotonic() - begin, 0, None, None, None))
                    continue
                code = None
                if status != 200:
                    error = answer.get("error")
                    code = error.get("code") if isinstance(error, dict) else error
                ended = time.monotonic() - begin
                results.append(Sent(started, ended, status, backend, code, retry_after))

        async def scheduled(event: Event) -> None:
            await anyio.sleep(max(0.0, event.at - (time.monotonic() - begin)))
            await anyio.to_thread.run_sync(event.action)
            event.done_at = time.monotonic() - begin

        async with anyio.create_task_group() as tg:
            for event in events:
                tg.start_soon(scheduled, event)
            for _ in range(concurrency):
                tg.start_soon(worker)
    return results
