"""HMAC-signed requests: the scheme, a pure `sign()` for clients, and the checks.

Rules:
- A signed request carries `Authorization: RK-HMAC-SHA256 keyId=<id>,ts=<unix
  s>,nonce=<nonce>,digest=<b64url sha256(body)>,sig=<b64url>` (no spaces).
  The key id and the signing key come from an API key: the signing key is
  `sha256(<whole API key>)`, which is what the router stores, so the router
  never needs the key itself (and the key never travels on signed requests).
- The signature is HMAC-SHA256, keyed by the signing key, over the canonical
  string, lines joined with "\\n":
  `RK-HMAC-SHA256`, the method (upper case), the path with its query string,
  `ts`, `nonce`, `digest`.
- The router refuses, each with its own reason: a malformed header
  (`hmac_malformed`), a timestamp more than `max_skew_s` from its clock
  (`hmac_skew`), a body whose digest is not the signed one (`hmac_body_digest`),
  a wrong signature (`hmac_signature`), and a nonce seen before within the
  window (`hmac_replay`, checked by the adapter after the signature, so a
  forger cannot burn nonces).
- Pure: `now` is passed in; nonces come from the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import attrs

SCHEME = "RK-HMAC-SHA256"
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PARAM_RE = re.compile(r"^\s*([A-Za-z]+)=([^,\s]*)\s*$")
_FIELDS = ("keyId", "ts", "nonce", "digest", "sig")


class SignatureRejected(ValueError):
    """Why a signed request was refused: `reason` is the published reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@attrs.frozen
class SignedHeader:
    key_id: str
    timestamp: int
    nonce: str
    digest: str
    signature: str = attrs.field(repr=False)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def body_digest(body: bytes) -> str:
    return _b64(hashlib.sha256(body).digest())


def signing_key(api_key: str) -> bytes:
    """The HMAC key of an API key: the digest the router stores (`sha256:<hex>`)."""
    return hashlib.sha256(api_key.encode()).digest()


def signing_key_from_hash(stored_hash: str) -> bytes:
    return bytes.fromhex(stored_hash.removeprefix("sha256:"))


def canonical(method: str, path: str, timestamp: int, nonce: str, digest: str) -> bytes:
    return "\n".join((SCHEME, method.upper(), path, str(timestamp), nonce, digest)).encode()


def _mac(key: bytes, message: bytes) -> str:
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def sign(
    api_key: str, key_id: str, method: str, path: str, body: bytes, now: float, nonce: str
) -> str:
    """The `Authorization` header value for one request (`path` with its query)."""
    if not NONCE_RE.match(nonce):
        raise ValueError("nonce must be 16 to 64 characters of [A-Za-z0-9_-]")
    timestamp = int(now)
    digest = body_digest(body)
    sig = _mac(signing_key(api_key), canonical(method, path, timestamp, nonce, digest))
    return f"{SCHEME} keyId={key_id},ts={timestamp},nonce={nonce},digest={digest},sig={sig}"


def parse_header(value: str) -> SignedHeader:
    scheme, _, rest = value.strip().partition(" ")
    if scheme != SCHEME:
        raise SignatureRejected("hmac_malformed", f"The scheme must be {SCHEME}.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        match = _PARAM_RE.match(part)
        if match is None or match.group(1) in params:
            raise SignatureRejected("hmac_malformed", "The signature parameters are malformed.")
        params[match.group(1)] = match.group(2)
    if sorted(params) != sorted(_FIELDS):
        raise SignatureRejected(
            "hmac_malformed", f"The signature needs exactly these parameters: {', '.join(_FIELDS)}."
        )
    ts = params["ts"]
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
        raise SignatureRejected("hmac_malformed", "ts must be a Unix time in seconds.")
    if not NONCE_RE.match(params["nonce"]):
        raise SignatureRejected("hmac_malformed", "nonce must be 16 to 64 of [A-Za-z0-9_-].")
    if not re.match(r"^[A-Za-z0-9]{4,32}$", params["keyId"]):
        raise SignatureRejected("hmac_malformed", "keyId is not a key id.")
    return SignedHeader(params["keyId"], int(ts), params["nonce"], params["digest"], params["sig"])


def check(
    header: SignedHeader,
    key: bytes,
    method: str,
    path: str,
    body: bytes,
    now: float,
    max_skew_s: float,
) -> None:
    """Raise `SignatureRejected` unless the request is fresh, intact and signed with `key`.
    The nonce's novelty is the adapter's to check, after this passes."""
    if abs(now - header.timestamp) > max_skew_s:
        raise SignatureRejected(
            "hmac_skew", f"The request's timestamp is more than {max_skew_s:g} s from the router's."
        )
    expected = _mac(key, canonical(method, path, header.timestamp, header.nonce, header.digest))
    if not hmac.compare_digest(expected.encode(), header.signature.encode()):
        raise SignatureRejected("hmac_signature", "The request signature does not match.")
    if not hmac.compare_digest(body_digest(body).encode(), header.digest.encode()):
        raise SignatureRejected(
            "hmac_body_digest", "The body is not the one that was signed (digest mismatch)."
        )
