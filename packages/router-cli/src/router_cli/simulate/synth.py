"""A synthetic trace for a config: for benchmarks, and to try a policy without logs.

    python -m router_cli.simulate.synth --config examples/policy.yaml \\
        --requests 1000000 --rate 200 --out /tmp/trace-1m.jsonl

Arrivals are Poisson at `--rate` requests a second from `--start`; each
request picks a key of the config (each valid key equally likely; a revoked
key now and then) and a model its organization may use, with a small share of unknown
models; prompt and completion sizes are log-uniform. Seeded: one seed, one trace.

With `--prompts N` the trace is prefix-heavy instead, as for a fleet of
self-hosted model servers (see `prefix_records`):

    python -m router_cli.simulate.synth --config examples/fleet.yaml \
        --requests 20000 --rate 10 --prompts 8 --sessions 0.6 --out /tmp/fleet.jsonl
"""

from __future__ import annotations

import argparse
import heapq
import itertools
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


# Shared-prefix traces: the sizes drawn (tokens, log-uniform between the two).
SYSTEM_TOKENS = (400, 3000)
USER_TOKENS = (20, 400)
ANSWER_TOKENS = (20, 600)
# A client's max_tokens: every answer fits.
MAX_TOKENS = 1024
# A multi-turn conversation has 2 to this many turns; between a turn's
# arrival and the next, the user waits this long on average (s, exponential).
MAX_TURNS = 8
THINK_S = 20.0


def _log_uniform(rng: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    value: float = low * (high / low) ** rng.random()
    return round(value)


def prefix_records(
    config: RouterConfig,
    n: int,
    *,
    rate: float,
    start: float,
    seed: int,
    prompts: int,
    sessions: float,
) -> Iterator[dict[str, Any]]:
    """A prefix-heavy trace: `n` requests at about `rate` a second.

    Conversations arrive Poisson; each starts with one of `prompts` system
    prompts (sizes log-uniform in `SYSTEM_TOKENS`, the i-th drawn with
    weight 1/(i+1), so a few are hot). A share `sessions` of conversations are
    multi-turn (2 to `MAX_TURNS` turns, `THINK_S` apart on average, with one
    `session` id), and each turn's prompt is the previous turn's prompt, its
    answer and a new user message: its `segments` extend the previous turn's
    (and a turn with one to come names its `answer`'s segment).
    The others are one request. Every prompt is exactly its segments."""
    if prompts < 1:
        raise ValueError("a prefix-heavy trace needs at least one system prompt")
    if not 0 <= sessions <= 1:
        raise ValueError("the share of multi-turn sessions must be from 0 to 1")
    rng = random.Random(seed)
    callers = [
        (api_key.id, [m for m in config.models if org.allows(m)])
        for org in config.organizations.values()
        for api_key in org.keys
        if not api_key.revoked
    ]
    callers = [(key_id, models) for key_id, models in callers if models]
    if not callers:
        raise ValueError("the config has no valid API keys with a model to send requests with")
    systems = [(f"system-{i}", _log_uniform(rng, SYSTEM_TOKENS)) for i in range(prompts)]
    popularity = [1 / (i + 1) for i in range(prompts)]
    mean_turns = 1 + sessions * (MAX_TURNS / 2)  # 2..MAX_TURNS turns: mean MAX_TURNS/2 + 1
    conversation_rate = rate / mean_turns
    # Turns to come: (ts, tie-breaker, conversation state).
    pending: list[tuple[float, int, dict[str, Any]]] = []
    counter = itertools.count()
    ts = start
    emitted = 0
    for conversation in itertools.count():
        ts += rng.expovariate(conversation_rate)
        while pending and pending[0][0] <= ts and emitted < n:
            yield _turn(rng, heapq.heappop(pending), pending, counter)
            emitted += 1
        if emitted >= n:
            return
        key_id, models = rng.choice(callers)
        system = rng.choices(systems, popularity)[0]
        turns = rng.randint(2, MAX_TURNS) if rng.random() < sessions else 1
        state = {
            "id": f"c{conversation}",
            "key": key_id,
            "model": rng.choice(models),
            "segments": [list(system)],
            "turns_left": turns,
            "session": turns > 1,
        }
        heapq.heappush(pending, (ts, next(counter), state))


def _turn(
    rng: random.Random,
    item: tuple[float, int, dict[str, Any]],
    pending: list[tuple[float, int, dict[str, Any]]],
    counter: Iterator[int],
) -> dict[str, Any]:
    """The conversation's next request; its following turn goes back on `pending`."""
    ts, _, state = item
    turn = len(state["segments"]) // 2 + 1
    segments: list[list[Any]] = state["segments"]
    segments.append([f"{state['id']}.user-{turn}", _log_uniform(rng, USER_TOKENS)])
    answer = _log_uniform(rng, ANSWER_TOKENS)
    record: dict[str, Any] = {
        "ts": round(ts, 6),
        "key": state["key"],
        "model": state["model"],
        "prompt_tokens": sum(tokens for _, tokens in segments),
        "completion_tokens": answer,
        "max_tokens": MAX_TOKENS,
        "segments": [list(segment) for segment in segments],
    }
    if state["session"]:
        record["session"] = state["id"]
    state["turns_left"] -= 1
    if state["turns_left"] > 0:
        record["answer"] = f"{state['id']}.answer-{turn}"
        segments.append([record["answer"], answer])
        heapq.heappush(pending, (ts + rng.expovariate(1 / THINK_S), next(counter), state))
    return record


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
    parser.add_argument(
        "--prompts",
        type=int,
        default=0,
        help="a prefix-heavy trace with this many shared system prompts (default: 0, off)",
    )
    parser.add_argument(
        "--sessions",
        type=float,
        default=0.5,
        help="with --prompts: the share of conversations that are multi-turn (default: 0.5)",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or not args.rate > 0 or args.prompts < 0:
        parser.error("--requests and --rate must be > 0, --prompts >= 0")
    if not 0 <= args.sessions <= 1:
        parser.error("--sessions must be from 0 to 1")
    config = config_file.load(args.config, check_env=False)
    generated = (
        prefix_records(
            config,
            args.requests,
            rate=args.rate,
            start=args.start,
            seed=args.seed,
            prompts=args.prompts,
            sessions=args.sessions,
        )
        if args.prompts
        else records(config, args.requests, rate=args.rate, start=args.start, seed=args.seed)
    )
    with open(args.out, "wb") as out:
        for record in generated:
            out.write(orjson.dumps(record) + b"\n")
    print(f"{args.out}: {args.requests:,} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
