"""What a routing strategy costs per request: the live runs' config, and the decision alone.

`bench.py --routing on|only` sends the same prefix-heavy chat (a shared
system prompt of PREFIX_CHARS, so affinity hashes its full `max_blocks`) at
16 connections through one router to two models over the same two backends:
`bench-fleet-weighted` (weighted) and `bench-fleet-affinity` (least_load with
prefix affinity), alternating runs, and reports the router CPU per request
of each and their difference: what the strategy costs live, the target
being at most 30 us.

A difference of a few us is near the noise of a shared machine's CPU
accounting, so `decision_costs` also times the decision alone in this
process, as the router makes it: the backends' views from `Health`, then
weighted `decide`, or affinity's blocks, `decide` with them and the record
of where the request went.
"""

from __future__ import annotations

import random
import time
from typing import Any

from router_core import routing
from router_core.config_codec import structure
from router_core.requests import Operation, validate_openai
from router_server.affinity import Affinity
from router_server.health import Health

WEIGHTED_MODEL = "bench-fleet-weighted"
AFFINITY_MODEL = "bench-fleet-affinity"
FLEET = ("fleet-1", "fleet-2")
# 8 blocks of the default 512 characters, each hashed (the default max_blocks is 64).
PREFIX_CHARS = 4096
SYSTEM_PROMPT = ("You are the assistant of a fleet benchmark; answer briefly. " * 80)[:PREFIX_CHARS]


def fleet_config(base_url: str, backend: dict[str, Any]) -> dict[str, Any]:
    """The backends and models of the routing runs (both backends: one mock)."""
    targets = [{"backend": name, "model": "mock-gpt"} for name in FLEET]
    return {
        "backends": {name: {"base_url": base_url, **backend} for name in FLEET},
        "models": {
            WEIGHTED_MODEL: {"backends": targets},
            AFFINITY_MODEL: {"backends": targets, "strategy": "least_load", "affinity": {}},
        },
    }


def request_messages(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


def decision_costs(n: int = 20_000) -> dict[str, float]:
    """Microseconds per decision, weighted and least_load + affinity, in-process."""
    data = {
        **fleet_config("http://fleet.invalid/v1", {}),
        "organizations": {"bench": {"models": ["*"]}},
    }
    config = structure(data)
    health = Health(lambda: config)
    affinity = Affinity(lambda: config)
    rng = random.Random(1)
    body = {"model": AFFINITY_MODEL, "messages": request_messages("Say hello."), "max_tokens": 16}
    inference = validate_openai(Operation.CHAT, body)

    def weighted() -> None:
        model = config.models[WEIGHTED_MODEL]
        routing.decide(WEIGHTED_MODEL, model, "bench", None, rng, health.views())

    def with_affinity() -> None:
        model = config.models[AFFINITY_MODEL]
        pinning = affinity.request(AFFINITY_MODEL, model, inference, {}, "bench")
        choice = routing.decide(
            AFFINITY_MODEL, model, "bench", None, rng, health.views(), affinity=pinning.routing
        )
        affinity.served(pinning, choice.candidates[0].backend)

    costs = {}
    for name, decide in (("weighted", weighted), ("least_load_affinity", with_affinity)):
        for _ in range(n // 10):  # warm up
            decide()
        started = time.process_time()
        for _ in range(n):
            decide()
        costs[name] = round((time.process_time() - started) * 1e6 / n, 2)
    costs["difference"] = round(costs["least_load_affinity"] - costs["weighted"], 2)
    return costs


if __name__ == "__main__":
    print(decision_costs())
