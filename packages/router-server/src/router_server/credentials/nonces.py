"""Nonces of signed requests, each kept for the skew window so a replay is refused.

Rules:
- `claim(key_id, nonce, ttl_s)` is true the first time a nonce is seen for a
  key within `ttl_s`, false on every replay. Nonces are per key, so one
  client cannot block another's.
- Embedded: in memory (one process; a restart forgets them, and a request
  older than the window is refused on its timestamp anyway after at most
  `ttl_s`). Distributed: Redis `SET NX EX`, shared by every replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router_core.problems import Catalog, DependencyError

MAX_REMEMBERED = 1_000_000


class NonceStore(Protocol):
    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool: ...


class MemoryNonces:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        now = self.clock()
        if len(self._seen) >= MAX_REMEMBERED or len(self._seen) % 1024 == 0:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        expires = self._seen.get((key_id, nonce))
        if expires is not None and expires > now:
            return False
        self._seen[(key_id, nonce)] = now + ttl_s
        return True


class RedisNonces:
    def __init__(self, client: Redis, prefix: str = "router:") -> None:
        self._client = client
        self._prefix = prefix

    async def claim(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        try:
            with anyio.fail_after(2.0):
                fresh = await self._client.set(
                    f"{self._prefix}nonce:{key_id}:{nonce}", b"1", nx=True, ex=max(1, int(ttl_s))
                )
        except (TimeoutError, RedisError, OSError) as exc:
            raise DependencyError(
                Catalog.CREDENTIALS_UNAVAILABLE,
                f"The nonce store could not be read ({type(exc).__name__}); retry the request.",
            ) from exc
        return bool(fresh)
