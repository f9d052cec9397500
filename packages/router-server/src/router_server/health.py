"""Backend reachability, from passive results and active probes.

A deliberately small model for readiness: each backend is reachable, not
reachable, or not yet known. The circuit breaker of the routing engine will
replace it; readiness only needs to know whether every model can be served.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import attrs

from router_core.config import RouterConfig
from router_server.backends import BackendClient


@attrs.define
class Health:
    reachable: dict[str, bool | None] = attrs.field(factory=dict)

    def record(self, backend: str, ok: bool) -> None:
        self.reachable[backend] = ok

    def unserved_models(self, config: RouterConfig) -> list[str]:
        """Models none of whose backends is known to be reachable."""
        return sorted(
            name
            for name, model in config.models.items()
            if not any(self.reachable.get(t.backend) for t in model.backends)
        )


async def probe_all(health: Health, clients: Mapping[str, BackendClient], timeout_s: float) -> None:
    async def one(client: BackendClient) -> None:
        health.record(client.name, await client.probe(timeout_s))

    async with anyio.create_task_group() as tg:
        for client in clients.values():
            tg.start_soon(one, client)


async def probe_forever(
    health: Health, clients: Mapping[str, BackendClient], interval_s: float, timeout_s: float
) -> None:
    while True:
        await anyio.sleep(interval_s)
        await probe_all(health, clients, timeout_s)
