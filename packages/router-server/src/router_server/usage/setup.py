"""Open the usage sink from the config, in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from router_core.config import RouterConfig
from router_server.state.layer import StateLayer
from router_server.usage.recorder import Recorder
from router_server.usage.sink import UsageSink


@contextlib.asynccontextmanager
async def open_usage(
    config: RouterConfig, env: Mapping[str, str], stores: StateLayer, *, slot: int = 0
) -> AsyncIterator[UsageSink]:
    """The sink, closed on the way out (`sink.aclose()`) whatever fails after it
    opened, or while it opened. The lifespan runs `sink.run()` in its task group
    and `drain()` before cancelling it."""
    recorder = Recorder.open(config, env, slot=slot)
    try:
        store = stores.idempotency_store()
    except BaseException:
        await recorder.aclose()
        raise
    sink = UsageSink(recorder, store, stores.kind)
    try:
        yield sink
    finally:
        await sink.aclose()
