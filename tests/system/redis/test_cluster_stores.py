"""Every store of the state layer on a real 3-master Redis Cluster.

Each operation's keys share one hash slot (the cluster would refuse them
otherwise), an organisation's limit and idempotency keys sit on one master,
and a change feed outlives the master it was subscribed on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from functools import partial

import anyio
import pytest
import redis

from router_core.accounting.idempotency import Entry
from router_core.config_enums import RedisMode
from router_core.limits.admission import LimitKind
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import BudgetSpec, QuotaSpec, RateSpec, Spec
from router_core.limits.windows import WindowKind
from router_core.overrides import new_override
from router_server.admin.audit import AuditEntry, Change
from router_server.admin.redis_store import RedisOverrideStore
from router_server.credentials.nonces import RedisNonces
from router_server.redis_limits import RedisLimitStore
from router_server.state.redis import follow_channel
from router_server.usage.idempotency_store import RedisIdempotencyStore

from tests.helpers.redis_deployments import SETTLE_S, ClusterDeployment
from tests.helpers.redis_server import redis_client

S = 1_000_000
NOW = 1_800_000_000.0
pytestmark = pytest.mark.anyio


def keys_on(node: redis.Redis, tag: str) -> int:
    return len(node.keys("*{" + tag + "}*"))


async def test_an_organisations_limits_and_idempotency_keys_live_on_one_master(
    redis_cluster: ClusterDeployment, redis_cluster_url: str
) -> None:
    client = redis_client(redis_cluster_url, mode=RedisMode.CLUSTER)
    store = RedisLimitStore(client, timeout_s=5.0)
    idempotency = RedisIdempotencyStore(client, 5.0)
    try:
        for master in range(len(redis_cluster.nodes)):
            org = redis_cluster.tag_on(master)
            specs: list[Spec] = [
                RateSpec(f"org:{org}:rps", LimitKind.RATE, GcraLimit(10, S, 10), 1),
                QuotaSpec(f"org:{org}:requests", 10, WindowKind.DAY, 1),
                BudgetSpec(f"org:{org}:usd", 1_000, WindowKind.MONTH, 100),
            ]
            admitted = await store.admit(f"req-{master}", specs)
            assert admitted.allowed
            await store.settle(admitted.holds, [1, 40])
            assert await idempotency.claim(f"{org}/key-1", Entry("fp", "me"), 60) is None
            assert await idempotency.claim(f"{org}/key-1", Entry("fp", "you"), 60) == Entry(
                "fp", "me"
            )
            for index, node in enumerate(redis_cluster.nodes):
                with node.client() as direct:
                    # rate, quota, budget (+ its holds), idempotency: all on `master`.
                    assert (keys_on(direct, org) >= 4) == (index == master), (master, index)
        assert await store.open_holds() == 0
    finally:
        await client.aclose()


async def test_reap_finds_the_holds_on_every_master(
    redis_cluster: ClusterDeployment, redis_cluster_url: str
) -> None:
    client = redis_client(redis_cluster_url, mode=RedisMode.CLUSTER)
    store = RedisLimitStore(client, timeout_s=5.0, hold_ttl_s=60)
    try:
        masters = range(len(redis_cluster.nodes))
        budgets = [
            BudgetSpec(f"org:{redis_cluster.tag_on(m)}:usd", 1_000, WindowKind.TOTAL, 100)
            for m in masters
        ]
        admitted = [await store.admit(f"lost-{m}", [budgets[m]]) for m in masters]
        assert await store.open_holds() == len(masters)
        now = max(a.now_us for a in admitted)
        assert await store.reap(now) == 0
        assert await store.reap(now + 60 * S) == len(masters)
        assert await store.open_holds() == 0
        for a in admitted:
            assert await store.get(a.holds[0].key) == BudgetState(0, 0)
    finally:
        await client.aclose()


async def test_nonces_on_every_master(
    redis_cluster: ClusterDeployment, redis_cluster_url: str
) -> None:
    client = redis_client(redis_cluster_url, mode=RedisMode.CLUSTER)
    nonces = RedisNonces(client, timeout_s=5.0)
    try:
        masters = set()
        for n in range(30):
            key_id, nonce = f"key{n}", f"nonce-{n}"
            masters.add(redis_cluster.master_of(f"router:nonce:{key_id}:{nonce}"))
            assert await nonces.claim(key_id, nonce, 60)
            assert not await nonces.claim(key_id, nonce, 60)
        assert masters == {0, 1, 2}
    finally:
        await client.aclose()


def _seed_subscribing_on(cluster: ClusterDeployment, wanted: Callable[[int], bool]) -> int:
    """A seed for `follow_channel`'s rng whose first subscription goes to a master
    `wanted` accepts (the feed takes masters in turn, sorted by name)."""
    by_name = sorted(range(len(cluster.nodes)), key=lambda i: f"127.0.0.1:{cluster.nodes[i].port}")
    for seed in range(1000):
        first = random.Random(seed).randrange(1 << 16) % len(by_name)
        if wanted(by_name[first]):
            return seed
    raise AssertionError("no seed")  # pragma: no cover


async def test_a_change_feed_outlives_the_master_it_was_subscribed_on(
    redis_cluster: ClusterDeployment, redis_cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer_client = redis_client(redis_cluster_url, mode=RedisMode.CLUSTER)
    reader_client = redis_client(redis_cluster_url, mode=RedisMode.CLUSTER)
    writer = RedisOverrideStore(writer_client, timeout_s=5.0)
    home = redis_cluster.master_of("router:{overrides}")
    # Lose the master the feed listens on, neither the overrides' nor the startup node.
    lost = next(i for i in range(1, len(redis_cluster.nodes)) if i != home)
    seed = _seed_subscribing_on(redis_cluster, lambda i: i == lost)
    changes = 0

    def on_change() -> None:
        nonlocal changes
        changes += 1

    async def changes_beyond(seen: int) -> int:
        with anyio.fail_after(SETTLE_S):
            while changes <= seen:
                await anyio.sleep(0.02)
        return changes

    async def put(n: int) -> None:
        made = new_override(
            id=f"ovr_{n}", action="drain", backend="mock-a", reason="test", ttl_s=600,
            now=NOW, created_by="CN=t",
        )  # fmt: skip
        await writer.put(made, AuditEntry(f"aud_{n}", NOW, "CN=t", Change.CREATED, made, "t"))

    caplog.set_level(logging.WARNING, logger="router.state")
    try:
        async with anyio.create_task_group() as tg:
            feed = (reader_client, writer.channel, on_change, "override")
            tg.start_soon(partial(follow_channel, *feed, rng=random.Random(seed)))
            seen = await changes_beyond(0)  # subscribed (a change may have been missed)
            await put(1)
            seen = await changes_beyond(seen)
            await anyio.to_thread.run_sync(redis_cluster.kill, lost)
            with anyio.fail_after(SETTLE_S):
                while "override change feed lost" not in caplog.text:
                    await anyio.sleep(0.02)
            seen = await changes_beyond(seen)  # resubscribed, on another master
            await put(2)  # on the overrides' own master, which serves
            await changes_beyond(seen)
            tg.cancel_scope.cancel()
    finally:
        await writer_client.aclose()
        await reader_client.aclose()
