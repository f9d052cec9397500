"""hypercorn's HTTP/1.1 protocol, with the two changes the router makes to it.

`install()` puts `RouterH11Protocol` where hypercorn's `ProtocolWrapper`
looks the protocol up. `router-server` installs it; an app embedded in
another server is unaffected.

Refusals. h11 refuses a request it cannot parse (a NUL, CR or LF inside a
header, a header name that is not a token, a negative, non-numeric or
conflicting Content-Length, a Transfer-Encoding other than chunked, a
request line or headers beyond `h11_max_incomplete_size`, a malformed
request line) and hypercorn then sends h11's status with an empty body and
closes, before the app runs: no error envelope, no x-request-id. The app
never sees these requests, so the router answers them one level down
instead: the same status, a problem+json body from the catalog (the route
is unknown: the request line itself may be what failed), a fresh
x-request-id, and an access-log line with that id. This overrides
`_send_error_response(status_code)` (the same since hypercorn 0.11); the
tests send each malformed request to a real router process, so a hypercorn
that changes this fails them.

Stream chunks. Every event a stream relays is one chunk of a chunked body,
and h11 framed each: a Data event through its state machine (which a chunk
never moves: the connection stays in SEND_BODY) and its chunked writer (the
length in hex, the data, CRLF), joined into new bytes. `stream_send` writes
those same bytes itself for a chunk of a chunked body in SEND_BODY: about
5 us less per relayed event, 8 % of the router's CPU at 256 paced streams.
Everything else (the head, a Content-Length body, the end of the message,
any other state) goes through h11 as before, which still checks every
transition. This reads h11's private `Connection._writer` and
`_writers.ChunkedWriter` (as in h11 0.16); an h11 without them sends every
chunk through h11 again. Tests read a real router's stream off a socket and
check its framing byte by byte.
"""

from __future__ import annotations

import logging
import uuid

import h11
import hypercorn.protocol
import orjson
from hypercorn.events import RawData
from hypercorn.protocol.events import Body
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol

from router_core.accounting.records import Outcome
from router_core.problems import Catalog, ClientError, Envelope, content_type, render

log = logging.getLogger("router.access")

try:
    from h11._writers import ChunkedWriter

    _CHUNKED: type | None = ChunkedWriter
except ImportError:  # pragma: no cover - an h11 that moved it: every chunk goes through h11
    _CHUNKED = None

_MALFORMED = (
    "The request is not valid HTTP/1.1 and was not processed. Header names must be "
    "tokens (ASCII letters, digits and !#$%&'*+-.^_`|~, no space before the colon), "
    "header values must not contain NUL, CR or LF, Content-Length must be one "
    "non-negative integer, and the request line must be METHOD TARGET HTTP/1.1."
)


def refusal(status: int, max_head_bytes: int) -> ClientError:
    """The catalogued error for a status h11 refused a request with."""
    if status == Catalog.HEADERS_TOO_LARGE.status:
        return ClientError(
            Catalog.HEADERS_TOO_LARGE,
            f"The request line and headers exceed {max_head_bytes} bytes.",
        )
    if status == Catalog.UNSUPPORTED_TRANSFER_ENCODING.status:
        return ClientError(
            Catalog.UNSUPPORTED_TRANSFER_ENCODING,
            "Only Transfer-Encoding: chunked is supported (or send Content-Length).",
        )
    return ClientError(Catalog.MALFORMED_REQUEST, _MALFORMED, status=status)


class RouterH11Protocol(H11Protocol):
    async def stream_send(self, event: StreamEvent) -> None:
        if type(event) is Body and event.data and _sending_chunks(self.connection):
            data = event.data
            await self.send(RawData(data=b"%x\r\n%b\r\n" % (len(data), data)))
            return
        await super().stream_send(event)

    async def _send_error_response(self, status_code: int) -> None:
        request_id = str(uuid.uuid4())
        error = refusal(status_code, self.config.h11_max_incomplete_size)
        body = orjson.dumps(render(error, Envelope.PROBLEM))
        headers = [
            (b"content-type", content_type(Envelope.PROBLEM).encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=error.status, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request refused",
                extra={
                    "request_id": request_id,
                    "status": error.status,
                    "code": error.problem.code,
                    "outcome": Outcome.DENIED.value,
                },
            )


def _sending_chunks(connection: object) -> bool:
    """Whether `connection` (h11's, or hypercorn's for a WebSocket upgrade) is in
    a chunked body, where a chunk changes no state."""
    writer = getattr(connection, "_writer", None)
    return type(writer) is _CHUNKED and getattr(connection, "our_state", None) is h11.SEND_BODY


def install() -> None:
    """Answer parser refusals with a body, and frame stream chunks, from now on,
    in this process."""
    hypercorn.protocol.H11Protocol = RouterH11Protocol  # type: ignore[attr-defined]
