"""Managed keys in Redis, shared by every replica: stored, and published on change.

Keys (one hash tag, one Redis Cluster slot): `<prefix>{keys}` is a hash of key
id -> JSON record (hash only, never the key); `<prefix>{keys}:audit` a list of
events, newest first. Each change is one Lua script: write the records, push
the event, publish on `<prefix>keys:changed`. Pub/sub is only a hint to
re-read; replicas also re-read every `auth.refresh_s`, so a lost message costs
at most that (a revocation reaches every replica within it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router_core.auth import ManagedKey
from router_server.credentials.store import (
    AUDIT_KEPT,
    KeyEvent,
    KeyStoreUnavailable,
    dumps,
    loads,
)

log = logging.getLogger("router.keys")

DEFAULT_PREFIX = "router:"
TIMEOUT_S = 2.0

# KEYS: hash, audit list. ARGV: channel, event, kept, then id/body pairs.
_PUT = """
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[1], ARGV[4])
return 1
"""


class RedisKeyStore:
    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._hash = f"{prefix}{{keys}}"
        self._audit = f"{prefix}{{keys}}:audit"
        self.channel = f"{prefix}keys:changed"
        self._put = client.register_script(_PUT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisKeyStore:
        client = Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        return cls(client, prefix=prefix)

    @property
    def client(self) -> Redis:
        return self._client

    async def load(self) -> list[ManagedKey]:
        async with self._guard("list"):
            raw: dict[bytes, bytes] = await self._client.hgetall(self._hash)  # type: ignore[assignment]
        return [k for _, body in sorted(raw.items()) if (k := loads(body, ManagedKey)) is not None]

    async def put(self, keys: Sequence[ManagedKey], event: KeyEvent) -> None:
        pairs: list[str] = []
        for managed in keys:
            pairs += [managed.key.id, dumps(managed)]
        async with self._guard("put"):
            await self._put(
                keys=[self._hash, self._audit],
                args=[self.channel, dumps(event), AUDIT_KEPT, *pairs],
            )

    async def audit(self, limit: int) -> list[KeyEvent]:
        async with self._guard("audit"):
            raw: list[bytes] = await self._client.lrange(self._audit, 0, limit - 1)  # type: ignore[assignment]
        return [e for body in raw if (e := loads(body, KeyEvent)) is not None]

    async def listen(self, on_change: Callable[[], None]) -> None:
        """Follow the change channel; on failure, wait, resubscribe, and report a change
        (one may have been missed meanwhile)."""
        delay = 0.1
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self.channel)
                    delay = 0.1
                    on_change()
                    while True:
                        message = await pubsub.get_message(timeout=30.0)
                        if message is not None:
                            on_change()
                finally:
                    with anyio.CancelScope(shield=True):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                log.warning(
                    "key change feed lost; resubscribing",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def aclose(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        try:
            with anyio.fail_after(TIMEOUT_S):
                yield
        except TimeoutError as exc:
            raise KeyStoreUnavailable(
                f"key store {operation}: Redis did not answer within {TIMEOUT_S:g} s"
            ) from exc
        except (RedisError, OSError) as exc:
            raise KeyStoreUnavailable(
                f"key store {operation}: Redis failed ({type(exc).__name__})"
            ) from exc
