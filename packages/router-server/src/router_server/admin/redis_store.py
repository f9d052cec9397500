"""Overrides in Redis, shared by every replica: stored, and published on change.

Keys (one hash tag, so one Redis Cluster slot): `<prefix>{overrides}` is a hash
of override id -> JSON; `<prefix>{overrides}:audit` a list of audit entries,
newest first, trimmed to `AUDIT_KEPT`. Each change is one Lua script: write
the change, push its audit entry, publish the id on `<prefix>overrides:changed`.
Redis keeps the overrides across router restarts; pub/sub is only a hint to
re-read, and replicas re-read on a timer too, so a lost message costs at most
`state.refresh_s`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from router_core.overrides import Override
from router_server.admin import codec
from router_server.admin.audit import AuditEntry
from router_server.admin.store import AUDIT_KEPT
from router_server.state.errors import Store
from router_server.state.redis import LuaScript, RedisClient, follow_channel, redis_guard

DEFAULT_PREFIX = "router:"

_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
"""
_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""


class RedisOverrideStore:
    def __init__(
        self, client: RedisClient, *, timeout_s: float, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._hash = f"{prefix}{{overrides}}"
        self._audit = f"{prefix}{{overrides}}:audit"
        self.channel = f"{prefix}overrides:changed"
        self._put = LuaScript(client, _PUT)
        self._delete = LuaScript(client, _DELETE)

    @property
    def client(self) -> RedisClient:
        return self._client

    async def load(self, now: float) -> list[Override]:
        async with self._guard("list"):
            raw: dict[bytes, bytes] = await self._client.hgetall(self._hash)  # type: ignore[assignment]
        active: list[Override] = []
        expired: list[bytes] = []
        for key, body in sorted(raw.items()):
            override = codec.loads(body, Override)
            if override is None:
                continue
            if override.active(now):
                active.append(override)
            else:
                expired.append(key)
        if expired:
            # Ids are never reused, so an expired id cannot have come back to life.
            async with self._guard("prune"):
                await self._client.hdel(self._hash, *expired)
        return active

    async def put(self, override: Override, entry: AuditEntry) -> None:
        async with self._guard("put"):
            await self._put(
                keys=[self._hash, self._audit],
                args=[
                    override.id, codec.dumps(override), codec.dumps(entry), AUDIT_KEPT,
                    self.channel,
                ],
            )  # fmt: skip

    async def delete(self, override_id: str, entry: AuditEntry) -> bool:
        async with self._guard("delete"):
            deleted = await self._delete(
                keys=[self._hash, self._audit],
                args=[override_id, codec.dumps(entry), AUDIT_KEPT, self.channel],
            )
        return bool(deleted)

    async def audit(self, limit: int) -> list[AuditEntry]:
        async with self._guard("audit"):
            raw: list[bytes] = await self._client.lrange(self._audit, 0, limit - 1)  # type: ignore[assignment]
        return [e for body in raw if (e := codec.loads(body, AuditEntry)) is not None]

    async def listen(self, on_change: Callable[[], None]) -> None:
        await follow_channel(self._client, self.channel, on_change, "override")

    async def aclose(self) -> None:
        return None  # the client is the process's one, closed by the state layer

    def _guard(self, operation: str) -> AbstractAsyncContextManager[None]:
        return redis_guard(Store.OVERRIDES, operation, self._timeout_s)
