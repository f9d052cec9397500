"""API keys: format, checksum, hashing and constant-time verification.

Rules:
- A key reads `rk_live_<key id>_<secret><checksum>`. The key id is public (it
  names the key in logs, usage records, the config and the key store) and
  always holds a letter, so YAML never reads it as a number; the secret is 32
  base62 characters; the checksum is the CRC-32 of everything before it, as 6
  base62 characters. The checksum lets a secret scanner (or the router) tell
  a real key from a typo or a look-alike without any lookup.
- Legacy keys `rk_<key id>_<secret>` (no checksum) keep working unchanged.
- Only `sha256:<hex>` of the whole key is ever stored. A plain digest is the
  right tool for a 190-bit random secret: there is nothing to brute-force, and
  a slow KDF would cost every request.
- Lookup goes by key id, then the digests are compared with
  `hmac.compare_digest`, so timing reveals nothing about the secret.
- Pure: randomness comes from the caller (`secrets` in the CLI and admin API).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
import zlib
from collections.abc import Callable

import attrs

PREFIX = "rk"
LIVE_PREFIX = "rk_live"
SECRET_ALPHABET = string.ascii_letters + string.digits
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_ID_LENGTH = 12
_KEY_RE = re.compile(r"^rk_([A-Za-z0-9]{4,32})_([A-Za-z0-9]{32,64})$")
_LIVE_RE = re.compile(r"^rk_live_([A-Za-z0-9]{4,32})_([A-Za-z0-9]{32})([A-Za-z0-9]{6})$")
# What a leak scanner looks for (both formats).
SCAN_RE = re.compile(r"rk_(?:live_)?[A-Za-z0-9]{4,32}_[A-Za-z0-9]{32,64}")


@attrs.frozen
class ParsedKey:
    key_id: str
    secret: str = attrs.field(repr=False)
    # False for a live-format key whose checksum does not match.
    checksum_ok: bool = True


def checksum(body: str) -> str:
    """CRC-32 of `body` as 6 base62 digits (62**6 > 2**32)."""
    value = zlib.crc32(body.encode())
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def parse(presented: str) -> ParsedKey | None:
    """The key id and secret of a well-formed key (either format), or None."""
    live = _LIVE_RE.match(presented)
    if live is not None:
        body = presented[:-CHECKSUM_LENGTH]
        ok = hmac.compare_digest(checksum(body), live.group(3))
        return ParsedKey(live.group(1), live.group(2), ok)
    match = _KEY_RE.match(presented)
    if match is None:
        return None
    return ParsedKey(match.group(1), match.group(2))


def format_key(key_id: str, secret: str) -> str:
    """A legacy-format key (`rk_<id>_<secret>`), as existing configs hold."""
    return f"{PREFIX}_{key_id}_{secret}"


def format_live_key(key_id: str, secret: str) -> str:
    body = f"{LIVE_PREFIX}_{key_id}_{secret}"
    return body + checksum(body)


def new_key_id(choice: Callable[[str], str]) -> str:
    """A random key id that starts with a letter (so YAML keeps it a string)."""
    first = choice(string.ascii_lowercase)
    return first + "".join(choice(string.ascii_lowercase + string.digits) for _ in range(11))


def new_secret(choice: Callable[[str], str]) -> str:
    return "".join(choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def verify(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(presented).encode(), stored_hash.encode())
