"""`router simulate`: load the config, the trace and the faults; run; print."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from router_cli.failures import config_problems
from router_cli.options import add_format
from router_cli.simulate.engine import Simulation
from router_cli.simulate.faults import NO_FAULTS, FaultsInvalid, World, load_world
from router_cli.simulate.report import render, render_comparison
from router_cli.simulate.trace import TraceInvalid, read_trace
from router_core.config import AffinitySettings, RouterConfig
from router_core.config_codec import ConfigInvalid
from router_core.config_enums import Strategy
from router_server.exit_codes import Exit

# Traces at least this large (bytes) get a progress bar on a terminal.
PROGRESS_BYTES = 8 * 1024 * 1024
# The strategies `--strategies` names: each of the config's, alone or with affinity.
STRATEGY_NAMES = (*(str(s) for s in Strategy), *(f"{s}+affinity" for s in Strategy))


class StrategyUnknown(ValueError):
    pass


def parse_strategies(text: str) -> list[str]:
    """The names of `--strategies`, checked; raises `StrategyUnknown` naming the bad one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise StrategyUnknown("--strategies needs at least one strategy")
    for name in names:
        if name not in STRATEGY_NAMES:
            raise StrategyUnknown(
                f"--strategies: unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}"
            )
    if len(set(names)) != len(names):
        raise StrategyUnknown("--strategies names a strategy twice")
    return names


def with_strategy(config: RouterConfig, name: str) -> RouterConfig:
    """The config with every model routed by `name` (a strategy, or one with +affinity)."""
    base, _, extra = name.partition("+")
    strategy = Strategy(base)
    models = {
        model_name: attrs.evolve(
            model,
            strategy=strategy,
            affinity=(model.affinity or AffinitySettings()) if extra == "affinity" else None,
        )
        for model_name, model in config.models.items()
    }
    return attrs.evolve(config, models=models)


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
    parser.add_argument(
        "--strategies",
        metavar="LIST",
        help="replay the trace once per strategy and compare them side by side: a comma-"
        "separated list of " + ", ".join(STRATEGY_NAMES) + " (each set on every model; "
        "+affinity turns on prefix affinity with the model's settings or the defaults)",
    )
    parser.add_argument(
        "--explain",
        metavar="FILE",
        help="write each request's routing decision and outcome to FILE (JSON lines)",
    )
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
    try:
        strategies = parse_strategies(args.strategies) if args.strategies is not None else None
    except StrategyUnknown as exc:
        print(f"router simulate: {exc}", file=sys.stderr)
        return Exit.USAGE
    trace = Path(args.trace)
    with contextlib.ExitStack() as files:
        try:
            handle = files.enter_context(trace.open("rb"))
        except OSError as exc:
            print(f"{trace}: cannot read: {exc.strerror}", file=sys.stderr)
            return Exit.INVALID
        explain_out: BinaryIO | None = None
        if args.explain is not None:
            try:
                explain_out = files.enter_context(Path(args.explain).open("wb"))
            except OSError as exc:
                print(f"{args.explain}: cannot write: {exc.strerror}", file=sys.stderr)
                return Exit.INVALID
        started = time.perf_counter()
        try:
            if strategies is None:
                summary = simulate(
                    config, world, handle, str(trace), args.seed, _writer(explain_out, None)
                )
            else:
                compared = {}
                for name in strategies:
                    handle.seek(0)
                    compared[name] = simulate(
                        with_strategy(config, name), world, handle, str(trace), args.seed,
                        _writer(explain_out, name),
                    )  # fmt: skip
                summary = {"seed": args.seed, "strategies": compared}
        except TraceInvalid as exc:
            return _problems(str(trace), exc.problems)
    elapsed = time.perf_counter() - started
    if args.format == "json":
        summary["elapsed_s"] = round(elapsed, 3)
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif strategies is None:
        render(summary, Console(), elapsed)
    else:
        # A column per strategy: wider than a terminal's default 80 if need be.
        console = Console()
        render_comparison(summary["strategies"], Console(width=max(console.width, 120)), elapsed)
    return Exit.OK


def _writer(out: BinaryIO | None, strategy: str | None) -> Callable[[dict[str, Any]], None] | None:
    """The callback writing each request's explanation as a JSON line (tagged
    with the strategy when several are compared)."""
    if out is None:
        return None
    write = out.write

    def explain(line: dict[str, Any]) -> None:
        if strategy is not None:
            line = {"strategy": strategy, **line}
        write(orjson.dumps(line) + b"\n")

    return explain


def simulate(
    config: RouterConfig,
    world: World,
    handle: BinaryIO,
    source: str,
    seed: int = 0,
    explain: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Replay the trace in `handle` and return the summary (see `Result.summary`)."""
    simulation = Simulation(config, world, seed, explain=explain)
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
