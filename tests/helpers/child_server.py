"""A server binary run as our own child process, for the real-service fixtures.

The Redis and Kafka fixtures share this: a free loopback port kept across
`stop()`/`kill()` and `start()` (so a test can take the service away from
running clients and bring it back), `pause()`/`resume()` to freeze it
(SIGSTOP/SIGCONT), a log file in a temporary directory whose tail explains a
failed start, and refusal to stop a shared external service.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from router_server.mock_backend.process import free_port, terminate


class ChildServerError(RuntimeError):
    pass


class ChildServer:
    """Subclasses say how to start the binary (`command`) and when it is up (`ready`)."""

    error: type[ChildServerError] = ChildServerError
    shared_reason = "the service is shared: it cannot be stopped"

    def __init__(
        self,
        binary: Path | None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    def command(self, workdir: str) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def controllable(self) -> bool:
        """Whether stop/kill/start work (not on a shared external service)."""
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
            self._dir = tempfile.TemporaryDirectory(prefix=f"{self.binary.name}-test-")
            self._log = (Path(self._dir.name) / "server.log").open("ab")
        command = self.command(self._dir.name)
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self.error(
                    f"{self.binary.name} exited with {self._proc.returncode}: {self._log_tail()}"
                )
            if self.ready():
                return self
            time.sleep(0.02)
        self.kill()
        raise self.error(f"{self.binary.name} on port {self.port} did not start in time")

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown would."""
        self._require_control()
        if self._proc is not None:
            self.resume()
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
        """SIGSTOP: the service stops answering; its connections and data stay."""
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
            raise self.error(self.shared_reason)

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        return (Path(self._dir.name) / "server.log").read_text(errors="replace")[-2000:]
