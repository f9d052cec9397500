"""What `router smoke` and `router loadtest` share: the deployment's address,
the key, TLS, and one sentence for whatever went wrong on the wire.

The API key and the ops token are only ever sent as headers: every message
built here passes through `Secrets.scrub`, so neither can reach the output
even when a server or a library echoes one back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
from typing import Any

import attrs
import httpx

KEY_ENV = "ROUTER_API_KEY"


class ProbeUsage(Exception):
    """The command line cannot work (no key, an unreadable CA file)."""


@attrs.frozen
class Secrets:
    key: str
    ops_token: str | None = None

    def scrub(self, text: str) -> str:
        for secret in (self.key, self.ops_token):
            if secret:
                text = text.replace(secret, "***")
        return text


def base_url(url: str) -> str:
    """The deployment's root, whether given as `https://host`, `https://host/` or `.../v1`."""
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise ProbeUsage(f"{url!r} is not an http:// or https:// URL")
    return root


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", metavar="URL", help="the deployment, e.g. https://router.example.com"
    )
    parser.add_argument(
        "--key",
        help=f"an API key the router accepts (default: the variable {KEY_ENV}); never printed",
    )
    parser.add_argument("--model", help="the model to try (default: the first /v1/models lists)")
    parser.add_argument(
        "--ca-cert", metavar="FILE", help="trust this CA bundle (PEM) for https:// URLs"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="per request (default: 30 s)"
    )


def secrets_from(args: argparse.Namespace) -> Secrets:
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        raise ProbeUsage(f"no API key: pass --key or set {KEY_ENV}")
    token = None
    if getattr(args, "ops_token_env", None):
        token = os.environ.get(args.ops_token_env)
        if not token:
            raise ProbeUsage(f"--ops-token-env names {args.ops_token_env}, which is not set")
    return Secrets(key, token)


def verify_from(args: argparse.Namespace) -> ssl.SSLContext | bool:
    if not args.ca_cert:
        return True
    try:
        return ssl.create_default_context(cafile=args.ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeUsage(f"--ca-cert {args.ca_cert}: cannot be read: {exc}") from None


def key_headers(secrets: Secrets) -> dict[str, str]:
    return {"authorization": f"Bearer {secrets.key}"}


def transport_error(exc: httpx.HTTPError, secrets: Secrets) -> str:
    """One sentence for a request that got no answer."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason
            return f"TLS error: certificate verify failed: {why} (a private CA: --ca-cert FILE)"
        if isinstance(cause, ssl.SSLError):
            return secrets.scrub(f"TLS error: {cause.reason or cause}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return secrets.scrub(f"cannot connect: {exc or 'connection failed'}")
    return secrets.scrub(f"{type(exc).__name__}: {exc}")


def unreachable(exc: httpx.HTTPError) -> bool:
    """Whether nothing answered at all (a connection or TLS failure, not a slow answer)."""
    return isinstance(exc, httpx.ConnectError)


def problem(response: httpx.Response, secrets: Secrets) -> str:
    """`STATUS code: message` from an error answer in any of the router's envelopes."""
    code, message = None, None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code, message = error.get("code") or error.get("type"), error.get("message")
        else:
            code, message = body.get("code"), error if isinstance(error, str) else None
    text = f"{response.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {str(message)[:200]}"
    return secrets.scrub(text)


def server_timing(value: str | None) -> tuple[float | None, float | None]:
    """(router, backend) in ms from a `Server-Timing` field; None where absent."""
    found: dict[str, float] = {}
    for metric in (value or "").split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            field, _, number = param.strip().partition("=")
            if field == "dur":
                with contextlib.suppress(ValueError):  # not a number: as if absent
                    found[name.strip()] = float(number.strip('"'))
    return found.get("router"), found.get("backend")
