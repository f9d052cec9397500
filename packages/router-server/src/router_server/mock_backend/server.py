"""Command line and event loop of the mock backend process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .payloads import LINE_ENDINGS
from .protocol import MockHTTPProtocol
from .state import ConfigError, MockConfig, MockState, updated_config

READY_PREFIX = "mock backend listening on "


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="router-mock-backend",
        description="OpenAI-compatible mock model backend for tests, the demo and benchmarks.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before response headers")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between SSE events")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of /v1 requests failed")
    p.add_argument("--error-status", type=int, default=500, help="status of injected errors")
    p.add_argument("--seed", type=int, default=0, help="seed of the error-injection draws")
    p.add_argument("--hang", action="store_true", help="accept requests and never answer")
    p.add_argument(
        "--truncate-after",
        type=int,
        default=None,
        metavar="N",
        help="break streams after N content chunks (no [DONE], no final chunk)",
    )
    p.add_argument(
        "--line-ending",
        choices=list(LINE_ENDINGS),
        default="lf",
        help="line endings of SSE events (the SSE spec allows all three)",
    )
    p.add_argument(
        "--split-tail-bytes",
        type=int,
        default=None,
        metavar="N",
        help="write each SSE event as two chunks, the second its last N bytes",
    )
    p.add_argument("--omit-usage", action="store_true", help="answer without `usage`")
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (Azure paths: 'api-key: KEY' or the bearer)",
    )
    p.add_argument(
        "--retry-after-s",
        type=float,
        default=None,
        help="injected errors carry retry-after (and retry-after-ms)",
    )
    p.add_argument("--models", default=",".join(MockConfig().models), help="comma-separated ids")
    return p


def config_from_args(args: argparse.Namespace) -> MockConfig:
    update: dict[str, Any] = {
        "latency_ms": args.latency_ms,
        "chunk_delay_ms": args.chunk_delay_ms,
        "error_rate": args.error_rate,
        "error_status": args.error_status,
        "seed": args.seed,
        "hang": args.hang,
        "truncate_after": args.truncate_after,
        "line_ending": args.line_ending,
        "split_tail_bytes": args.split_tail_bytes,
        "omit_usage": args.omit_usage,
        "api_key": args.api_key,
        "retry_after_s": args.retry_after_s,
        "models": [m.strip() for m in args.models.split(",") if m.strip()],
    }
    return updated_config(MockConfig(), update)


async def serve(state: MockState, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing readiness on stdout."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: MockHTTPProtocol(state), host, port, reuse_address=True, backlog=2048
    )
    bound_port = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # Test helpers and the benchmark wait for exactly this line.
    print(f"{READY_PREFIX}http://{shown}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        for transport in list(state.connections):
            transport.abort()
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    state = MockState(config)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(state, args.host, args.port))
    else:
        uvloop.run(serve(state, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
