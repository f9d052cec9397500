"""`router serve --workers N`: a small supervisor, and N workers sharing the listener.

Rules:
- The supervisor binds the listeners (public, and admin if configured) once;
  every worker inherits the same sockets and serves them with hypercorn
  (`fd://`). The kernel gives each connection to one worker's accept, and a
  connection waiting in the shared backlog outlives any one worker
  (SO_REUSEPORT would give each worker a backlog of its own, lost with it).
  hypercorn's own workers mode is not used: it loads the app by import path
  and replaces no worker that dies, and the router's start-up (the config,
  the admin listener on the same state, the start-up refusals) is its own.
- Workers are `python -m router_server` processes, spawned rather than
  forked: nothing of the supervisor (no thread, no client) leaks into them.
  The supervisor opens no store and holds no request.
- Each worker has a slot, 0 to N-1, for the life of the group (see
  `router_core.workers`): its own usage spool, its own private socket for the
  group's /metrics (`group`). A worker that exits while the group runs is
  replaced in its slot; the replacement opens the slot's spool and drains
  what the dead one appended (the ledger and Kafka dedupe by record id).
  A slot that keeps failing before it is ready is retried with backoff.
  Slots a smaller group no longer has are drained by worker 0 at start-up
  (`usage.setup.drain_removed_slots`).
- A worker that exits before the whole group was ever ready is a start-up
  failure (a store down, a spool that cannot be opened): the others are
  stopped and the supervisor exits with that worker's code, its message
  already on stderr.
- Signals: SIGTERM or SIGINT stops every worker gracefully (each finishes
  its requests and drains its spool) and the supervisor exits 0; SIGHUP is
  passed on to every worker, each of which reloads the file. Workers ignore
  SIGHUP until their app listens for it: a worker still starting reads the
  file anyway.
- Each worker holds the read end of a lifeline pipe whose write end only the
  supervisor has: if the supervisor is killed the workers see it close and
  shut down gracefully, never left holding the port.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import attrs

from router_server.exit_codes import Exit

log = logging.getLogger("router.workers")

_STOP_TIMEOUT_S = 60.0  # hypercorn's graceful timeout, then the spool's drain
_MAX_BACKOFF_S = 30.0


# cgroup v2's CPU bandwidth limit of this process's group (a container's CPU limit).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may run on: its affinity (which taskset and
    container CPU sets narrow), and no more than its cgroup's CPU limit rounded
    up (a pod limited to 2 CPUs on a 64-core node runs 2 workers, not 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max)
    return cores if limit is None else max(1, min(cores, limit))


def cgroup_cpu_limit(cpu_max: Path = CPU_MAX) -> int | None:
    """`cpu.max`'s quota over its period, rounded up; None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket the workers inherit (OSError if it cannot be bound)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it (hypercorn sets it only on sockets it binds).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


@attrs.frozen
class WorkerSpec:
    """What a worker is told on its command line (`--worker`): its slot, the
    group's size, the descriptors it inherits and the group's run directory."""

    slot: int
    count: int
    public_fd: int
    admin_fd: int  # -1: no admin listener
    ready_fd: int
    lifeline_fd: int
    run_dir: str

    def render(self) -> str:
        return ":".join(str(v) for v in attrs.astuple(self))

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        *numbers, run_dir = text.split(":", 6)
        slot, count, public_fd, admin_fd, ready_fd, lifeline_fd = (int(n) for n in numbers)
        return cls(slot, count, public_fd, admin_fd, ready_fd, lifeline_fd, run_dir)


@attrs.define
class _Worker:
    slot: int
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    # Exits in a row before being ready (the backoff), and when to start again.
    failures: int = 0
    start_at: float = 0.0


class Supervisor:
    """Runs `count` workers of `command` (the worker's arguments, without `--worker`)."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        public: socket.socket,
        admin: socket.socket | None,
        announce: Callable[[], None],
    ) -> None:
        self.command = list(command)
        self.public = public
        self.admin = admin
        self.announce = announce
        self.workers = [_Worker(slot) for slot in range(count)]
        self.replaced = 0
        self._stopping = False
        self._reloads = 0
        self._ready_r, self._ready_w = os.pipe()
        self._lifeline_r, self._lifeline_w = os.pipe()
        self.run_dir = Path(tempfile.mkdtemp(prefix="router-workers-"))

    # -- signals ---------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reloads += 1

    # -- workers ---------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        spec = WorkerSpec(
            worker.slot,
            len(self.workers),
            self.public.fileno(),
            -1 if self.admin is None else self.admin.fileno(),
            self._ready_w,
            self._lifeline_r,
            str(self.run_dir),
        )
        fds = [self.public.fileno(), self._ready_w, self._lifeline_r]
        if self.admin is not None:
            fds.append(self.admin.fileno())
        # Our own interpreter and module; the arguments are the supervisor's own.
        worker.proc = subprocess.Popen(  # noqa: S603
            [*self.command, "--worker", spec.render()],
            pass_fds=fds,
            # Its own process group: a terminal's Ctrl-C reaches the supervisor,
            # which stops the workers in order (and never mistakes it for a crash).
            start_new_session=True,
        )
        worker.ready = False
        log.info("worker started", extra={"worker": worker.slot, "pid": worker.proc.pid})

    def _read_ready(self, timeout_s: float) -> None:
        readable, _, _ = select.select([self._ready_r], [], [], timeout_s)
        if not readable:
            return
        for line in os.read(self._ready_r, 65_536).decode().split():
            slot_text, _, pid_text = line.partition(",")
            if not (slot_text.isdigit() and pid_text.isdigit()):
                continue
            slot, pid = int(slot_text), int(pid_text)
            if slot < len(self.workers):
                worker = self.workers[slot]
                if worker.proc is not None and worker.proc.pid == pid:
                    worker.ready = True
                    worker.failures = 0

    def _reap(self, worker: _Worker, code: int, group_ready: bool) -> int | None:
        """Handle a worker's exit; a start-up failure's exit code for the group."""
        pid = worker.proc.pid if worker.proc is not None else None
        worker.proc = None
        if not group_ready:
            log.error(
                "worker exited during start-up; stopping the group",
                extra={"worker": worker.slot, "pid": pid, "code": code},
            )
            return code if code > 0 else Exit.UNAVAILABLE
        delay = 0.0
        if not worker.ready:
            worker.failures += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** (worker.failures - 1))
        worker.ready = False
        worker.start_at = time.monotonic() + delay
        self.replaced += 1
        log.error(
            "worker exited; replacing it (its usage spool is drained by the replacement)",
            extra={"worker": worker.slot, "pid": pid, "code": code, "restart_in_s": delay},
        )
        return None

    def _forward_reload(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGHUP)
        log.warning("SIGHUP passed on to every worker", extra={"workers": len(self.workers)})

    def _stop_all(self) -> None:
        live = [w.proc for w in self.workers if w.proc is not None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        for worker in self.workers:
            worker.proc = None

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop),
                (signal.SIGINT, self._on_stop),
                (signal.SIGHUP, self._on_hup),
            )
        }
        try:
            return self._loop()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self._ready_r, self._ready_w, self._lifeline_r, self._lifeline_w):
                os.close(fd)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _loop(self) -> int:
        group_ready = False
        reloads = 0
        for worker in self.workers:
            self._spawn(worker)
        while not self._stopping:
            if self._reloads != reloads:
                reloads = self._reloads
                self._forward_reload()
            self._read_ready(0.2)
            if not group_ready and all(w.ready for w in self.workers):
                group_ready = True
                self.announce()
            for worker in self.workers:
                if worker.proc is None:
                    if time.monotonic() >= worker.start_at and not self._stopping:
                        self._spawn(worker)
                    continue
                code = worker.proc.poll()
                if code is not None and not self._stopping:
                    failed = self._reap(worker, code, group_ready)
                    if failed is not None:
                        return failed
        return Exit.OK
