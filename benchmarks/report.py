"""What the benchmark measured, derived figures, the printed table and the JSON file."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen import Result

# Targets of issue 2, per router core with auth on.
TARGET_RPS_C16 = 2000.0
TARGET_RPS_SLOW_C64 = 1150.0
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
# The load generator must outrun the router by this much (direct vs routed).
MIN_DIRECT_RATIO = 10.0
# Issue 13: every policy on costs at most this much CPU per request over
# authentication alone (the 16-connection chat, routed).
TARGET_ALL_CPU_RATIO = 1.25
ALL_BASE = "chat-c16"
ALL_KEY = "chat-c16-all"


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    backend: str  # "fast" (0 ms) or "slow" (50 ms)
    stream: bool
    concurrency: int  # closed loop: connections; open loop: connections opened up front
    rate: float | None = None  # open loop at this many requests/s
    # Routed with limits and budgets on, in this store ("memory" or "redis"),
    # or "all": every policy on (Redis limits, Redis idempotency keys, ledger,
    # Kafka export); None: the plain routed path (auth only).
    limits: str | None = None
    # The plain scenario with the same load, which a limits or protocol run is
    # compared with.
    base: str | None = None
    # The client's protocol: "chat" (chat completions), "messages" (Anthropic
    # Messages) or "responses" (OpenAI Responses).
    protocol: str = "chat"
    # Routed to a backend that speaks only chat completions, so the router
    # translates both ways; otherwise to one that speaks the protocol natively.
    translated: bool = False
    # A shared system prompt of this many characters before the question
    # (the routing runs: what prefix affinity hashes).
    prefix_chars: int = 0


@dataclass(frozen=True)
class Measurement:
    scenario: Scenario
    path: str  # "direct" or "routed"
    loadgen: str
    transport: str | None  # the router's backend transport; None on the direct path
    result: Result
    router_rss_mib: float | None = None
    router_cpu_percent: float | None = None  # of one core, over the measured run
    router_cpu_us_per_request: float | None = None
    # Limit decisions taken and settlements lost in store-failure mode during the
    # run (GET /v1/status); must stay 0, else the Redis run did not measure Redis.
    limit_store_failures: int | None = None


def _find(ms: Sequence[Measurement], key: str, path: str) -> Measurement | None:
    return next((m for m in ms if m.scenario.key == key and m.path == path), None)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(ms: Sequence[Measurement]) -> str:
    header = (
        f"{'scenario':<34} {'path':<7} {'limits':<6} {'conns':>5} {'req/s':>9} {'p50 ms':>8} "
        f"{'p90 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'RSS MiB':>8} {'CPU %':>6} {'CPU us/req':>10}"
    )
    lines = [header, "-" * len(header)]
    for m in ms:
        r = m.result
        lines.append(
            f"{m.scenario.label:<34} {m.path:<7} {m.scenario.limits or '-':<6} "
            f"{m.scenario.concurrency:>5} {r.rps:>9,.0f} "
            f"{r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>6} "
            f"{_num(m.router_rss_mib):>8} {_num(m.router_cpu_percent, 0):>6} "
            f"{_num(m.router_cpu_us_per_request, 0):>10}"
        )
    lines.append(
        "RSS and CPU are the router process's, over each routed run; CPU us/req (router CPU "
        "time / requests) is steadier than req/s on a shared machine. limits: routed with "
        "rate limits, quotas and a budget on (never denying), in that store; all: every "
        "policy on (Redis limits, an Idempotency-Key per request kept in Redis, the ledger, "
        "Kafka export)."
    )
    return "\n".join(lines)


def ratios(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Direct vs routed throughput of every closed-loop scenario on the 0 ms backend."""
    rows: list[dict[str, Any]] = []
    for m in ms:
        if m.path != "routed" or m.scenario.rate is not None or m.scenario.backend != "fast":
            continue
        if m.scenario.limits is not None:
            continue
        direct = _find(ms, m.scenario.key, "direct")
        if direct is None or m.result.rps <= 0:
            continue
        ratio = direct.result.rps / m.result.rps
        rows.append(
            {"scenario": m.scenario.key, "ratio": round(ratio, 1), "stream": m.scenario.stream}
        )
    return rows


def added_latency(ms: Sequence[Measurement], key: str) -> dict[str, float] | None:
    """Router-added latency of an open-loop run: routed minus direct, per percentile.

    A limits run has no direct run of its own: it is compared with its base's.
    """
    routed = _find(ms, key, "routed")
    if routed is None:
        return None
    direct = _find(ms, routed.scenario.base or key, "direct")
    if direct is None:
        return None
    d, r = direct.result, routed.result
    return {
        "p50_ms": round(r.p50_ms - d.p50_ms, 3),
        "p90_ms": round(r.p90_ms - d.p90_ms, 3),
        "p99_ms": round(r.p99_ms - d.p99_ms, 3),
    }


def targets(
    ms: Sequence[Measurement], open_key: str, rounds: Sequence[CpuRound] = ()
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def check(name: str, measured: float | None, goal: float, at_least: bool) -> None:
        ok = measured is not None and (measured >= goal if at_least else measured <= goal)
        rows.append({"target": name, "goal": goal, "measured": measured, "met": ok})

    def rps(key: str) -> float | None:
        found = _find(ms, key, "routed")
        return None if found is None else found.result.rps

    added = added_latency(ms, open_key) or {}
    check("routed req/s, 16 conns, 0 ms backend", rps("chat-c16"), TARGET_RPS_C16, True)
    check("routed req/s, 64 conns, 50 ms backend", rps("chat-50ms-c64"), TARGET_RPS_SLOW_C64, True)
    check("router-added p50 ms, fixed rate", added.get("p50_ms"), TARGET_ADDED_P50_MS, False)
    check("router-added p99 ms, fixed rate", added.get("p99_ms"), TARGET_ADDED_P99_MS, False)
    ratio = every_policy_ratio(ms, rounds)
    if ratio is not None:
        check("CPU/req, every policy / auth alone, 16 conns", ratio, TARGET_ALL_CPU_RATIO, False)
    return rows


@dataclass(frozen=True)
class CpuRound:
    """One pair of back-to-back runs of the 16-connection chat: router CPU
    per request with authentication alone, then with every policy on."""

    auth_us: float
    all_us: float

    @property
    def ratio(self) -> float:
        return self.all_us / self.auth_us


def every_policy_ratio(ms: Sequence[Measurement], rounds: Sequence[CpuRound] = ()) -> float | None:
    """CPU per request with every policy on over authentication alone (same
    load): the median of `rounds`' ratios, or else the two single rows'."""
    if rounds:
        return round(statistics.median(r.ratio for r in rounds), 2)
    plain, every = _find(ms, ALL_BASE, "routed"), _find(ms, ALL_KEY, "routed")
    if plain is None or every is None:
        return None
    base, cost = plain.router_cpu_us_per_request, every.router_cpu_us_per_request
    return None if not base or cost is None else round(cost / base, 2)


def _delta(base: float | None, limited: float | None, digits: int = 1) -> dict[str, Any]:
    added = None if base is None or limited is None else round(limited - base, digits)
    percent = None if added is None or not base else round(100 * added / base, 1)
    return {"base": base, "limited": limited, "added": added, "added_percent": percent}


def limits_added(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    """What each limits run adds over the plain routed run of the same load."""
    rows: list[dict[str, Any]] = []
    for m in ms:
        if m.path != "routed" or m.scenario.limits is None or m.scenario.base is None:
            continue
        base = _find(ms, m.scenario.base, "routed")
        b = None if base is None else base.result
        r = m.result
        row: dict[str, Any] = {
            "scenario": m.scenario.key,
            "limits": m.scenario.limits,
            "base": m.scenario.base if base is not None else None,
            "errors": r.errors,
            "store_failures": m.limit_store_failures,
            "cpu_us_per_request": _delta(
                None if base is None else base.router_cpu_us_per_request,
                m.router_cpu_us_per_request,
            ),
            "p50_ms": _delta(None if b is None else b.p50_ms, r.p50_ms, 3),
            "p99_ms": _delta(None if b is None else b.p99_ms, r.p99_ms, 3),
        }
        if m.scenario.rate is None:
            row["rps"] = _delta(None if b is None else b.rps, r.rps)
        else:
            # A fixed rate: throughput is the rate; latency over direct is the figure.
            row["router_added_latency"] = added_latency(ms, m.scenario.key)
            row["base_router_added_latency"] = added_latency(ms, m.scenario.base)
        rows.append(row)
    return rows


def protocol_costs(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Router CPU per request of each Messages and Responses run over chat's, same load."""
    rows: list[dict[str, Any]] = []
    for m in ms:
        if m.path != "routed" or m.scenario.protocol == "chat" or m.scenario.base is None:
            continue
        if m.scenario.prefix_chars:  # a routing run: see routing_costs
            continue
        base = _find(ms, m.scenario.base, "routed")
        base_cpu = None if base is None else base.router_cpu_us_per_request
        cost = m.router_cpu_us_per_request
        rows.append(
            {
                "scenario": m.scenario.key,
                "protocol": m.scenario.protocol,
                "translated": m.scenario.translated,
                "base": m.scenario.base,
                "rps": m.result.rps,
                "errors": m.result.errors,
                "cpu_us_per_request": cost,
                "base_cpu_us_per_request": base_cpu,
                "cpu_ratio": None if not base_cpu or cost is None else round(cost / base_cpu, 2),
            }
        )
    return rows


# Per request, what least_load with prefix affinity may cost over weighted routing.
TARGET_ROUTING_US = 30.0


def routing_costs(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Router CPU per request of each routing-strategy run over its base's (weighted)."""
    rows: list[dict[str, Any]] = []
    for m in ms:
        if m.path != "routed" or not m.scenario.prefix_chars or m.scenario.base is None:
            continue
        base = _find(ms, m.scenario.base, "routed")
        base_cpu = None if base is None else base.router_cpu_us_per_request
        cost = m.router_cpu_us_per_request
        rows.append(
            {
                "scenario": m.scenario.key,
                "base": m.scenario.base,
                "prefix_chars": m.scenario.prefix_chars,
                "rps": m.result.rps,
                "base_rps": None if base is None else base.result.rps,
                "cpu_us_per_request": cost,
                "base_cpu_us_per_request": base_cpu,
                "cpu_us_added": None
                if cost is None or base_cpu is None
                else round(cost - base_cpu, 1),
            }
        )
    return rows


def routing_summary(ms: Sequence[Measurement], decision: dict[str, float] | None) -> list[str]:
    out: list[str] = []
    for row in routing_costs(ms):
        out.append(
            f"least_load + prefix affinity over weighted, {row['scenario']} "
            f"({row['prefix_chars']:,}-char shared prefix): router CPU per request "
            f"{_signed(row['cpu_us_added'], ' us', 1)} ({_num(row['cpu_us_per_request'], 0)} vs "
            f"{_num(row['base_cpu_us_per_request'], 0)} us)"
        )
    if decision is not None:
        out.append(
            f"routing decision alone (in-process): weighted {decision['weighted']:.1f} us, "
            f"least_load + affinity {decision['least_load_affinity']:.1f} us, "
            f"{decision['difference']:+.1f} us (target <= {TARGET_ROUTING_US:g} us)"
        )
    return out


def _signed(value: float | None, unit: str, digits: int = 0) -> str:
    return "-" if value is None else f"{value:+,.{digits}f}{unit}"


def _percent(value: float | None) -> str:
    return "" if value is None else f" ({value:+.0f}%)"


def limits_summary(ms: Sequence[Measurement]) -> list[str]:
    rows = limits_added(ms)
    if not rows:
        return []
    out = [
        "",
        "limits add (routed, limits + budget on; all: every policy on; vs the plain routed "
        "run of that load):",
    ]
    for row in rows:
        cpu = row["cpu_us_per_request"]
        head = f"  {row['limits']:<6} {row['scenario']:<16}"
        tail = f"  errors {row['errors']}"
        if row["store_failures"]:
            tail += f", STORE FAILURES {row['store_failures']}"
        if row["base"] is None:
            out.append(f"{head} no plain routed run to compare with{tail}")
            continue
        cost = f"CPU {_signed(cpu['added'], ' us/req')}{_percent(cpu['added_percent'])}"
        if "rps" in row:
            rps = row["rps"]
            out.append(
                f"{head} {cost}, {_signed(rps['added'], ' req/s')}{_percent(rps['added_percent'])}"
                f" (plain {row['base']}: {_num(cpu['base'], 0)} us/req, "
                f"{_num(rps['base'], 0)} req/s){tail}"
            )
            continue
        added, plain = row["router_added_latency"], row["base_router_added_latency"]
        latency = (
            "-"
            if added is None
            else (f"p50 {added['p50_ms']:.2f} ms, p99 {added['p99_ms']:.2f} ms")
        )
        before = "-" if plain is None else f"p50 {plain['p50_ms']:.2f}, p99 {plain['p99_ms']:.2f}"
        out.append(f"{head} {cost}; router-added latency {latency} (plain: {before}){tail}")
    return out


def summary(
    ms: Sequence[Measurement],
    transports: Sequence[Measurement],
    open_key: str,
    rounds: Sequence[CpuRound] = (),
) -> str:
    out: list[str] = []
    added = added_latency(ms, open_key)
    if added is not None:
        out.append(
            "router-added latency at a fixed rate (routed minus direct): "
            f"p50 {added['p50_ms']:.2f} ms, p90 {added['p90_ms']:.2f} ms, "
            f"p99 {added['p99_ms']:.2f} ms"
        )
    for row in ratios(ms):
        flag = "" if row["ratio"] >= MIN_DIRECT_RATIO else f"  < {MIN_DIRECT_RATIO:g}x: LOW"
        if flag and row["stream"]:
            # Measured: the direct stream rate does not move when the load generator gets
            # a core of its own; the mock's one write per SSE event is the limit.
            flag += " (the mock backend bounds direct streams, not the load generator)"
        out.append(f"direct/routed throughput, {row['scenario']}: {row['ratio']:.1f}x{flag}")
    out.extend(limits_summary(ms))
    for row in protocol_costs(ms):
        how = "translated to chat" if row["translated"] else "native"
        times = "-" if row["cpu_ratio"] is None else f"{row['cpu_ratio']:.2f}x"
        out.append(
            f"{row['protocol']} ({how}), {row['scenario']}: router CPU per request {times} "
            f"{row['base']}'s ({_num(row['cpu_us_per_request'], 0)} vs "
            f"{_num(row['base_cpu_us_per_request'], 0)} us)"
        )
    ratio = every_policy_ratio(ms, rounds)
    if ratio is not None:
        how = "the two rows"
        if rounds:
            spread = ", ".join(f"{r.ratio:.2f}" for r in rounds)
            how = f"median of {len(rounds)} back-to-back pairs: {spread}"
        out.append(
            f"every policy on / authentication alone, CPU per request ({ALL_BASE}): "
            f"{ratio:.2f}x ({how}; target <= {TARGET_ALL_CPU_RATIO:g}x)"
        )
    if transports:
        out.append("")
        out.append("backend transport, routed, 16 conns, 0 ms backend:")
        for m in transports:
            r = m.result
            out.append(
                f"  {m.transport:<8} {r.rps:>8,.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                f"p99 {r.p99_ms:.2f} ms  errors {r.errors}  "
                f"CPU {_num(m.router_cpu_us_per_request, 0)} us/req"
            )
    out.append("")
    out.append("targets (per router core, auth on):")
    for row in targets(ms, open_key, rounds):
        verdict = "met" if row["met"] else "MISSED"
        measured = "-" if row["measured"] is None else f"{row['measured']:,.2f}"
        sign = ">=" if "req/s" in row["target"] else "<="
        out.append(f"  {row['target']:<46} {sign} {row['goal']:>7,g}: {measured:>9}  {verdict}")
    return "\n".join(out)


def write_json(
    directory: Path,
    machine: dict[str, Any],
    settings: dict[str, Any],
    ms: Sequence[Measurement],
    transports: Sequence[Measurement],
    open_key: str,
    extra: dict[str, Any] | None = None,
    rounds: Sequence[CpuRound] = (),
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = directory / f"bench-{stamp}.json"
    document = {
        "machine": machine,
        "settings": settings,
        "measurements": [asdict(m) for m in ms],
        "transports": [asdict(m) for m in transports],
        "router_added_latency": added_latency(ms, open_key),
        "direct_routed_ratios": ratios(ms),
        "limits_added": limits_added(ms),
        "protocol_costs": protocol_costs(ms),
        "routing_costs": routing_costs(ms),
        "targets": targets(ms, open_key, rounds),
        "every_policy_cpu_ratio": every_policy_ratio(ms, rounds),
        "every_policy_cpu_rounds": [{**asdict(r), "ratio": round(r.ratio, 3)} for r in rounds],
        **(extra or {}),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
