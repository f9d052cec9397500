"""Relaying streams event by event.

Rules:
- Failover (see `dispatch`) happens only before the client has received a
  byte. Once a stream has started, a broken backend ends it with an explicit
  error event in the client's protocol, never a silent truncation: a stream
  that ends before it completes (`[DONE]`, `message_stop`, `response.completed`)
  is reported as broken too, and its usage outcome is a backend error.
- What each event becomes is the request's `Relay`'s
  (`router_core.protocols.relay`): passed on with the public model name, or
  translated from chat into the client's protocol.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import anyio
import attrs
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router_core.attempts import FailureKind
from router_core.protocols.relay import Relay
from router_server.aws import FramingError
from router_server.backends import BackendFailure
from router_server.dispatch import Opened


@attrs.define
class StreamTally:
    """What a relayed stream carried, for settling its limits and its usage record."""

    # Turns the backend's events into the client's, and keeps their usage.
    relay: Relay
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


OnEnd = Callable[[StreamTally], Awaitable[None]]


class RelayResponse(StreamingResponse):
    """An SSE relay that closes the backend response however the relay ends,
    including a client that disconnects before the first event, and then
    reports what the stream carried to `on_end`, exactly once."""

    def __init__(
        self,
        opened: Opened,
        headers: Mapping[str, str],
        tally: StreamTally,
        on_end: OnEnd,
    ) -> None:
        super().__init__(
            relay_events(opened, tally),
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


async def relay_events(opened: Opened, tally: StreamTally) -> AsyncIterator[bytes]:
    """The backend's SSE stream, each event passed on as soon as it is complete.

    Events completed by the same backend chunk go out in one write: a send
    per event costs the server a framed chunk and a drain each, and on one
    core that was a third of a short stream's cost (see benchmarks/).
    """
    # Events come out LF-terminated whatever line ends the backend used, and
    # whole however its chunks split them (a CRLF may straddle two chunks).
    splitter = opened.client.splitter()
    backend = opened.candidate.backend
    relay = tally.relay
    try:
        async for chunk in opened.client.chunks(opened.response):
            try:
                events = splitter.feed(chunk)
            except FramingError as exc:  # Bedrock's frames: a checksum that fails
                raise BackendFailure(backend, FailureKind.PROTOCOL, f"bad frame ({exc})") from None
            if not events:
                continue
            data = b"".join([relay.event(event) for event in events])
            if data:
                tally.sent(data)
                yield data
    except BackendFailure as failure:
        tally.broken = f"stream broke: {failure.detail}"
        data = relay.broken(f"The stream from backend {backend!r} broke: {failure.detail}.")
        tally.sent(data)
        yield data
        return
    if not relay.done:
        tally.broken = "stream ended before it completed"
        data = relay.broken(f"The stream from backend {backend!r} ended before completion.")
        tally.sent(data)
        yield data
