"""Load generator of the paced-streaming scenario: N streamed chats open at once.

Rules:
- All N keep-alive connections are opened before the load starts (N really
  open at once); their first requests are spread over the first half of the
  warm-up, so the measured window sees a steady state, not the first wave.
- Closed loop per connection: as soon as a stream ends, the next request goes
  out on the same connection (a new one if the server closed it).
- Each request may carry its own `Idempotency-Key` (`idempotency_keys`), as
  a client that retries safely sends, so the router claims and stores one
  per request.
- Measured per request sent inside the window: time to first token (the
  send to the first event carrying non-empty `content`), every gap between
  consecutive events of the stream (events that arrive in one read have a
  gap of 0: that is what the client sees), the answer's status and, when not
  200, its problem code (parsed from the error body), and the latency of
  refusals (the send to the end of a non-200 answer). A 200 stream with an
  SSE error event is counted by that event's code; one that ends without
  `[DONE]` as truncated.
- Events per second counts the events received inside the window, whatever
  request they belong to.

Run as `python streamgen.py SPEC_JSON`; prints one JSON `StreamResult` on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
from loadgen import Payloads, percentile, request_bytes

DONE = b"data: [DONE]"
ERROR_EVENT = b'data: {"error"'
CONTENT = b'"content":"'
EMPTY_CONTENT = b'"content":""'
# Kept of a refusal's body, to read its problem code.
MAX_ERROR_BODY = 65_536
# The longest server-directed pause honoured (the openai SDK's bound).
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class StreamSpec:
    url: str
    body: str
    headers: dict[str, str]
    concurrency: int
    duration_s: float
    warmup_s: float
    idempotency_keys: bool = False
    timeout_s: float = 60.0  # one whole stream
    # After an answer that is not 200, the connection waits as the openai SDK
    # does: the answer's `retry-after-ms`, else its `retry-after` (seconds),
    # when one is there and at most MAX_RETRY_AFTER_S; else this long (a closed
    # loop would otherwise retry refusals in a hot loop).
    refusal_pause_s: float = 0.1
    # A process (the router) whose CPU time is read at the window's start and end.
    watch_pid: int | None = None


@dataclass(frozen=True)
class StreamResult:
    concurrency: int
    connected: int  # connections open at once when the load started
    reconnects: int  # opened later (the server closed one)
    duration_s: float
    requests: int  # sent inside the window and finished, whatever the answer
    answers: dict[str, int]  # "200", "503 limits_unavailable", "200 stream error X", ...
    events: int  # SSE events received inside the window
    events_per_s: float
    ttft_ms: dict[str, float]  # 200 streams: count, p50, p90, p99, max
    gap_ms: dict[str, float]  # between consecutive events of a 200 stream
    refusal_ms: dict[str, float]  # non-200 answers: the send to the answer's end
    cpu_percent: float  # of this process, over the whole run
    # Of `watch_pid`, of one core, over the window; None without watch_pid.
    watched_cpu_percent: float | None
    # Busy share of each core of the machine over the window (whoever used it).
    core_busy_percent: list[float] | None


def summary(values: array[float]) -> dict[str, float]:
    ordered = sorted(values)
    ms = 1000.0
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50) * ms, 3),
        "p90": round(percentile(ordered, 90) * ms, 3),
        "p99": round(percentile(ordered, 99) * ms, 3),
        "max": round((ordered[-1] if ordered else 0.0) * ms, 3),
    }


def problem_code(status: int, body: bytes) -> str:
    """`STATUS CODE` of an error answer, in whichever envelope the router spoke."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"{status} (unparsed body)"
    code: object = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):  # OpenAI: {"error": {"code": ...}}
            code = error.get("code")
        if code is None:  # the seed envelope: {"error": "...", "code": ...}
            code = parsed.get("code")
        if code is None and isinstance(parsed.get("type"), str):  # RFC 9457
            code = str(parsed["type"]).rpartition(":")[2]
    return f"{status} {code}" if code is not None else f"{status} (no code)"


@dataclass
class Recorder:
    window_start: float
    stop_at: float
    events: int = 0
    requests: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    ttft: array[float] = field(default_factory=lambda: array("d"))
    gaps: array[float] = field(default_factory=lambda: array("d"))
    refusals: array[float] = field(default_factory=lambda: array("d"))


class Exchange:
    """One request and its answer, as it arrives."""

    def __init__(self, sent: float, recorder: Recorder) -> None:
        self.sent = sent
        self.counted = sent >= recorder.window_start
        self.recorder = recorder
        self.status = 0
        self.first_token: float | None = None
        self.last_event: float | None = None
        self.tail = b""
        self.error_body = b""
        self.error_code: str | None = None
        self.done = False
        # The pause the answer asked for (retry-after-ms wins over retry-after).
        self.retry_after_s: float | None = None
        self._retry_after_ms = False

    def header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in (b"retry-after", b"retry-after-ms") or self._retry_after_ms:
            return
        try:
            number = float(value)
        except ValueError:
            return  # an HTTP date: not sent by the router
        if name == b"retry-after-ms":
            self.retry_after_s, self._retry_after_ms = number / 1000, True
        else:
            self.retry_after_s = number

    def pause_s(self, default_s: float) -> float:
        """How long the connection waits before its next request after this answer."""
        asked = self.retry_after_s
        if asked is not None and 0 < asked <= MAX_RETRY_AFTER_S:
            return asked
        return default_s

    def body(self, data: bytes, now: float) -> None:
        if self.status != 200:
            if len(self.error_body) < MAX_ERROR_BODY:
                self.error_body += data[: MAX_ERROR_BODY - len(self.error_body)]
            return
        if b"\r" in data or self.tail.endswith(b"\r"):
            data = (self.tail + data).replace(b"\r\n", b"\n")
            self.tail = b""
        *events, self.tail = (self.tail + data).split(b"\n\n")
        if not events:
            return
        rec = self.recorder
        if rec.window_start <= now < rec.stop_at:
            rec.events += len(events)
        for event in events:
            if self.counted and self.last_event is not None:
                rec.gaps.append(now - self.last_event)
            self.last_event = now
            if self.first_token is None and CONTENT in event and EMPTY_CONTENT not in event:
                self.first_token = now
            elif event.startswith(DONE):
                self.done = True
            elif event.startswith(ERROR_EVENT) and self.error_code is None:
                code = problem_code(200, event[len(b"data: ") :]).removeprefix("200 ")
                self.error_code = f"200 stream error {code}"

    def finish(self, now: float, failure: str | None = None) -> None:
        rec = self.recorder
        if not self.counted:
            return
        rec.requests += 1
        if failure is not None:
            rec.answers[failure] += 1
            return
        if self.status != 200:
            rec.answers[problem_code(self.status, self.error_body)] += 1
            rec.refusals.append(now - self.sent)
            return
        if self.first_token is not None:
            rec.ttft.append(self.first_token - self.sent)
        if self.error_code is not None:
            rec.answers[self.error_code] += 1
        elif not self.done:
            rec.answers["200 truncated (no [DONE])"] += 1
        else:
            rec.answers["200"] += 1


class StreamConnection(asyncio.Protocol):
    """One keep-alive connection with at most one stream in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.now = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            self.exchange.header(name, value)

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.body(body, self.now)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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

    async def run(self, payload: bytes, exchange: Exchange, timeout_s: float) -> str | None:
        """Send one request and read its whole answer; a failure's label, or None."""
        assert self.transport is not None
        self.exchange = exchange
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        try:
            await asyncio.wait_for(self.waiter, timeout_s)
        except TimeoutError:
            self.close()
            return "timeout"
        except ConnectionError:
            self.close()
            return "connection error"
        finally:
            self.exchange = None
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def run(spec: StreamSpec) -> StreamResult:
    host, port, payload = request_bytes(spec.url, spec.body, spec.headers)
    payloads = Payloads(payload, spec.idempotency_keys)
    loop = asyncio.get_running_loop()
    reconnects = 0

    async def connect() -> StreamConnection:
        _, protocol = await loop.create_connection(StreamConnection, host, port)
        return protocol

    opened = await asyncio.gather(
        *(connect() for _ in range(spec.concurrency)), return_exceptions=True
    )
    connections = [c for c in opened if isinstance(c, StreamConnection)]
    cpu_start = _cpu_s()
    begin = time.perf_counter()
    window_start = begin + spec.warmup_s
    recorder = Recorder(window_start, window_start + spec.duration_s)
    spread = spec.warmup_s / 2

    async def worker(index: int, conn: StreamConnection | None) -> None:
        nonlocal reconnects
        await asyncio.sleep(spread * index / max(1, spec.concurrency))
        while time.perf_counter() < recorder.stop_at:
            if conn is None or not conn.usable:
                try:
                    conn = await connect()
                    reconnects += 1
                except OSError:
                    exchange = Exchange(time.perf_counter(), recorder)
                    exchange.finish(time.perf_counter(), "connect error")
                    await asyncio.sleep(0.05)
                    continue
            exchange = Exchange(time.perf_counter(), recorder)
            failure = await conn.run(payloads.next(), exchange, spec.timeout_s)
            exchange.finish(time.perf_counter(), failure)
            if failure is not None or exchange.status != 200:
                await asyncio.sleep(exchange.pause_s(spec.refusal_pause_s))
        if conn is not None:
            conn.close()

    async def watch() -> tuple[float | None, list[float] | None]:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        pid_before, cores_before = _pid_cpu_s(spec.watch_pid), _core_ticks()
        await asyncio.sleep(max(0.0, recorder.stop_at - time.perf_counter()))
        pid_after, cores_after = _pid_cpu_s(spec.watch_pid), _core_ticks()
        used = None
        if pid_before is not None and pid_after is not None and spec.duration_s > 0:
            used = round(100 * (pid_after - pid_before) / spec.duration_s, 1)
        return used, _busy(cores_before, cores_after)

    slots: list[StreamConnection | None] = [*connections]
    slots += [None] * (spec.concurrency - len(connections))
    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(slots)))
    watched_cpu, core_busy = await watcher
    wall = time.perf_counter() - begin
    cpu = _cpu_s() - cpu_start
    return StreamResult(
        concurrency=spec.concurrency,
        connected=len(connections),
        reconnects=reconnects,
        duration_s=spec.duration_s,
        requests=recorder.requests,
        answers=dict(sorted(recorder.answers.items())),
        events=recorder.events,
        events_per_s=round(recorder.events / spec.duration_s, 1) if spec.duration_s else 0.0,
        ttft_ms=summary(recorder.ttft),
        gap_ms=summary(recorder.gaps),
        refusal_ms=summary(recorder.refusals),
        cpu_percent=round(100 * cpu / wall, 1) if wall > 0 else 0.0,
        watched_cpu_percent=watched_cpu,
        core_busy_percent=core_busy,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pid_cpu_s(pid: int | None) -> float | None:
    """User + system CPU time of `pid` (Linux /proc); None without one."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_ticks() -> list[tuple[int, int]] | None:
    """(busy, total) jiffies of each core (Linux /proc/stat)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = []
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)  # idle + iowait
            ticks.append((sum(numbers) - idle, sum(numbers)))
    return ticks


def _busy(
    before: list[tuple[int, int]] | None, after: list[tuple[int, int]] | None
) -> list[float] | None:
    if before is None or after is None or len(before) != len(after):
        return None
    return [
        round(100 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: streamgen.py SPEC_JSON", file=sys.stderr)
        return 2
    raw: dict[str, Any] = json.loads(argv[1])
    spec = StreamSpec(**raw)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    result: StreamResult = runner(run(spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
