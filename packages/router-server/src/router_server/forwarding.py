"""Relaying streams event by event.

Rules:
- Failover (see `dispatch`) happens only before the client has received a
  byte. Once a stream has started, a broken backend ends it with an explicit
  SSE error event, never a silent truncation: a stream that ends without
  `[DONE]` is reported as broken too, and its usage outcome is a backend error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router_core.problems import Catalog
from router_core.sse import EventSplitter
from router_server.backends import BackendFailure
from router_server.dispatch import Opened


def _error_event(message: str) -> bytes:
    error = {
        "error": {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": Catalog.BACKEND_ERROR.code,
        }
    }
    return b"data: " + orjson.dumps(error) + b"\n\n"


@attrs.define
class StreamTally:
    """What a relayed stream carried, for settling its limits and its usage record."""

    # Drop the usage-only chunk: the router asked for it, the client did not.
    strip_usage: bool = False
    usage: dict[str, Any] | None = None
    content_events: int = 0
    done: bool = False
    # Why the backend's stream failed, if it did (a client leaving is not a failure).
    broken: str | None = None
    # perf_counter() when the first event went out (the record's time to first token).
    first_byte: float | None = None
    # The events sent, kept to replay to an idempotent retry while they fit in
    # `capture_limit` bytes (None: not kept, or they did not fit).
    captured: list[bytes] | None = None
    capture_limit: int = 0
    captured_bytes: int = 0

    def sent(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        if self.captured is not None:
            self.captured_bytes += len(data)
            if self.captured_bytes <= self.capture_limit:
                self.captured.append(data)
            else:
                self.captured = None

    def capture(self, limit: int) -> None:
        self.captured, self.capture_limit = [], limit


def _rewrite_event(event: bytes, public_model: str, tally: StreamTally) -> bytes | None:
    """The event under the public model name, or None to drop it."""
    if not event.startswith(b"data:"):
        return event
    data = event[5:].strip()
    if data == b"[DONE]":
        tally.done = True
        return event
    if not data.startswith(b"{"):
        return event
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return event
    if not isinstance(chunk, dict):
        return event
    if isinstance(chunk.get("usage"), dict):
        tally.usage = chunk["usage"]
        if tally.strip_usage and not chunk.get("choices"):
            return None
    if chunk.get("choices"):
        tally.content_events += 1
    if "model" in chunk:
        chunk["model"] = public_model
        return b"data: " + orjson.dumps(chunk)
    return event


OnEnd = Callable[[StreamTally], Awaitable[None]]


class RelayResponse(StreamingResponse):
    """An SSE relay that closes the backend response however the relay ends,
    including a client that disconnects before the first event, and then
    reports what the stream carried to `on_end`, exactly once."""

    def __init__(
        self,
        opened: Opened,
        public_model: str,
        headers: Mapping[str, str],
        tally: StreamTally,
        on_end: OnEnd,
    ) -> None:
        super().__init__(
            relay_events(opened, public_model, tally),
            headers={**headers, "cache-control": "no-cache"},
            media_type="text/event-stream",
        )
        self.opened = opened
        self.tally = tally
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.opened.response.aclose()
                await self.on_end(self.tally)


async def relay_events(
    opened: Opened, public_model: str, tally: StreamTally
) -> AsyncIterator[bytes]:
    """The backend's SSE stream, each event passed on as soon as it is complete.

    Events completed by the same backend chunk go out in one write: a send
    per event costs the server a framed chunk and a drain each, and on one
    core that was a third of a short stream's cost (see benchmarks/).
    """
    # Events come out LF-terminated whatever line ends the backend used, and
    # whole however its chunks split them (a CRLF may straddle two chunks).
    splitter = EventSplitter()
    backend = opened.candidate.backend
    try:
        async for chunk in opened.client.chunks(opened.response):
            events = splitter.feed(chunk)
            if not events:
                continue
            ready: list[bytes] = []
            for event in events:
                rewritten = _rewrite_event(event, public_model, tally)
                if rewritten is not None:
                    ready.append(rewritten + b"\n\n")
            if ready:
                data = b"".join(ready)
                tally.sent(data)
                yield data
    except BackendFailure as failure:
        tally.broken = f"stream broke: {failure.detail}"
        data = _error_event(f"The stream from backend {backend!r} broke: {failure.detail}.")
        tally.sent(data)
        yield data
        return
    if not tally.done:
        tally.broken = "stream ended before [DONE]"
        data = _error_event(f"The stream from backend {backend!r} ended before completion.")
        tally.sent(data)
        yield data
