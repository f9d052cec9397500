"""Every store of the state layer through real Sentinels, before and after a failover.

The client is the router's own (`state.redis.mode: sentinel`, the URL naming
the Sentinels). After the master is killed and the Sentinels promote the
replica, the same client finds the new master: each store answers again,
and what was replicated before the failover (WAIT) is still there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import pytest

from router_core import key_lifecycle
from router_core.accounting.idempotency import Entry
from router_core.config_enums import RedisMode
from router_core.limits.admission import LimitKind
from router_core.limits.gcra import GcraLimit
from router_core.limits.ledger import QuotaSpec, RateSpec, Spec
from router_core.limits.windows import WindowKind
from router_core.overrides import new_override
from router_server.admin.audit import AuditEntry, Change
from router_server.admin.redis_store import RedisOverrideStore
from router_server.credentials.nonces import RedisNonces
from router_server.credentials.redis_keys import RedisKeyStore
from router_server.credentials.store import KeyChange, KeyEvent
from router_server.redis_limits import RedisLimitStore
from router_server.state.redis_health import redis_health
from router_server.usage.idempotency_store import RedisIdempotencyStore

from tests.helpers.redis_deployments import SETTLE_S, SentinelDeployment
from tests.helpers.redis_server import redis_client

pytestmark = pytest.mark.anyio
S = 1_000_000
NOW = 1_800_000_000.0
T = TypeVar("T")


async def eventually(call: Callable[[], Awaitable[T]]) -> T:
    """`call()` once it stops failing: the first calls after a failover may meet
    connections to the old master (each such failure is the caller's policy)."""
    with anyio.fail_after(SETTLE_S):
        while True:
            try:
                return await call()
            except Exception:  # StoreUnavailable, or a Redis error in a direct call
                await anyio.sleep(0.1)


async def test_every_store_works_through_sentinel_and_again_after_failover(
    redis_sentinel: SentinelDeployment, redis_sentinel_url: str
) -> None:
    client = redis_client(redis_sentinel_url, mode=RedisMode.SENTINEL, sentinel_master="mymaster")
    store = RedisLimitStore(client, timeout_s=5.0)
    idempotency = RedisIdempotencyStore(client, 5.0)
    key_store = RedisKeyStore(client, timeout_s=5.0)
    nonces = RedisNonces(client, timeout_s=5.0)
    overrides = RedisOverrideStore(client, timeout_s=5.0)

    async def use_every_store(round_: int) -> None:
        specs: list[Spec] = [
            RateSpec("org:acme:rps", LimitKind.RATE, GcraLimit(100, S, 100), 1),
            QuotaSpec("org:acme:requests", 100, WindowKind.DAY, 1),
        ]
        admitted = await store.admit(f"req-{round_}", specs)
        assert admitted.allowed
        await store.settle(admitted.holds, [1])
        assert await idempotency.claim(f"acme/key-{round_}", Entry("fp", "me"), 600) is None
        assert await nonces.claim("acme1", f"nonce-{round_}", 600)
        pick = random.Random(round_).choice
        made = key_lifecycle.create("acme", now=time.time(), actor="t", choice=pick)
        event = KeyEvent(f"aud_{round_}", 1.0, "t", KeyChange.CREATED, made.managed.key.id,
                         "acme", "test")  # fmt: skip
        await key_store.put([made.managed], event)
        override = new_override(
            id=f"ovr_{round_}", action="drain", backend="mock-a", reason="t", ttl_s=600,
            now=NOW, created_by="CN=t",
        )  # fmt: skip
        audit = AuditEntry(f"aud_{round_}", NOW, "CN=t", Change.CREATED, override, "t")
        await overrides.put(override, audit)

    try:
        assert (await redis_health(client, 5.0))["state"] == "ok"
        await use_every_store(1)
        # Replicated before the master goes: a failover then loses none of it.
        await client.execute_command("WAIT", 1, 10_000)
        old = redis_sentinel.master.address
        await anyio.to_thread.run_sync(redis_sentinel.kill_master)
        assert redis_sentinel.master.address != old

        await eventually(lambda: use_every_store(2))
        assert (await redis_health(client, 5.0))["state"] == "ok"
        assert await idempotency.claim("acme/key-1", Entry("fp", "you"), 600) == Entry("fp", "me")
        assert not await nonces.claim("acme1", "nonce-1", 600)
        assert len(await key_store.load()) == 2
        assert {o.id for o in await overrides.load(NOW)} == {"ovr_1", "ovr_2"}
    finally:
        await client.aclose()
