"""Open the usage sink from the config, in the app's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio

from router_core.config import RouterConfig
from router_server.state.layer import StateLayer
from router_server.usage.recorder import Recorder
from router_server.usage.sink import UsageSink
from router_server.usage.spool import SpoolError

log = logging.getLogger("router.usage")


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


def _removed_slots(root: Path, workers: int) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(root.glob("spool-worker-*")):
        number = path.name.removeprefix("spool-worker-")
        if number.isdigit() and int(number) >= workers:
            found.append((int(number), path))
    return found


async def drain_removed_slots(config: RouterConfig, env: Mapping[str, str], workers: int) -> None:
    """Drain the spools of worker slots the group no longer has (`--workers`
    lowered since they ran) into the ledger and Kafka, then leave them: run by
    worker 0 at start-up, beside serving."""
    for slot, path in _removed_slots(Path(config.state.dir), workers):
        try:
            recorder = Recorder.open(config, env, slot=slot)
        except (SpoolError, OSError) as exc:
            log.error("a removed worker's spool cannot be drained", extra={"error": str(exc)})
            continue
        try:
            pending = max((r.pending for r in recorder.spool.readers.values()), default=0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run)
                while any(r.pending for r in recorder.spool.readers.values()):  # noqa: ASYNC110
                    await anyio.sleep(0.1)  # as `Recorder.drain`: acks are frequent
                tg.cancel_scope.cancel()
        finally:
            await recorder.aclose()
        if pending:
            log.warning(
                "drained the usage spool of a removed worker slot",
                extra={"spool": str(path), "records": pending},
            )
