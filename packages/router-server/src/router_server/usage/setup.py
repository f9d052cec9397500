"""Open the usage sink from the config, in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
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


@contextlib.asynccontextmanager
async def open_usage(config: RouterConfig, env: Mapping[str, str]) -> AsyncIterator[UsageSink]:
    """The sink, closed on the way out (`sink.aclose()`) whatever fails after it
    opened, or while it opened. The lifespan runs `sink.run()` in its task group
    and `drain()` before cancelling it."""
    recorder = Recorder.open(config, env)
    try:
        store = open_store(config, env)
    except BaseException:
        await recorder.aclose()
        raise
    sink = UsageSink(recorder, store, config.idempotency.store)
    try:
        yield sink
    finally:
        await sink.aclose()
