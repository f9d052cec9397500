"""`StateLayer`: the `state:` section opened once per process.

Every store is built here and nowhere else, from one choice (`state.store`):
embedded (memory and SQLite files under `state.dir`, one router process) or
redis (one client for the process, shared by every store; the stores never
close it, the layer does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router_core.config import RouterConfig, StateSettings
from router_core.config_enums import StateStoreKind
from router_server.admin.store import OverrideStore
from router_server.credentials.nonces import NonceStore
from router_server.credentials.store import KeyStore
from router_server.limits import LimitStore
from router_server.state.batch import calls_for
from router_server.state.redis import RedisClient, open_redis
from router_server.state.redis_health import redis_health
from router_server.state.responses import ResponseStore
from router_server.usage.idempotency_store import IdempotencyStore

# The files of the embedded store, under `state.dir`.
KEYS_FILE = "keys.sqlite3"
NONCES_FILE = "nonces.sqlite3"
OVERRIDES_FILE = "overrides.sqlite3"
IDEMPOTENCY_FILE = "idempotency.sqlite3"
RESPONSES_FILE = "responses.sqlite3"


class StateLayer:
    """The stores of one process, on one Redis client or one data directory."""

    def __init__(
        self,
        settings: StateSettings,
        redis: RedisClient | None,
        *,
        limits_timeout_s: float,
        hold_ttl_s: int = 3_600,
    ) -> None:
        if (redis is None) != (settings.store == StateStoreKind.EMBEDDED):
            raise ValueError("a Redis client exactly when state.store is redis")
        self.settings = settings
        self.redis = redis
        self.limits_timeout_s = limits_timeout_s
        # How long a limit hold stays open before it is reaped (`limits.hold_ttl_s`).
        self.hold_ttl_s = hold_ttl_s
        self.timeout_s = settings.redis.timeout_ms / 1000
        # The request path's calls, coalesced into pipelines (see `state.batch`).
        self.calls = None if redis is None else calls_for(redis, pipelines=settings.redis.pipelines)

    @classmethod
    def open(cls, config: RouterConfig, env: Mapping[str, str]) -> StateLayer:
        """The layer `config.state` describes; the Redis URL is read from `env`
        (config validation has checked it is set)."""
        settings = config.state
        redis = None
        if settings.store == StateStoreKind.REDIS:
            redis = open_redis(settings.redis, env[settings.redis.url_env])
        limits = config.limits
        return cls(
            settings, redis, limits_timeout_s=limits.timeout_ms / 1000, hold_ttl_s=limits.hold_ttl_s
        )

    @property
    def kind(self) -> StateStoreKind:
        return self.settings.store

    @property
    def dir(self) -> Path:
        return Path(self.settings.dir)

    def limit_store(self) -> LimitStore:
        if self.redis is None:
            from router_core.limits.integers import US_PER_S
            from router_core.limits.ledger import MemoryLedger
            from router_server.limits import MemoryLimitStore

            return MemoryLimitStore(MemoryLedger(hold_ttl_us=self.hold_ttl_s * US_PER_S))
        from router_server.redis_limits import RedisLimitStore

        return RedisLimitStore(
            self.redis,
            calls=self.calls,
            timeout_s=self.timeout_s,
            budget_s=self.limits_timeout_s,
            hold_ttl_s=self.hold_ttl_s,
        )

    def idempotency_store(self) -> IdempotencyStore:
        from router_server.usage.idempotency_store import (
            RedisIdempotencyStore,
            SqliteIdempotencyStore,
        )

        if self.redis is None:
            return SqliteIdempotencyStore(self.dir / IDEMPOTENCY_FILE)
        return RedisIdempotencyStore(self.redis, self.timeout_s, calls=self.calls)

    def response_store(self, max_bytes: int) -> ResponseStore:
        from router_server.state.responses import RedisResponseStore, SqliteResponseStore

        if self.redis is None:
            return SqliteResponseStore(self.dir / RESPONSES_FILE, max_bytes)
        return RedisResponseStore(self.redis, self.timeout_s, max_bytes)

    def key_store(self) -> KeyStore:
        if self.redis is None:
            from router_server.credentials.sqlite_keys import SqliteKeyStore

            return SqliteKeyStore(self.dir / KEYS_FILE)
        from router_server.credentials.redis_keys import RedisKeyStore

        return RedisKeyStore(self.redis, timeout_s=self.timeout_s)

    def nonce_store(self) -> NonceStore:
        from router_server.credentials.nonces import RedisNonces, SqliteNonces

        if self.redis is None:
            return SqliteNonces(self.dir / NONCES_FILE)
        return RedisNonces(self.redis, timeout_s=self.timeout_s, calls=self.calls)

    def override_store(self) -> OverrideStore:
        if self.redis is None:
            from router_server.admin.sqlite_store import SqliteOverrideStore

            return SqliteOverrideStore(self.dir / OVERRIDES_FILE)
        from router_server.admin.redis_store import RedisOverrideStore

        return RedisOverrideStore(self.redis, timeout_s=self.timeout_s)

    async def health(self, timeout_s: float) -> dict[str, Any]:
        """Redis' state ("ok", "degraded": a cluster short of some slots, "down"),
        found within about `timeout_s` (see `state.redis_health`)."""
        if self.redis is None:
            return {"state": "disabled"}
        return await redis_health(self.redis, timeout_s)

    def status(self) -> dict[str, Any]:
        """The request path's Redis calls: down or not, calls, round trips."""
        return {} if self.calls is None else self.calls.status()

    async def aclose(self) -> None:
        if self.calls is not None:
            await self.calls.aclose()
        if self.redis is not None:
            await self.redis.aclose()
