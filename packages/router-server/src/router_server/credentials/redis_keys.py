"""Managed keys in Redis, shared by every replica: stored, and published on change.

Keys (one hash tag, one Redis Cluster slot): `<prefix>{keys}` is a hash of key
id -> JSON record (hash only, never the key); `<prefix>{keys}:audit` a list of
events, newest first. Each change is one Lua script: write the records, push
the event, publish on `<prefix>keys:changed`. Pub/sub is only a hint to
re-read; replicas also re-read every `state.refresh_s`, so a lost message costs
at most that (a revocation reaches every replica within it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from router_core.auth import ManagedKey
from router_server.credentials.store import (
    AUDIT_KEPT,
    KeyEvent,
    dumps,
    loads,
)
from router_server.state.errors import Store
from router_server.state.redis import LuaScript, RedisClient, follow_channel, redis_guard

DEFAULT_PREFIX = "router:"

# KEYS: hash, audit list. ARGV: channel, event, kept, then id/body pairs.
_PUT = """
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[1], ARGV[4])
return 1
"""


class RedisKeyStore:
    def __init__(
        self, client: RedisClient, *, timeout_s: float, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._hash = f"{prefix}{{keys}}"
        self._audit = f"{prefix}{{keys}}:audit"
        self.channel = f"{prefix}keys:changed"
        self._put = LuaScript(client, _PUT)

    @property
    def client(self) -> RedisClient:
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
        await follow_channel(self._client, self.channel, on_change, "key")

    async def aclose(self) -> None:
        return None  # the client is the process's one, closed by the state layer

    def _guard(self, operation: str) -> AbstractAsyncContextManager[None]:
        return redis_guard(Store.KEYS, operation, self._timeout_s)
