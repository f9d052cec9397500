"""Run the router as a child process: for the demo, the tests and the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from router_server.mock_backend.process import free_port, terminate


class RouterProcessError(RuntimeError):
    pass


class RouterProcess:
    """`python -m router_server --config FILE --port PORT`, ready when /healthz answers."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 20.0,
        log: IO[bytes] | int | None = subprocess.DEVNULL,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.config_path = str(config_path)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.log = log
        self.command_prefix = list(command_prefix)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        command = [
            *self.command_prefix, sys.executable, "-m", "router_server",
            "--config", self.config_path, "--host", self.host, "--port", str(self.port),
            *self.args,
        ]  # fmt: skip
        # Our own interpreter and module; arguments come from the caller's code.
        self._proc = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=self.log, env=self.env
        )
        if self._answers_200("/v1/status/healthz", self.startup_timeout):
            return self
        self.kill()
        raise RouterProcessError(f"router on port {self.port} did not start in time")

    def wait_ready(self, timeout: float = 15.0) -> bool:
        """Whether /readyz says ready within `timeout` seconds."""
        return self._answers_200("/v1/status/readyz", timeout)

    def _answers_200(self, path: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise RouterProcessError(f"router exited with {code}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        terminate(proc, timeout)
        self._proc = None
        return proc.returncode

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
