"""API keys: format, hashing and constant-time verification.

Rules:
- A key reads `rk_<key id>_<secret>`. The key id is public (it names the key
  in logs, usage records and the config); the secret is 32+ base62 characters.
- Only `sha256:<hex>` of the whole key is ever stored. A plain digest is the
  right tool for a 190-bit random secret: there is nothing to brute-force, and
  a slow KDF would cost every request.
- Lookup goes by key id, then the digests are compared with
  `hmac.compare_digest`, so timing reveals nothing about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string

import attrs

PREFIX = "rk"
SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 32
_KEY_RE = re.compile(r"^rk_([A-Za-z0-9]{4,32})_([A-Za-z0-9]{32,64})$")


@attrs.frozen
class ParsedKey:
    key_id: str
    secret: str = attrs.field(repr=False)


def parse(presented: str) -> ParsedKey | None:
    """The key id and secret of a well-formed key, or None."""
    match = _KEY_RE.match(presented)
    if match is None:
        return None
    return ParsedKey(match.group(1), match.group(2))


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def verify(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(presented).encode(), stored_hash.encode())
