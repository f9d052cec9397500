"""Requests the HTTP/1.1 parser refuses, answered with a body and a request id.

h11 refuses a request it cannot parse (a NUL, CR or LF inside a header, a
header name that is not a token, a negative, non-numeric or conflicting
Content-Length, a Transfer-Encoding other than chunked, a request line or
headers beyond `h11_max_incomplete_size`, a malformed request line) and
hypercorn then sends h11's status with an empty body and closes, before the
app runs: no error envelope, no x-request-id. The app never sees these
requests, so the router answers them one level down instead: the same status,
a problem+json body from the catalog (the route is unknown: the request line
itself may be what failed), a fresh x-request-id, and an access-log line with
that id.

This overrides one method of hypercorn's HTTP/1.1 protocol,
`_send_error_response(status_code)` (the same since hypercorn 0.11), and
`install()` puts the subclass where hypercorn's `ProtocolWrapper` looks it up.
`router-server` installs it; an app embedded in another server is unaffected.
The tests send each malformed request to a real router process, so a
hypercorn that changes this fails them.
"""

from __future__ import annotations

import logging
import uuid

import h11
import hypercorn.protocol
import orjson
from hypercorn.protocol.h11 import H11Protocol

from router_core.accounting.records import Outcome
from router_core.problems import Catalog, ClientError, Envelope, content_type, render

log = logging.getLogger("router.access")

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


def install() -> None:
    """Answer parser refusals with a body from now on, in this process."""
    hypercorn.protocol.H11Protocol = RouterH11Protocol  # type: ignore[attr-defined]
