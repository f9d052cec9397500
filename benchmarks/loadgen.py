"""A small, fast HTTP/1.1 load generator: closed loop or open loop, one process.

Rules:
- Requests are pre-built bytes sent over keep-alive connections; responses are
  parsed by httptools (C), so per-request cost stays far below the router's.
- Closed loop: `concurrency` connections each send their next request as soon
  as the previous answer is complete. Latency is measured from the send.
- Open loop: requests are scheduled by the clock at `rate` per second, whether
  or not earlier ones have been answered (a busy connection is never waited
  for: another is opened). Latency is measured from the *scheduled* send time,
  so a stalled server cannot hide its queueing delay (coordinated omission).
- Only requests sent after the warm-up count; an answer that is not 2xx, a
  broken connection or a timeout counts as an error. An answer with
  `Connection: close` is honoured: the next request opens a new connection.

Run as `python loadgen.py SPEC_JSON`; prints one JSON `Result` on stdout.
`bench.py` runs it as a separate process so it gets its own core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


@dataclass(frozen=True)
class Spec:
    url: str
    body: str
    headers: dict[str, str]
    duration_s: float
    warmup_s: float
    concurrency: int = 1  # closed loop: connections; open loop: connections opened up front
    rate: float | None = None  # requests/s: open loop; None: closed loop
    timeout_s: float = 10.0
    # Each request with an Idempotency-Key of its own (the router stores every answer).
    idempotency_keys: bool = False


@dataclass(frozen=True)
class Result:
    requests: int  # completed inside the measured window, errors included
    errors: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connections: int  # opened in total (the open loop opens more when all are busy)


def percentile(ordered: array[float] | list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def build_request(spec: Spec) -> tuple[str, int, bytes]:
    return request_bytes(spec.url, spec.body, spec.headers)


def request_bytes(url: str, body: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """Host, port and the whole POST request to send to `url`."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    encoded = body.encode()
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Length: {len(encoded)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded


class Payloads:
    """A request's bytes, each with an `Idempotency-Key` of its own when `keyed`.

    The key is this run's random prefix and a counter, so no two requests of
    any run share one (the router would replay the first one's answer).
    """

    def __init__(self, payload: bytes, keyed: bool) -> None:
        self.payload = payload
        self.keyed = keyed
        self.head, _, self.body = payload.partition(b"\r\n\r\n")
        self.prefix = b"\r\nIdempotency-Key: bench-" + os.urandom(6).hex().encode() + b"-"
        self.count = 0

    def next(self) -> bytes:
        if not self.keyed:
            return self.payload
        self.count += 1
        return b"%s%s%d\r\n\r\n%s" % (self.head, self.prefix, self.count, self.body)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive() and self.transport is not None:
            # `Connection: close` (hypercorn sends it after keep_alive_max_requests,
            # 1000 by default): the answer counts, the next request gets a new
            # connection, as wrk does; reusing this one would fail it.
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, payload: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        assert self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Recorder:
    """Latencies and errors of the requests sent inside the measured window."""

    def __init__(self, window_start: float) -> None:
        self.window_start = window_start
        self.latencies: array[float] = array("d")
        self.errors = 0
        self.connections = 0

    def record(self, sent: float, ok: bool) -> None:
        if sent >= self.window_start:
            self.latencies.append(time.perf_counter() - sent)
            self.errors += not ok

    def result(self, duration_s: float) -> Result:
        ordered = array("d", sorted(self.latencies))
        ms = 1000.0
        return Result(
            requests=len(ordered),
            errors=self.errors,
            duration_s=round(duration_s, 3),
            rps=round(len(ordered) / duration_s, 1) if duration_s > 0 else 0.0,
            p50_ms=round(percentile(ordered, 50) * ms, 3),
            p90_ms=round(percentile(ordered, 90) * ms, 3),
            p99_ms=round(percentile(ordered, 99) * ms, 3),
            max_ms=round((ordered[-1] if ordered else 0.0) * ms, 3),
            connections=self.connections,
        )


async def _connect(host: str, port: int, recorder: Recorder) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    recorder.connections += 1
    return protocol


async def _exchange(conn: Connection, payload: bytes, timeout_s: float) -> bool:
    """Send one request; whether it was answered 2xx in time."""
    try:
        status = await asyncio.wait_for(conn.send(payload), timeout_s)
    except (TimeoutError, ConnectionError):
        conn.close()
        return False
    return 200 <= status < 300


async def closed_loop(spec: Spec) -> Result:
    host, port, payload = build_request(spec)
    payloads = Payloads(payload, spec.idempotency_keys)
    begin = time.perf_counter()
    window_start = begin + spec.warmup_s
    stop_at = window_start + spec.duration_s
    recorder = Recorder(window_start)

    async def worker() -> None:
        conn: Connection | None = None
        while time.perf_counter() < stop_at:
            if conn is None or not conn.usable:
                try:
                    conn = await _connect(host, port, recorder)
                except OSError:
                    recorder.record(time.perf_counter(), ok=False)
                    await asyncio.sleep(0.01)
                    continue
            sent = time.perf_counter()
            ok = await _exchange(conn, payloads.next(), spec.timeout_s)
            if time.perf_counter() <= stop_at:
                recorder.record(sent, ok)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return recorder.result(min(time.perf_counter(), stop_at) - window_start)


async def open_loop(spec: Spec, rate: float) -> Result:
    host, port, payload = build_request(spec)
    payloads = Payloads(payload, spec.idempotency_keys)
    recorder = Recorder(0.0)
    idle: deque[Connection] = deque()
    for _ in range(spec.concurrency):
        idle.append(await _connect(host, port, recorder))
    pending: set[asyncio.Task[None]] = set()
    begin = time.perf_counter() + 0.01
    recorder.window_start = begin + spec.warmup_s
    total = int((spec.warmup_s + spec.duration_s) * rate)

    async def one(due: float) -> None:
        conn = idle.pop() if idle else None
        try:
            if conn is None or not conn.usable:
                conn = await _connect(host, port, recorder)
        except OSError:
            recorder.record(due, ok=False)
            return
        ok = await _exchange(conn, payloads.next(), spec.timeout_s)
        recorder.record(due, ok)
        if conn.usable:
            idle.append(conn)

    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=spec.timeout_s + 1)
    for conn in idle:
        conn.close()
    # The window is the scheduled span: throughput is the offered rate unless requests failed.
    return recorder.result(spec.duration_s)


async def run(spec: Spec) -> Result:
    if spec.rate is None:
        return await closed_loop(spec)
    return await open_loop(spec, spec.rate)


def spec_from_json(text: str) -> Spec:
    raw: dict[str, Any] = json.loads(text)
    return Spec(**raw)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: loadgen.py SPEC_JSON", file=sys.stderr)
        return 2
    spec = spec_from_json(argv[1])
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    result: Result = runner(run(spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
