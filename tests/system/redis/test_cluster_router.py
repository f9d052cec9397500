"""Two routers on one real 3-master Redis Cluster, then one master lost.

Every organisation's keys carry its name as the hash tag, so each one lives
on one master. While all three serve, limits are exact per organisation
across both routers, whichever master holds it. With one master killed, the
organisations on it get the documented failure policy (rate limits fail open
to a local share, quotas refuse with 503 `limits_unavailable`, idempotency
503), the organisations on the other two stay exact, and `/v1/status` says
the cluster is degraded while readiness stays (with the degradation named).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from starlette.testclient import TestClient

from router_core import keys
from router_server.mock_backend import MockBackendProcess

from tests.helpers.redis_deployments import ClusterDeployment
from tests.helpers.router_fixture import AppFactory
from tests.helpers.support import auth, redis_state

Mocks = tuple[MockBackendProcess, MockBackendProcess]
URL_ENV = "ROUTER_REDIS_URL"
RATE = 4  # requests per hour: both routers together admit exactly this many
QUOTA = 3  # requests per day
SENT = 7  # requests each organisation sends, alternating between the routers
LOST = 1  # the master killed (not 0, the client's startup node)


class Org:
    def __init__(self, name: str, key_id: str, limits: dict[str, Any]) -> None:
        self.name = name
        self.key = keys.format_key(key_id, "C" * 32)
        self.config = {
            "models": ["*"],
            "keys": [{"id": key_id, "hash": keys.hash_key(self.key)}],
            "limits": limits,
        }


def orgs_on_each_master(cluster: ClusterDeployment, phase: str) -> dict[tuple[int, str], Org]:
    """A rate-limited and a quota-limited organisation on each master."""
    found: dict[tuple[int, str], Org] = {}
    for master in range(len(cluster.nodes)):
        rate = cluster.tag_on(master, f"rate{phase}-")
        quota = cluster.tag_on(master, f"quota{phase}-")
        found[master, "rate"] = Org(
            rate, f"r{phase}{master}key", {"requests": {"rate": RATE, "per": "hour"}}
        )
        found[master, "quota"] = Org(
            quota, f"q{phase}{master}key", {"quotas": {"requests_per_day": QUOTA}}
        )
    return found


def chat() -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def send(routers: list[TestClient], org: Org, count: int = SENT) -> Counter[int | str]:
    """`count` requests, alternating routers; 503s counted by problem code."""
    seen: Counter[int | str] = Counter()
    for i in range(count):
        answer = routers[i % 2].post("/v1/chat/completions", json=chat(), headers=auth(org.key))
        if answer.status_code == 503:
            seen[answer.json()["error"]["code"]] += 1
        else:
            seen[answer.status_code] += 1
    return seen


def test_limits_stay_exact_per_master_and_a_lost_master_costs_only_its_organisations(
    make_client: AppFactory,
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    mocks: Mocks,
    redis_cluster: ClusterDeployment,
    redis_cluster_url: str,
) -> None:
    before = orgs_on_each_master(redis_cluster, "a")
    after = orgs_on_each_master(redis_cluster, "b")
    data = {
        **config_data,
        "state": redis_state(URL_ENV, redis={"mode": "cluster"}),
        # Generous: a decision must not fall back for being slow on a loaded machine.
        "limits": {"timeout_ms": 5000, "expected_replicas": 2},
        "organizations": {org.name: org.config for org in [*before.values(), *after.values()]},
    }
    backend_env[URL_ENV] = redis_cluster_url
    routers = [make_client(data), make_client(data)]
    assert routers[0].get("/v1/status").json()["components"]["redis"]["state"] == "ok"

    for (master, kind), org in before.items():
        denied = 429 if kind == "rate" else 402
        limit = RATE if kind == "rate" else QUOTA
        assert send(routers, org) == {200: limit, denied: SENT - limit}, (master, kind)
    assert all(r.get("/v1/status").json()["limits"]["failure_decisions"] == 0 for r in routers)

    redis_cluster.kill(LOST)
    for (master, kind), org in after.items():
        seen = send(routers, org)
        if master != LOST:
            denied = 429 if kind == "rate" else 402
            limit = RATE if kind == "rate" else QUOTA
            assert seen == {200: limit, denied: SENT - limit}, (master, kind)
        elif kind == "rate":
            # Fail open: each router decides alone against its share, RATE / 2.
            assert seen == {200: RATE, 429: SENT - RATE}, seen
        else:
            assert seen == {"limits_unavailable": SENT}, seen
    decisions = sum(r.get("/v1/status").json()["limits"]["failure_decisions"] for r in routers)
    assert decisions > 0

    # Idempotency keys live with their organisation's limits.
    for master in range(len(redis_cluster.nodes)):
        org = after[master, "rate"]
        headers = {**auth(org.key), "idempotency-key": uuid.uuid4().hex}
        answer = routers[0].post("/v1/chat/completions", json=chat(), headers=headers)
        if master == LOST:
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "idempotency_unavailable"
        else:  # the rate limit is spent: the claim was made, then released on 429
            assert answer.status_code == 429, (master, answer.text)

    status = routers[1].get("/v1/status").json()
    redis = status["components"]["redis"]
    assert status["status"] == "degraded"
    assert redis["state"] == "degraded"
    assert redis["masters_unreachable"] == 1
    low, high = redis_cluster.ranges[LOST]
    assert redis["slots_served"] == 16384 - (high - low + 1)
    ready = routers[1].get("/v1/status/readyz")
    assert ready.status_code == 200
    assert ready.json()["degraded"] == {"redis": "degraded"}
