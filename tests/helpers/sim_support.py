"""Helpers of the simulate tests: a two-backend config and trace records."""

from __future__ import annotations

import copy
from typing import Any

from router_cli.simulate import Result, Simulation, TraceRecord, parse_world
from router_core import keys
from router_core.config import RouterConfig

from tests.helpers.support import ACME_KEY, GLOBEX_KEY, REVOKED_KEY

# 2026-03-02 09:00 UTC, a Monday morning.
T0 = 1_772_442_000
S = 1_000_000


def config_data() -> dict[str, Any]:
    return {
        "health": {"failure_threshold": 3, "open_s": 5, "probe_interval_s": 2, "ramp_s": 0},
        "backends": {
            "a": {"base_url": "http://127.0.0.1:1/v1", "read_timeout_s": 10},
            "b": {"base_url": "http://127.0.0.1:2/v1", "read_timeout_s": 10},
        },
        "models": {
            "chat": {"backends": [{"backend": "a", "weight": 3}, {"backend": "b", "weight": 1}]},
            "a-only": {"backends": [{"backend": "a"}]},
            "tiered": {"backends": [{"backend": "a"}, {"backend": "b", "tier": 1}]},
        },
        "prices": {
            "chat": {"input": 0.15, "output": 0.6},
            "a-only": {"input": 1, "output": 2},
            "tiered": {"input": 1, "output": 2},
        },
        "organizations": {
            "acme": {
                "keys": [
                    {"id": "acme1", "hash": keys.hash_key(ACME_KEY)},
                    {"id": "revoked1", "hash": keys.hash_key(REVOKED_KEY), "revoked": True},
                ]
            },
            "globex": {
                "models": ["chat"],
                "keys": [{"id": "globex1", "hash": keys.hash_key(GLOBEX_KEY)}],
            },
        },
    }


def with_org_limits(data: dict[str, Any], org: str, limits: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["organizations"][org]["limits"] = limits
    return data


def rec(
    t_s: float,
    model: str = "chat",
    *,
    key: str | None = "acme1",
    org: str | None = None,
    prompt: int = 100,
    completion: int = 50,
    max_tokens: int | None = None,
) -> TraceRecord:
    return TraceRecord(
        T0 * S + round(t_s * S), key, org, model, prompt, completion, max_tokens, "chat", 0
    )


def run(
    config: RouterConfig, records: list[TraceRecord], faults: str = "", seed: int = 0
) -> Result:
    world = parse_world(faults, config)
    return Simulation(config, world, seed).run(records)
