"""`router-server`: load the config, then serve the app with hypercorn on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import LifespanFailureError

from router_core.config import AdminListener, RouterConfig
from router_core.config_codec import ConfigInvalid
from router_core.workers import WorkersRefused, worker_count
from router_server import (
    DISTRIBUTION,
    config_file,
    environment,
    gc_watch,
    http_h11,
    http_idle,
    logs,
)
from router_server.admin.app import SharedRouter, create_admin_app
from router_server.admin.tls import admin_hypercorn_config
from router_server.app import create_app
from router_server.exit_codes import Exit
from router_server.group import WorkerSlot
from router_server.pipeline import RouterState
from router_server.usage.spool import SpoolError
from router_server.workers import Supervisor, WorkerSpec, listen_socket, usable_cores

log = logging.getLogger("router.server")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the problem (argparse's default adds the whole usage first).
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {value!r}: use one of {', '.join(LOG_LEVELS)}"
        )
    return value.lower()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="router-server", description=__doc__)
    parser.add_argument("--version", action="version", version=f"router-server {_version()}")
    default_config = environment.config_path(os.environ)
    parser.add_argument(
        "--config",
        required=default_config is None,
        default=default_config,
        help=f"path to the YAML config file (default: ${environment.CONFIG})",
    )
    parser.add_argument(
        "--host", help=f"override listeners.public.host (default: ${environment.HOST})"
    )
    parser.add_argument(
        "--port", type=int, help=f"override listeners.public.port (default: ${environment.PORT})"
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default="info",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: info); the access log's lines are info, "
        "so warning and above leave them out too",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log a line per request"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="router processes sharing the listener (default: server.workers, else one per "
        "usable core with state.store redis, one with the embedded store)",
    )
    # Internal: set by the supervisor on each worker it starts (see `workers`).
    parser.add_argument("--worker", type=WorkerSpec.parse, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def hypercorn_config(config: RouterConfig, host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{host}:{port}"]
    hc.accesslog = None  # the router writes its own structured line per request
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our JSON handler
    hc.keep_alive_timeout = config.server.keep_alive_timeout_s
    # Connections waiting to be accepted (hypercorn's default, 100, drops a
    # burst's SYNs: clients then wait a second to retry); the kernel caps it
    # at net.core.somaxconn.
    hc.backlog = 4096
    hc.graceful_timeout = 10
    # hypercorn's own cap must not undercut the router's (which answers 413 itself).
    hc.h11_max_incomplete_size = 64 * 1024
    return hc


class CannotListen(Exception):
    """A listener's address could not be bound (in use, or not this host's)."""


class CannotStart(Exception):
    """The app could not open its resources (its lifespan failed to start)."""


def _why_not_started(failure: LifespanFailureError) -> str:
    """The app's own reason, in one line. Starlette reports a failed start to
    hypercorn while handling the app's exception, so that is the context of
    hypercorn's `LifespanFailureError` (whose text is a whole traceback)."""
    cause = failure.__context__
    if isinstance(cause, SpoolError):
        return str(cause)
    # Not a failure an operator is expected to fix from the message alone: keep
    # the traceback for --log-level debug, out of the one line.
    log.debug("the app failed to start", exc_info=cause or failure)
    what = f"{type(cause).__name__}: {cause}" if cause is not None else "unknown error"
    return f"the app could not open its resources ({what}); --log-level debug shows where"


def _cannot_bind(host: str, port: int) -> str | None:
    """Why hypercorn would fail to bind `host:port`, found before anything starts
    (a bind failing inside hypercorn leaves its lifespan task to be cancelled)."""
    if port == 0:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


async def _serve(
    app: object, hc: HypercornConfig, stop: asyncio.Event, failures: list[str]
) -> None:
    try:
        await serve(app, hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    except LifespanFailureError as exc:
        if not str(exc).startswith("Lifespan failure in startup"):
            raise  # a failed shutdown is not a start-up refusal
        # Raised, not recorded: the task group then cancels the admin listener,
        # which waits for this app's state.
        raise CannotStart(_why_not_started(exc)) from None
    except OSError as exc:
        # Connection errors never reach here (hypercorn handles them per
        # connection): this is a bind. Stop the other listener gracefully.
        failures.append(f"cannot listen on {', '.join(hc.bind)}: {exc.strerror}")
        stop.set()


async def _serve_admin(
    shared: SharedRouter,
    admin: AdminListener,
    stop: asyncio.Event,
    failures: list[str],
    fd: int = -1,
) -> None:
    # Same process and event loop: the admin app serves the public app's state,
    # so it starts once that is open. (Started before, its lifespan would be left
    # waiting, and cancelled mid-start, should the public app fail to open.)
    await shared.wait()
    hc = admin_hypercorn_config(admin)
    if fd >= 0:  # a worker: the supervisor's socket
        hc.bind = [f"fd://{fd}"]
    await _serve(create_admin_app(shared), hc, stop, failures)


def _announce(config: RouterConfig, host: str, port: int) -> None:
    print(f"router listening on http://{host}:{port}", flush=True)
    admin = config.listeners.admin
    if admin is not None:
        print(f"admin API (mutual TLS) on https://{admin.host}:{admin.port}", flush=True)


def _follow_lifeline(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """Stop gracefully once the supervisor is gone (its end of the pipe closes)."""

    def gone() -> None:
        loop.remove_reader(fd)
        stop.set()

    loop.add_reader(fd, gone)


def _freeze_startup_heap() -> None:
    """Leave what start-up built out of every later cycle collection.

    Modules, the config, clients and stores live as long as the process; a
    full collection walked them all (~100,000 objects: 68 ms at 2x paced
    load, against 11 ms frozen, a stall every request in flight waits out).
    Collected once here, then frozen, so the collector walks only what
    requests allocate. Only the server process does this (not `create_app`,
    which tests run in-process); the start-up config, if a reload replaces
    it, is then never freed."""
    gc.collect()
    gc.freeze()
    gc_watch.watch()  # every collection from here on is timed (/v1/status, /metrics)


async def run(
    config: RouterConfig, host: str, port: int, path: str, worker: WorkerSpec | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shared = SharedRouter()
    slot = None
    if worker is not None:
        slot = WorkerSlot(worker.slot, worker.count, Path(worker.run_dir))
        _follow_lifeline(loop, worker.lifeline_fd, stop)

    def ready(state: RouterState) -> None:
        shared.set(state)
        _freeze_startup_heap()
        # Only now: the app's resources are open (hypercorn binds right after,
        # and the addresses were checked before anything started).
        if worker is None:
            _announce(config, host, port)
        else:  # the supervisor announces the group once every worker is ready
            os.write(worker.ready_fd, f"{worker.slot},{os.getpid()}\n".encode())

    app = create_app(config, config_path=path, state_ready=ready, worker=slot)
    public = hypercorn_config(config, host, port)
    if worker is not None and slot is not None:
        # The supervisor's socket, and this worker's own for its peers (`group`).
        public.bind = [f"fd://{worker.public_fd}", f"unix:{slot.own_socket}"]
    failures: list[str] = []
    try:
        async with asyncio.TaskGroup() as servers:
            servers.create_task(_serve(app, public, stop, failures))
            admin = config.listeners.admin
            if admin is not None:
                admin_fd = -1 if worker is None else worker.admin_fd
                servers.create_task(_serve_admin(shared, admin, stop, failures, admin_fd))
    except* CannotStart as group:
        raise CannotStart("; ".join(str(e) for e in group.exceptions)) from None
    if failures:
        raise CannotListen("; ".join(failures))


# Open files the router asks for: a client connection, a backend connection
# and a Redis pipeline each take one; the common soft limit, 1,024, would
# refuse connections at a few hundred requests in flight.
OPEN_FILES = 65_536


def _allow_open_files() -> None:
    """Raise the soft limit of open files towards `OPEN_FILES` (never past the
    hard limit the operator set)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, access_log=not args.no_access_log)
    try:  # a flag wins (its variable is then not read); then the variable; then the file
        host_env = None if args.host else environment.host(os.environ)
        port_env = None if args.port is not None else environment.port(os.environ)
    except environment.BadVariable as exc:
        print(f"router-server: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:
        config = config_file.load(args.config)
    except ConfigInvalid as exc:
        print(f"router-server: {args.config} is not a valid config:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return Exit.INVALID
    admin = config.listeners.admin
    host = args.host or host_env or config.listeners.public.host
    port = args.port if args.port is not None else port_env
    port = config.listeners.public.port if port is None else port
    if args.worker is not None:
        # Until the app listens for it: a worker still starting reads the file anyway.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return _run_process(config, host, port, args.config, args.worker)
    try:
        count = worker_count(config, args.workers, usable_cores())
    except WorkersRefused as exc:
        print(f"router-server: {exc}", file=sys.stderr)
        return Exit.USAGE
    addresses = [(host, port)] + ([] if admin is None else [(admin.host, admin.port)])
    unbound = [why for h, p in addresses if (why := _cannot_bind(h, p)) is not None]
    if unbound:
        print(f"router-server: {'; '.join(unbound)}", file=sys.stderr)
        return Exit.UNAVAILABLE
    if count > 1:
        return _supervise(config, args, host, port, count)
    return _run_process(config, host, port, args.config, None)


def _supervise(
    config: RouterConfig, args: argparse.Namespace, host: str, port: int, count: int
) -> int:
    """Bind the listeners here, then run `count` workers on them (see `workers`)."""
    backlog = hypercorn_config(config, host, port).backlog
    admin = config.listeners.admin
    opened: list[socket.socket] = []
    try:
        opened.append(listen_socket(host, port, backlog))
        if admin is not None:
            opened.append(listen_socket(admin.host, admin.port, backlog))
    except OSError as exc:
        for sock in opened:
            sock.close()
        print(f"router-server: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    public = opened[0]
    bound_port = public.getsockname()[1]
    command = [
        sys.executable, "-m", "router_server", "--config", args.config,
        "--host", host, "--port", str(bound_port), "--log-level", args.log_level,
        *(["--no-access-log"] if args.no_access_log else []),
    ]  # fmt: skip

    def announce() -> None:
        print(f"router listening on http://{host}:{bound_port} ({count} workers)", flush=True)
        if admin is not None:
            print(f"admin API (mutual TLS) on https://{admin.host}:{admin.port}", flush=True)

    try:
        return Supervisor(command, count, public, opened[1] if admin else None, announce).run()
    finally:
        for sock in opened:
            sock.close()


def _run_process(
    config: RouterConfig, host: str, port: int, path: str, worker: WorkerSpec | None
) -> int:
    """Serve in this process: the only one, or one worker of a group."""
    # The router makes almost no cyclic garbage (a closed connection leaves
    # ~35 objects), but a collection runs whenever allocations outnumber frees
    # by the young threshold, and walks every young object still alive: with
    # hundreds of requests in flight, tens of thousands. At 10,000 (CPython's
    # default is 700) collections ran several times a second at twice the
    # paced load, each a 20 to 150 ms stall, a quarter of the router's CPU.
    # Set from `server.gc_young_threshold`; `gc_watch` reports the pauses.
    gc.set_threshold(config.server.gc_young_threshold, *gc.get_threshold()[1:])
    _allow_open_files()
    http_h11.install()  # refusals h11 makes get a body and an x-request-id; chunks framed here
    http_idle.install()  # keep-alive timeouts on a timer, not tasks per request
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run(config, host, port, path, worker))
    except CannotListen as exc:
        print(f"router-server: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    except CannotStart as exc:
        print(f"router-server: cannot start: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
