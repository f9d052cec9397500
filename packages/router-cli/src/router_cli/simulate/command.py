"""`router simulate`: load the config, the trace and the faults; run; print."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from router_cli.failures import config_problems
from router_cli.options import add_format
from router_cli.simulate.engine import Simulation
from router_cli.simulate.faults import NO_FAULTS, FaultsInvalid, World, load_world
from router_cli.simulate.report import render
from router_cli.simulate.trace import TraceInvalid, read_trace
from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server.exit_codes import Exit

# Traces at least this large (bytes) get a progress bar on a terminal.
PROGRESS_BYTES = 8 * 1024 * 1024


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "simulate",
        help="replay a traffic trace through the routing, limit and budget rules offline",
        description="Replay a trace (JSON lines) through the config's routing, limits and "
        "budgets on a virtual clock, with optional backend faults; print each backend's "
        "share, denials by reason, spend per organization, failovers and modelled latency.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the router config (YAML)")
    parser.add_argument(
        "--trace", required=True, metavar="FILE", help="the trace, one JSON object per line"
    )
    parser.add_argument("--faults", metavar="FILE", help="backend latency and faults (YAML)")
    add_format(parser, ["table", "json"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the routing choices")
    parser.set_defaults(handler=run)


def _problems(source: str, problems: list[str]) -> int:
    print(f"{source}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return Exit.INVALID


def run(args: argparse.Namespace) -> int:
    from router_server import config_file

    try:
        config = config_file.load(args.config, check_env=False)
    except ConfigInvalid as exc:
        return config_problems(args.config, exc)
    try:
        world = load_world(args.faults, config) if args.faults else NO_FAULTS
    except FaultsInvalid as exc:
        return _problems(args.faults, exc.problems)
    trace = Path(args.trace)
    try:
        handle = trace.open("rb")
    except OSError as exc:
        print(f"{trace}: cannot read: {exc.strerror}", file=sys.stderr)
        return Exit.INVALID
    started = time.perf_counter()
    with handle:
        try:
            summary = simulate(config, world, handle, str(trace), args.seed)
        except TraceInvalid as exc:
            return _problems(str(trace), exc.problems)
    elapsed = time.perf_counter() - started
    if args.format == "json":
        summary["elapsed_s"] = round(elapsed, 3)
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(summary, Console(), elapsed)
    return Exit.OK


def simulate(
    config: RouterConfig, world: World, handle: BinaryIO, source: str, seed: int = 0
) -> dict[str, Any]:
    """Replay the trace in `handle` and return the summary (see `Result.summary`)."""
    simulation = Simulation(config, world, seed)
    size = _size(handle)
    with _progress(size) as advance:
        lines: Iterator[bytes] = iter(handle)
        if advance is not None:
            lines = _counting(lines, advance)
        result = simulation.run(read_trace(lines, source))
    return result.summary()


def _size(handle: BinaryIO) -> int:
    try:
        return Path(handle.name).stat().st_size
    except (OSError, TypeError, AttributeError):
        return 0


@contextlib.contextmanager
def _progress(size: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr, for a large trace on a terminal."""
    if size < PROGRESS_BYTES or not sys.stderr.isatty():
        yield None
        return
    columns = (
        TextColumn("simulating"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("trace", total=size)
        yield lambda n: progress.advance(task, n)


def _counting(lines: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    pending = 0
    for n, line in enumerate(lines, 1):
        pending += len(line)
        if n % 20_000 == 0:
            advance(pending)
            pending = 0
        yield line
    advance(pending)
