"""`/v1/status`: every component with a state, within a bounded time.

Rules:
- Each component reports `state`: "ok", "degraded" or "down" (or
  "disabled" when not configured). The top-level status is "ok" only when
  every component is ok or disabled.
- Probes that wait on a dependency (Redis) run concurrently, each bounded by
  `PROBE_TIMEOUT_S`; a dependency that hangs is reported "down" with the
  reason "timeout", so the whole answer stays within a second. A Redis
  Cluster that cannot serve some slots is "degraded" (`state.redis_health`).
- Everything else is read from in-memory state (breakers, spool, exporter).
"""

from __future__ import annotations

from typing import Any

from router_server.state.layer import StateLayer

PROBE_TIMEOUT_S = 0.4


def _backend_state(health: dict[str, Any]) -> str:
    # Only a closed circuit takes client requests: half-open waits for its trial probe.
    return "ok" if health["available"] else "down"


async def redis_component(stores: StateLayer) -> dict[str, Any]:
    if stores.redis is None:
        return {"state": "disabled"}
    used_for = ["limits", "idempotency", "keys", "nonces", "overrides"]
    health = await stores.health(PROBE_TIMEOUT_S)
    return {
        **health,
        "mode": str(stores.settings.redis.mode),
        "used_for": used_for,
        # The request path's calls: pipelined, and whether it is taken for down now.
        "calls": stores.status(),
    }


def kafka_component(usage: dict[str, Any]) -> dict[str, Any]:
    kafka = usage.get("kafka")
    if kafka is None:
        return {"state": "disabled"}
    return {"state": "ok" if kafka["connected"] else "down", **kafka}


def spool_component(usage: dict[str, Any]) -> dict[str, Any]:
    spool = usage.get("spool") or {}
    if not spool:
        return {"state": "disabled"}
    if not spool.get("accepting", True):
        state = "down"
    elif spool.get("fill_ratio", 0) >= 0.5 or spool.get("write_failures", 0):
        state = "degraded"
    else:
        state = "ok"
    return {"state": state, **spool}


def backends_component(described: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"state": _backend_state(h), **h} for name, h in described.items()}


def overall(components: dict[str, Any], unserved_models: list[str]) -> str:
    states = [c["state"] for c in components.values() if isinstance(c, dict) and "state" in c]
    states += [b["state"] for b in components["backends"].values()]
    if unserved_models or any(s in ("down", "degraded") for s in states):
        return "degraded"
    return "ok"
