"""How the state layer's Redis is: "ok", "degraded" or "down", within a bound.

Rules:
- standalone and Sentinel: one PING (through Sentinel, to the current
  master). An answer is ok; anything else is down.
- cluster: CLUSTER INFO on every master the client knows, concurrently,
  each bounded by the same timeout. Ok when every master answers and each
  says `cluster_state:ok` with all 16384 slots ok; degraded when some
  master does not answer or one counts slots it cannot serve (the
  organisations whose hash tags fall there get the limits' failure policy,
  the others are served exactly); down when no master answers.
- The report carries counts and error class names, never an address or a
  password (a client's error text may carry an address).
"""

from __future__ import annotations

from typing import Any

import anyio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from router_server.state.redis import RedisClient

SLOTS = 16384


async def redis_health(client: RedisClient, timeout_s: float) -> dict[str, Any]:
    if isinstance(client, RedisCluster):
        return await _cluster_health(client, timeout_s)
    try:
        with anyio.fail_after(timeout_s):
            await client.ping()
    except TimeoutError:
        return {"state": "down", "error": f"timeout after {timeout_s:g} s"}
    except (RedisError, OSError) as exc:
        return {"state": "down", "error": type(exc).__name__}
    return {"state": "ok"}


async def _cluster_health(client: RedisCluster, timeout_s: float) -> dict[str, Any]:
    try:
        with anyio.fail_after(timeout_s):
            await client.initialize()
    except TimeoutError:
        return {"state": "down", "error": f"timeout after {timeout_s:g} s"}
    except (RedisError, OSError) as exc:
        return {"state": "down", "error": type(exc).__name__}
    masters = client.get_primaries()
    infos: dict[str, dict[str, str] | str] = {}

    async def ask(node: ClusterNode) -> None:
        try:
            with anyio.fail_after(timeout_s):
                raw = await client.cluster_info(target_nodes=node)
            infos[node.name] = {str(k): str(v) for k, v in dict(raw).items()}
        except TimeoutError:
            infos[node.name] = "timeout"
        except (RedisError, OSError) as exc:
            infos[node.name] = type(exc).__name__

    async with anyio.create_task_group() as tg:
        for node in masters:
            tg.start_soon(ask, node)
    answered = [info for info in infos.values() if isinstance(info, dict)]
    errors = sorted({info for info in infos.values() if isinstance(info, str)})
    # The fewest slots any master counts ok: a master's own view lags a peer's loss.
    slots_ok = min((_int(info.get("cluster_slots_ok")) for info in answered), default=0)
    # A master that does not answer cannot serve its slots, whatever its peers say yet.
    lost = {name for name, info in infos.items() if not isinstance(info, dict)}
    table = client.nodes_manager.slots_cache
    reachable = sum(1 for nodes in table.values() if nodes and nodes[0].name not in lost)
    slots_served = min(slots_ok, reachable)
    report: dict[str, Any] = {
        "masters": len(masters),
        "masters_unreachable": len(masters) - len(answered),
        "slots_served": slots_served,
    }
    if errors:
        report["error"] = ", ".join(errors)
    if not answered:
        return {"state": "down", **report}
    healthy = slots_served == SLOTS and all(i.get("cluster_state") == "ok" for i in answered)
    return {"state": "ok" if healthy else "degraded", **report}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
