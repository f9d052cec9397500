"""A synthetic trace for a config: for benchmarks, and to try a policy without logs.

    python -m router_cli.simulate.synth --config examples/policy.yaml \\
        --requests 1000000 --rate 200 --out /tmp/trace-1m.jsonl

Arrivals are Poisson at `--rate` requests a second from `--start`; each
request picks a key of the config (each valid key equally likely; a revoked
key now and then) and a model its organization may use, with a small share of unknown
models; prompt and completion sizes are log-uniform. Seeded: one seed, one trace.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from router_core.config import RouterConfig

UNKNOWN_MODEL_SHARE = 0.01
REVOKED_SHARE = 0.01


def records(
    config: RouterConfig, n: int, *, rate: float, start: float, seed: int
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    callers: list[tuple[str, list[str]]] = []
    revoked: list[tuple[str, list[str]]] = []
    for org in config.organizations.values():
        models = [m for m in config.models if org.allows(m)] or ["unknown-model"]
        for api_key in org.keys:
            (revoked if api_key.revoked else callers).append((api_key.id, models))
    if not callers:
        raise ValueError("the config has no valid API keys to send requests with")
    ts = start
    for _ in range(n):
        ts += rng.expovariate(rate)
        use_revoked = revoked and rng.random() < REVOKED_SHARE
        key_id, models = rng.choice(revoked if use_revoked else callers)
        model = "unknown-model" if rng.random() < UNKNOWN_MODEL_SHARE else rng.choice(models)
        yield {
            "ts": round(ts, 6),
            "key": key_id,
            "model": model,
            "prompt_tokens": int(2 ** rng.uniform(3, 12)),
            "completion_tokens": int(2 ** rng.uniform(2, 10)),
        }


def main(argv: Sequence[str] | None = None) -> int:
    from router_server import config_file

    parser = argparse.ArgumentParser(prog="python -m router_cli.simulate.synth")
    parser.add_argument(
        "--config", required=True, help="the router config whose keys and models to use"
    )
    parser.add_argument(
        "--requests", type=int, default=1_000_000, help="how many (default: 1,000,000)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--start", type=float, default=1_767_225_600.0, help="first second")
    parser.add_argument("--seed", type=int, default=1, help="one seed, one trace (default: 1)")
    parser.add_argument("--out", required=True, help="the trace file to write")
    args = parser.parse_args(argv)
    config = config_file.load(args.config, check_env=False)
    with open(args.out, "wb") as out:
        for record in records(
            config, args.requests, rate=args.rate, start=args.start, seed=args.seed
        ):
            out.write(orjson.dumps(record) + b"\n")
    print(f"{args.out}: {args.requests:,} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
