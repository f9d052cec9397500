"""The `router` command.

router config validate FILE     every problem in FILE, with its path; exit 1 if any
router config reference         the configuration reference (docs/reference/configuration.md)
router keys create --org ORG [--model M --route R --expires-in-s S]
                                a new API key (shown once) and the line for the config
router keys create|list|revoke|rotate --config FILE
                                managed keys in the config's key store (SQLite or Redis)
router serve --config FILE      run the router (same as `router-server`; --workers N)
router usage report --since 24h --group-by org,model,key [--format table|csv|json]
router usage reconcile --client-log FILE [--topic T --bootstrap HOST:PORT]
router simulate --config FILE --trace TRACE.jsonl [--faults FAULTS.yaml] [--format json] [--seed N]
                                replay a trace through the routing, limit and budget rules offline
router demo [--config FILE]     mock backends + the router, and a request through it
router smoke URL [--key K]      a deployment checked end to end (status, models, chat, stream,
                                limit headers, metrics)
router loadtest URL --rate R --duration S [--stream]
                                fixed-rate load, judged against the SLOs
router --version

Exit codes, one per kind of failure and the same for every command: docs/cli.md, "Exit codes".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from router_cli import DISTRIBUTION, keys, simulate, usage
from router_cli.failures import config_problems
from router_cli.probe import loadtest, smoke
from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server import environment
from router_server.exit_codes import Exit


def _config_validate(args: argparse.Namespace) -> int:
    from router_server import config_file

    try:
        config = config_file.load(args.file, check_env=args.check_env)
    except ConfigInvalid as exc:
        return config_problems(args.file, exc)
    except Exception as exc:  # report, never a traceback
        print(f"{args.file}: cannot be checked: {exc}", file=sys.stderr)
        return Exit.INVALID
    keys_count = sum(len(org.keys) for org in config.organizations.values())
    print(
        f"{args.file}: OK ({len(config.backends)} backends, {len(config.models)} models, "
        f"{len(config.organizations)} organizations, {keys_count} keys)"
    )
    for line in _shipped_price_lines(args.file, config):
        print(line)
    return Exit.OK


def _shipped_price_lines(file: str, config: RouterConfig) -> list[str]:
    """Which models the shipped price table prices (`prices` in the file names the rest)."""
    from pathlib import Path

    from router_core.price_table import price_choices
    from router_server import config_file

    data = config_file.parse_yaml(Path(file).read_text(encoding="utf-8"), file)
    section = data.get("prices") if isinstance(data, dict) else None
    configured = frozenset(section) if isinstance(section, dict) else frozenset()
    lines = []
    for name, choice in price_choices(config, configured).items():
        if choice.source != "shipped" or choice.price is None:
            continue
        price = choice.price
        ids = ", ".join(f"{e.provider} {e.model}" for e in choice.entries)
        taken = sorted({e.taken for e in choice.entries})
        lines.append(
            f"prices.{name}: shipped price of {ids} (read {', '.join(taken)}): USD per million "
            f"tokens input {price.input}, output {price.output}, cache read {price.cache_read}, "
            f"cache write {price.cache_write}"
        )
    return lines


def _serve(args: argparse.Namespace) -> int:
    from router_server.main import main as server_main

    forwarded = [] if args.config is None else ["--config", args.config]
    if args.host:
        forwarded += ["--host", args.host]
    if args.port is not None:
        forwarded += ["--port", str(args.port)]
    if args.workers is not None:
        forwarded += ["--workers", str(args.workers)]
    return server_main(forwarded)


def _demo(args: argparse.Namespace) -> int:
    from router_cli import demo

    return demo.run(args.config, port=args.port, check=args.check)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _config_reference(args: argparse.Namespace) -> int:
    from router_cli import config_reference

    sys.stdout.write(config_reference.render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="The inference router.")
    parser.add_argument("--version", action="version", version=f"router {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="work with config files")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    validate = config_commands.add_parser("validate", help="check a config file")
    validate.add_argument("file", metavar="FILE", help="the config file (YAML)")
    validate.add_argument(
        "--check-env",
        action="store_true",
        help="also require the backends' credential variables to be set",
    )
    validate.set_defaults(handler=_config_validate)
    reference = config_commands.add_parser(
        "reference", help="print the configuration reference (Markdown), made from the code"
    )
    reference.set_defaults(handler=_config_reference)

    keys.add_commands(commands)

    serve = commands.add_parser("serve", help="run the router (same as router-server)")
    # Unset flags fall back to ROUTER_CONFIG, ROUTER_HOST, ROUTER_PORT (read by
    # router-server's own parser, so both commands take them the same way).
    serve.add_argument(
        "--config",
        required=environment.config_path(os.environ) is None,
        metavar="FILE",
        help="the config file (YAML; default: $ROUTER_CONFIG)",
    )
    serve.add_argument(
        "--host", help="listen on this address (default: $ROUTER_HOST, else listeners.public.host)"
    )
    serve.add_argument(
        "--port",
        type=int,
        help="listen on this port (default: $ROUTER_PORT, else listeners.public.port)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="router processes sharing the listener (default: server.workers, else one per "
        "usable core with state.store redis, one with the embedded store)",
    )
    serve.set_defaults(handler=_serve)

    simulate.add_parser(commands)

    demo = commands.add_parser("demo", help="mock backends + router, and a request through it")
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="the config to run (default: the demo config shipped with router_cli)",
    )
    demo.add_argument("--port", type=int, help="the router's port (default: from the config)")
    demo.add_argument("--check", action="store_true", help="exit after the first request")
    demo.set_defaults(handler=_demo)

    usage.add_commands(commands)
    smoke.add_parser(commands)
    loadtest.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
