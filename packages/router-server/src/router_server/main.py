"""`router-server`: load the config, then serve the app with hypercorn on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server import config_file, logs
from router_server.admin.app import SharedRouter, create_admin_app
from router_server.admin.tls import admin_hypercorn_config
from router_server.app import create_app


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="router-server", description=__doc__)
    parser.add_argument("--config", required=True, help="path to the YAML config file")
    parser.add_argument("--host", help="override listeners.public.host")
    parser.add_argument("--port", type=int, help="override listeners.public.port")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log a line per request"
    )
    return parser.parse_args(argv)


def hypercorn_config(config: RouterConfig, host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"{host}:{port}"]
    hc.accesslog = None  # the router writes its own structured line per request
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our JSON handler
    hc.keep_alive_timeout = 75  # above common load balancers' idle timeouts
    hc.graceful_timeout = 10
    # hypercorn's own cap must not undercut the router's (which answers 413 itself).
    hc.h11_max_incomplete_size = 64 * 1024
    return hc


class CannotListen(Exception):
    """A listener's address could not be bound (in use, or not this host's)."""


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
    except OSError as exc:
        # Connection errors never reach here (hypercorn handles them per
        # connection): this is a bind. Stop the other listener gracefully.
        failures.append(f"cannot listen on {', '.join(hc.bind)}: {exc.strerror}")
        stop.set()


async def run(config: RouterConfig, host: str, port: int, path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shared = SharedRouter()
    app = create_app(config, config_path=path, state_ready=shared.set)
    failures: list[str] = []
    async with asyncio.TaskGroup() as servers:
        servers.create_task(_serve(app, hypercorn_config(config, host, port), stop, failures))
        admin = config.listeners.admin
        if admin is not None:
            # Same process and event loop: the admin app serves the public app's state.
            admin_app = create_admin_app(shared)
            servers.create_task(_serve(admin_app, admin_hypercorn_config(admin), stop, failures))
    if failures:
        raise CannotListen("; ".join(failures))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, access_log=not args.no_access_log)
    try:
        config = config_file.load(args.config)
    except ConfigInvalid as exc:
        print(f"router-server: {args.config} is not a valid config:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    admin = config.listeners.admin
    host = args.host or config.listeners.public.host
    port = config.listeners.public.port if args.port is None else args.port
    addresses = [(host, port)] + ([] if admin is None else [(admin.host, admin.port)])
    unbound = [why for h, p in addresses if (why := _cannot_bind(h, p)) is not None]
    if unbound:
        print(f"router-server: {'; '.join(unbound)}", file=sys.stderr)
        return 2
    print(f"router listening on http://{host}:{port}", flush=True)
    if admin is not None:
        print(f"admin API (mutual TLS) on https://{admin.host}:{admin.port}", flush=True)
    # A request allocates thousands of short-lived objects; at CPython's default
    # young-generation threshold (700) the cycle collector ran several times per
    # request, ~10% of the router's CPU (see benchmarks/). Cycles are still
    # collected, in larger batches.
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run(config, host, port, args.config))
    except CannotListen as exc:
        print(f"router-server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
