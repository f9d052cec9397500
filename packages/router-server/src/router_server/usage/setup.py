"""Open the usage sink from the config, in the app's lifespan."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from router_core.config import RouterConfig
from router_server.usage.idempotency_store import (
    IdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
)
from router_server.usage.recorder import Recorder
from router_server.usage.sink import UsageSink


def open_store(config: RouterConfig, env: Mapping[str, str]) -> IdempotencyStore:
    settings = config.idempotency
    if settings.store == "redis":
        return RedisIdempotencyStore.from_url(env[settings.redis_url_env])
    return SqliteIdempotencyStore(Path(config.usage.dir) / "idempotency.sqlite3")


def open_usage(config: RouterConfig, env: Mapping[str, str]) -> UsageSink:
    """The sink; the lifespan runs `sink.run()` in its task group, `drain()` before
    cancelling it, and `aclose()` last."""
    return UsageSink(Recorder.open(config, env), open_store(config, env), config.idempotency.store)
