"""The admin listener's TLS: mutual TLS with hypercorn, and who the client is.

hypercorn (0.18) verifies client certificates (`verify_mode = CERT_REQUIRED`
against `ca_certs`) but does not put the certificate in the ASGI scope (the
ASGI TLS extension is not implemented). So the SSL context makes its
connections with `RecordingSSLObject`, which, when a handshake completes,
stores the verified client's subject in a context variable. The handshake
completes in the connection's own context, from which the server creates the
connection's task and, within it, every request's task: each request sees its
own connection's subject and no other. A request with no subject there
(no TLS, or a server that does things differently) has no identity, and the
admin API refuses to make changes for it.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
from typing import Any

from hypercorn.config import Config as HypercornConfig

from router_core.config import AdminListener, Listener
from router_core.config_codec import ConfigProblem

_subject: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "router_admin_subject", default=None
)

# Short names of RFC 4514 (and emailAddress), for the usual attributes.
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
    "userId": "UID",
}


def client_subject() -> str | None:
    """The verified client certificate's subject on this request's connection."""
    return _subject.get()


def subject_name(cert: dict[str, Any]) -> str:
    """An RFC 4514 string (most specific attribute first) from `getpeercert()`."""
    parts: list[str] = []
    for rdn in reversed(cert.get("subject", ())):
        parts.append("+".join(f"{_SHORT.get(k, k)}={_escape(str(v))}" for k, v in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


class RecordingSSLObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        cert = self.getpeercert()
        _subject.set(subject_name(cert) if cert else None)


class AdminHypercornConfig(HypercornConfig):
    def create_ssl_context(self) -> ssl.SSLContext | None:
        context: ssl.SSLContext | None = super().create_ssl_context()
        if context is not None:
            context.sslobject_class = RecordingSSLObject
        return context


def admin_hypercorn_config(listener: AdminListener) -> HypercornConfig:
    hc = AdminHypercornConfig()
    hc.bind = [f"{listener.host}:{listener.port}"]
    hc.certfile = listener.cert_file
    hc.keyfile = listener.key_file
    hc.ca_certs = listener.ca_file
    hc.verify_mode = ssl.CERT_REQUIRED
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 5
    return hc


def check_admin_listener(admin: AdminListener, public: Listener) -> list[ConfigProblem]:
    """What stops the admin listener from starting, each named by its config path."""
    where = "listeners.admin"
    problems: list[ConfigProblem] = []
    for field in ("cert_file", "key_file", "ca_file"):
        path = getattr(admin, field)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            problems.append(
                ConfigProblem(f"{where}.{field}", f"cannot read {path}: {exc.strerror}")
            )
    if admin.port == public.port and admin.port != 0 and admin.host == public.host:
        problems.append(ConfigProblem(f"{where}.port", "must differ from listeners.public.port"))
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # No password: the config has none to give, and this must never stop
        # to prompt on a terminal.
        context.load_cert_chain(admin.cert_file, admin.key_file, password=lambda: "")
    except ssl.SSLError as exc:
        problems.append(ConfigProblem(
            f"{where}.cert_file",
            f"{admin.cert_file} and {admin.key_file} are not a PEM certificate and its "
            f"unencrypted private key ({exc.reason or exc})",
        ))  # fmt: skip
    try:
        context.load_verify_locations(admin.ca_file)
    except ssl.SSLError as exc:
        problems.append(ConfigProblem(
            f"{where}.ca_file",
            f"{admin.ca_file} holds no PEM CA certificate ({exc.reason or exc})",
        ))  # fmt: skip
    return problems
