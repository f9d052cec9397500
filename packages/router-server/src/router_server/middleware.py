"""Cross-cutting ASGI middleware: request id, body size limit, last-resort errors.

Pure ASGI (no BaseHTTPMiddleware): it sits on every request, and the
hot path must not pay for an extra task and queue per request.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router_core.problems import Catalog, ClientError, RouterError
from router_server.responses import error_response

log = logging.getLogger("router.server")

_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class BodyTooLarge(ClientError):
    pass


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        Catalog.PAYLOAD_TOO_LARGE, f"The request body exceeds the limit of {limit} bytes."
    )


class RouterMiddleware:
    """Assigns the request id, enforces the body size limit, and turns any
    unhandled exception into a catalogued 500 without a stack trace."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        limit = self.max_body_bytes
        declared = _content_length(scope)
        path: str = scope["path"]
        started = False
        body_done = False
        received = 0

        async def receive_limited() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise too_large(limit)
            elif message["type"] == "http.disconnect":
                body_done = True
            return message

        async def body_drained() -> bool:
            # An early answer (401, 404, 413...) leaves the body unread, and
            # the server then drops the connection; read the rest (within
            # the limit) so the client's keep-alive connection stays usable.
            if declared is not None and declared > limit:
                return False
            try:
                while not body_done:
                    await receive_limited()
            except BodyTooLarge:
                return False
            return True

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", ()), id_header]
                if not body_done and not await body_drained():
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        if declared is not None and declared > limit:
            await error_response(too_large(limit), path)(scope, receive, send_with_id)
            return

        try:
            await self.app(scope, receive_limited, send_with_id)
        except RouterError as exc:
            if not started:
                await error_response(exc, path)(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not started:
                error = RouterError(
                    Catalog.INTERNAL_ERROR,
                    f"The router failed to handle this request (request id {request_id}).",
                )
                await error_response(error, path)(scope, receive, send_with_id)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID_RE.match(given):
        return given.decode()
    return str(uuid.uuid4())


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
