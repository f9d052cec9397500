"""AWS for Bedrock backends: SigV4 signing and ConverseStream's event-stream framing.

Rules:
- botocore does the work (the `bedrock` extra): its credential chain
  (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, a
  web identity token file with `AWS_ROLE_ARN`, profiles, container and
  instance roles), its SigV4 signer, and its event-stream decoder. Nothing
  here is imported unless a Bedrock backend is configured; without
  botocore, such a config is refused at start-up, naming the extra.
- Credentials are resolved once per client (at start-up and on reload);
  refreshable ones (assumed roles) refresh themselves when near expiry. A
  chain that finds none fails each call before anything is sent.
- Every request is signed over the exact bytes and URL sent. botocore's
  own debug log (which would print canonical requests, session tokens
  included) is kept at WARNING.
- Each ConverseStream frame becomes one event for the relay:
  `data: {"type": <:event-type>, ...payload}`. An exception frame becomes
  `{"type": "exception", "exception": <:exception-type>, "message": ...}`.
  A frame that fails its checksum breaks the stream.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import orjson

EXTRA = "pip install 'inference-router-server[bedrock]'"
SERVICE = "bedrock"
_SIGNED = ("authorization", "x-amz-date", "x-amz-security-token")

logging.getLogger("botocore").setLevel(logging.WARNING)


def available() -> bool:
    """Whether botocore (the `bedrock` extra) is installed."""
    return importlib.util.find_spec("botocore") is not None


class NoCredentials(Exception):
    """The AWS credential chain found nothing to sign with."""


class Signer:
    """SigV4 for one region, with the credentials of the standard chain."""

    def __init__(self, region: str) -> None:
        try:
            import botocore.session
        except ImportError:
            raise RuntimeError(
                f"kind bedrock needs the bedrock extra (botocore): {EXTRA}"
            ) from None

        self.region = region
        try:
            self._credentials: Any = botocore.session.Session().get_credentials()
        except Exception:  # a malformed profile, say: every call then fails, unsent
            logging.getLogger("router.backends").warning("AWS credentials could not be resolved")
            self._credentials = None

    def headers(self, method: str, url: str, body: bytes) -> dict[str, str]:
        """The headers that sign a `method` of `url` with `body` (JSON) now."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:
            raise NoCredentials("no AWS credentials found")
        frozen = self._credentials.get_frozen_credentials()
        request = AWSRequest(
            method=method, url=url, data=body, headers={"content-type": "application/json"}
        )
        SigV4Auth(frozen, SERVICE, self.region).add_auth(request)
        return {k.lower(): str(v) for k, v in request.headers.items() if k.lower() in _SIGNED}


class FramingError(Exception):
    """A ConverseStream frame that does not decode (checksum, length)."""


class EventStreamSplitter:
    """AWS event-stream bytes in, one `data:` event per complete frame out."""

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[bytes]:
        from botocore.eventstream import ParserError

        self._buffer.add_data(chunk)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                out.append(b"data: " + orjson.dumps(_event(message.headers, message.payload)))
        except ParserError as exc:
            raise FramingError(type(exc).__name__) from None
        return out


def _event(headers: dict[str, Any], payload: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        parsed = {}
    body = parsed if isinstance(parsed, dict) else {}
    if headers.get(":message-type") == "event":
        return {**body, "type": headers.get(":event-type")}
    kind = headers.get(":exception-type") or headers.get(":error-code") or "exception"
    message = body.get("message") or headers.get(":error-message") or ""
    return {"type": "exception", "exception": kind, "message": str(message)}
