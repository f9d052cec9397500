"""Run the mock backend as a real child process, for tests and the benchmark."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Self

from .server import READY_PREFIX


class MockBackendError(RuntimeError):
    """The mock backend process did not start or was not running."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago; good enough for loopback tests."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_line(stream: IO[bytes], timeout: float) -> bytes | None:
    # A thread rather than select(): pipes are not selectable on Windows.
    lines: queue.Queue[bytes] = queue.Queue(maxsize=1)
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MockBackendProcess:
    """`python -m router_server.mock_backend` on a loopback port, as a context manager.

    `args` are extra CLI flags, e.g. `["--latency-ms", "50"]`; `--host` and
    `--port` are added here. The port is kept across `restart()`.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT`, for the `/_mock/*` control endpoints."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    @property
    def url(self) -> str:
        """`http://HOST:PORT/v1`, what an OpenAI client takes as `base_url`."""
        return self.base_url + "/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            raise MockBackendError("mock backend is already running")
        command = [sys.executable, "-m", "router_server.mock_backend"]
        command += ["--host", self.host, "--port", str(self.port), *self.args]
        env = {**os.environ, **self.env} if self.env is not None else None
        # The command is this interpreter running our own module, never user input.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)  # noqa: S603
        self._proc = proc
        assert proc.stdout is not None
        line = _read_line(proc.stdout, self.startup_timeout)
        if line is None or not line.decode(errors="replace").startswith(READY_PREFIX):
            self.kill()
            detail = "timed out" if line is None else f"exited with {proc.returncode}"
            raise MockBackendError(f"mock backend on port {self.port} did not start: {detail}")
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        proc = self._proc
        if proc is None:
            return None
        terminate(proc, timeout)
        self._close(proc)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: the backend vanishes without closing its connections cleanly."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._close(proc)

    def restart(self, args: Sequence[str] | None = None) -> Self:
        """Stop (if running) and start again on the same port, optionally with new flags."""
        self.stop()
        if args is not None:
            self.args = list(args)
        return self.start()

    def _close(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

    # Control endpoints, for tests that change a running backend.

    def _control(self, method: str, path: str, json: Any = None) -> Any:
        # Imported here so the server process, which imports this package, starts fast.
        import httpx

        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=5.0) as client:
            response = client.request(method, path, json=json)
            response.raise_for_status()
            return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/_mock/stats")
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change knobs at runtime, e.g. `configure(latency_ms=50, hang=None)`."""
        result: dict[str, Any] = self._control("POST", "/_mock/config", changes)
        return result

    def reset_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("POST", "/_mock/reset")
        return result

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
