"""The cluster and Sentinel fixtures themselves: what the store tests rely on."""

from __future__ import annotations

import functools

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from tests.helpers.redis_deployments import ClusterDeployment, SentinelDeployment, retry_until


def test_each_tag_lives_on_the_master_the_fixture_names(
    redis_cluster: ClusterDeployment, redis_cluster_url: str
) -> None:
    with RedisCluster.from_url(redis_cluster_url) as client:
        for master in range(len(redis_cluster.nodes)):
            key = "{" + redis_cluster.tag_on(master) + "}:probe"
            client.set(key, str(master))
            assert client.get_node_from_key(key).port == redis_cluster.nodes[master].port
            with redis_cluster.nodes[master].client() as node:
                assert node.get(key) == str(master).encode()


def test_a_killed_master_takes_only_its_own_slots(
    redis_cluster: ClusterDeployment, redis_cluster_url: str
) -> None:
    lost = 2
    with RedisCluster.from_url(redis_cluster_url, require_full_coverage=False) as client:
        client.set("{" + redis_cluster.tag_on(lost) + "}:probe", "before")
        redis_cluster.kill(lost)
        for master in range(len(redis_cluster.nodes)):
            key = "{" + redis_cluster.tag_on(master) + "}:probe"
            if master == lost:
                with pytest.raises(redis.RedisError):
                    client.set(key, "after")
            else:
                assert retry_until(functools.partial(client.set, key, "after"))


def test_restore_brings_a_killed_master_back_empty(redis_cluster: ClusterDeployment) -> None:
    redis_cluster.restore()
    key = "{" + redis_cluster.tag_on(1) + "}:probe"
    with redis_cluster.nodes[1].client() as node:
        node.set(key, "x")
    redis_cluster.kill(1)
    redis_cluster.restore()
    with RedisCluster.from_url(redis_cluster.url) as client:
        assert client.get(key) is None
        assert client.set(key, "y")


def test_a_sentinel_client_follows_the_failover(
    redis_sentinel: SentinelDeployment, redis_sentinel_url: str
) -> None:
    sentinel = Sentinel([s.address for s in redis_sentinel.sentinels], socket_timeout=2.0)
    client = sentinel.master_for("mymaster", socket_timeout=2.0)
    old = redis_sentinel.master.address
    assert client.set("probe", "before")
    client.execute_command("WAIT", 1, 10_000)
    redis_sentinel.kill_master()
    assert redis_sentinel.master.address != old
    # The replica had it: a failover after WAIT loses nothing.
    assert retry_until(lambda: client.get("probe")) == b"before"
    redis_sentinel.restore()
    assert sorted(n.info("replication")["role"] for n in redis_sentinel.data) == [
        "master", "slave",
    ]  # fmt: skip
    client.close()
