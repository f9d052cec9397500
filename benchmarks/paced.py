"""The paced-streaming scenario of `nox -s bench`: N streamed chats open at once.

The mock backend paces tokens (`--chunk-delay-ms` between SSE events), so a
stream lasts about tokens x delay and the router holds N of them at once, as
it does in production. Routed runs go through the router with every policy on
(bench.py's `limits: all`: Redis rate limits, quota and budget with prices,
an Idempotency-Key per request kept in Redis, the usage ledger, Kafka export);
direct runs go from the load generator (`streamgen.py`) to the mock backend.

Runs, each on both paths unless said otherwise:
- unloaded: a few streams (UNLOADED_N), the reference for time to first token;
- ramp (routed only, skipped when N is given): N doubling from RAMP_START
  until the router is saturated: its CPU reaches RAMP_CPU_PERCENT of one
  core, it no longer keeps the backend's pace, or an answer other than 200
  comes back (`saturated`); the saturating N is estimated from the steps
  (`saturating_n`);
- 1x and 2x that N;
- 2x shed (routed only): 2x again, on a router whose admission control sheds
  what its core cannot serve (SHEDDING_SERVER: the busy limit, no queue),
  to show what admitted streams keep when it is on. The targets are checked
  on both 2x runs: the defaults (no busy limit) and this one.

Each routed run reads the router's GET /v1/status before and after: the limits
counters `failure_decisions` and `settle_failures` (decisions taken, and
settlements lost, in store-failure mode) must stay 0 while Redis is healthy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamgen import StreamResult, StreamSpec

HERE = Path(__file__).resolve().parent
STREAMGEN = HERE / "streamgen.py"
PACED_MODEL = "bench-paced"
# Streams of the unloaded run, the reference for time to first token.
UNLOADED_N = 8
# The ramp: N doubles from RAMP_START up to RAMP_MAX, and stops at this CPU
# share of the router's core (or at the first answer that is not 200).
RAMP_START = 16
RAMP_MAX = 4096
RAMP_CPU_PERCENT = 85.0
# ...or when it delivers less than this share of the events its streams would
# carry at the unloaded pace (on a shared core the router is behind before its
# own CPU reaches RAMP_CPU_PERCENT).
RAMP_MIN_PACE = 0.9
# Targets of issue 13, on one router core.
TARGET_REFUSAL_P99_MS = 20.0
TARGET_TTFT_P99_RATIO = 3.0
# The `server` settings of the 2x shed run: an in-flight limit that keeps the
# router's core under 75 % busy (measured each 25 ms), refusing at once above
# it (docs/routing.md, "Backpressure and overload").
SHEDDING_SERVER: dict[str, Any] = {
    "admission": {"max_busy_percent": 75, "window_ms": 25},
    "queue_timeout_ms": 0,
}
SHED_RUN = "2x shed"
# Problem codes that mean "the store did not answer in time".
STORE_FAILURE_CODES = ("limits_unavailable", "idempotency_unavailable")


def steady_warmup_s(tokens: int, chunk_delay_ms: float, warmup_s: float) -> float:
    """The warm-up of the unloaded, 1x and 2x runs: at least two streams' lifetimes
    (tokens x delay), so their window opens on a steady state. The connections
    start spread over half the warm-up, all at once at first; the busy limit
    of the 2x shed run starts at the cap and settles within a few windows."""
    return max(warmup_s, 2 * tokens * chunk_delay_ms / 1000)


@dataclass(frozen=True)
class PacedOptions:
    tokens: int  # content tokens per stream (the request's max_tokens)
    chunk_delay_ms: float  # the mock backend's pause between SSE events
    duration_s: float  # measured window of each 1x, 2x and unloaded run
    warmup_s: float
    ramp_duration_s: float
    ramp_warmup_s: float
    n: int | None  # the saturating N, when given (no ramp)


@dataclass(frozen=True)
class StreamTarget:
    path: str  # "direct" or "routed"
    url: str
    model: str
    headers: dict[str, str]
    router_pid: int | None = None
    status_url: str | None = None
    router_core: int | None = None  # the core the router is pinned to


@dataclass(frozen=True)
class PacedRun:
    run: str  # "unloaded", "ramp", "1x", "2x"
    path: str
    concurrency: int
    result: StreamResult
    router_cpu_percent: float | None  # of one core, over the measured window
    router_cpu_us_per_event: float | None
    # How busy the router's core was over the window, whoever used it: above the
    # router's own CPU %, something else (on a shared machine) took its core.
    router_core_busy_percent: float | None
    # Counters of GET /v1/status: the change over the run, and the values after it.
    failure_decisions: int | None = None
    settle_failures: int | None = None
    idempotency_failures: int | None = None
    status_after: dict[str, Any] = field(default_factory=dict)


def chat_body(model: str, tokens: int) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell the benchmark a long story."}],
        "max_tokens": tokens,
        "stream": True,
        # Asked by the client, so the router relays the usage event rather than
        # stripping it: both paths then see the same events at the same pace.
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body, separators=(",", ":"))


def run_streams(spec: StreamSpec) -> StreamResult:
    command = [sys.executable, str(STREAMGEN), json.dumps(asdict(spec))]
    timeout = spec.warmup_s + spec.duration_s + spec.timeout_s + 120
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"stream generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return StreamResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def read_status(target: StreamTarget) -> dict[str, Any]:
    """The parts of GET /v1/status the scenario reports ({} on the direct path)."""
    if target.status_url is None:
        return {}
    with urllib.request.urlopen(target.status_url, timeout=10) as answer:
        status = json.load(answer)
    usage = status.get("usage") or {}
    return {
        "limits": status.get("limits") or {},
        "backpressure": status.get("backpressure") or {},
        "idempotency": usage.get("idempotency") or {},
    }


def _counter(status: dict[str, Any], section: str, name: str) -> int | None:
    value = (status.get(section) or {}).get(name)
    return value if isinstance(value, int) else None


def _change(before: dict[str, Any], after: dict[str, Any], section: str, name: str) -> int | None:
    b, a = _counter(before, section, name), _counter(after, section, name)
    return None if a is None or b is None else a - b


def measure(
    run: str,
    target: StreamTarget,
    concurrency: int,
    options: PacedOptions,
    duration_s: float,
    warmup_s: float,
) -> PacedRun:
    spec = StreamSpec(
        url=target.url,
        body=chat_body(target.model, options.tokens),
        headers=target.headers,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        idempotency_keys=target.path == "routed",
        watch_pid=target.router_pid,
    )
    before = read_status(target)
    result = run_streams(spec)
    after = read_status(target)
    cpu = result.watched_cpu_percent
    per_event = None
    if cpu is not None and result.events:
        per_event = round(cpu / 100 * duration_s / result.events * 1e6, 1)
    busy = result.core_busy_percent
    core = target.router_core
    core_busy = busy[core] if busy is not None and core is not None and core < len(busy) else None
    return PacedRun(
        run,
        target.path,
        concurrency,
        result,
        router_cpu_percent=cpu,
        router_cpu_us_per_event=per_event,
        router_core_busy_percent=core_busy,
        failure_decisions=_change(before, after, "limits", "failure_decisions"),
        settle_failures=_change(before, after, "limits", "settle_failures"),
        idempotency_failures=_change(before, after, "idempotency", "failures"),
        status_after=after,
    )


def refused(result: StreamResult) -> int:
    return sum(count for answer, count in result.answers.items() if answer != "200")


def pace(step: PacedRun, per_stream: float) -> float | None:
    """Events/s delivered over what `concurrency` streams at the unloaded pace carry."""
    if per_stream <= 0:
        return None
    return step.result.events_per_s / (step.concurrency * per_stream)


def saturated(step: PacedRun, per_stream: float) -> bool:
    """The router's core is full (CPU), or the router no longer keeps the pace
    (it delivers under RAMP_MIN_PACE of the events), or it refused a request."""
    kept = pace(step, per_stream)
    return (
        (step.router_cpu_percent or 0) >= RAMP_CPU_PERCENT
        or (kept is not None and kept < RAMP_MIN_PACE)
        or refused(step.result) > 0
    )


def saturating_n(steps: Sequence[PacedRun], per_stream: float) -> int:
    """N at which the router's core is full, from the ramp's steps (in order).

    Two estimates, the smaller wins: the last step that was not saturated,
    scaled by its CPU to 100% of the core (right when the router has its core
    to itself: CPU grows in proportion to N), and the streams the first
    saturated step's event rate carries at the unloaded pace (right when the
    core is shared, where the router is saturated before its CPU shows it).
    """
    clean = [s for s in steps if not saturated(s, per_stream)]
    first = next((s for s in steps if saturated(s, per_stream)), None)
    floor = clean[-1].concurrency if clean else 1
    estimates: list[int] = []
    if clean and clean[-1].router_cpu_percent:
        estimates.append(round(floor * 100 / clean[-1].router_cpu_percent))
    if first is not None and per_stream > 0:
        carried = round(first.result.events_per_s / per_stream)
        estimates.append(min(first.concurrency, max(floor, carried)))
    if not estimates:
        return steps[-1].concurrency
    return max(1, min(estimates))


def ramp(
    target: StreamTarget,
    options: PacedOptions,
    per_stream: float,
    progress: Callable[[PacedRun], None],
) -> tuple[int, list[PacedRun]]:
    steps: list[PacedRun] = []
    n = RAMP_START
    while n <= RAMP_MAX:
        step = measure("ramp", target, n, options, options.ramp_duration_s, options.ramp_warmup_s)
        steps.append(step)
        progress(step)
        if saturated(step, per_stream):
            break
        n *= 2
    return saturating_n(steps, per_stream), steps


@dataclass
class PacedReport:
    options: PacedOptions
    saturating_n: int
    n_source: str  # "ramp" or "given"
    ramp: list[PacedRun]
    runs: list[PacedRun]

    def document(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.options),
            "saturating_n": self.saturating_n,
            "n_source": self.n_source,
            "ramp": [asdict(r) for r in self.ramp],
            "runs": [asdict(r) for r in self.runs],
            "targets": targets(self.runs),
        }


def run_scenario(
    direct: StreamTarget,
    routed: StreamTarget,
    options: PacedOptions,
    progress: Callable[[PacedRun], None],
) -> PacedReport:
    runs: list[PacedRun] = []

    def both(run: str, n: int) -> None:
        for target in (direct, routed):
            runs.append(measure(run, target, n, options, options.duration_s, options.warmup_s))
            progress(runs[-1])

    both("unloaded", min(UNLOADED_N, options.n) if options.n is not None else UNLOADED_N)
    steps: list[PacedRun] = []
    if options.n is not None:
        n, source = options.n, "given"
    else:
        # Events per second one stream carries at the backend's pace, unloaded.
        reference = runs[0]
        per_stream = reference.result.events_per_s / reference.concurrency
        n, steps = ramp(routed, options, per_stream, progress)
        source = "ramp"
    print(f"  saturating N (one router core, every policy on): {n} ({source})", flush=True)
    both("1x", n)
    both("2x", 2 * n)
    return PacedReport(options, n, source, steps, runs)


def run_shedding(report: PacedReport, shedding: StreamTarget) -> None:
    """The 2x run again against `shedding` (a router on SHEDDING_SERVER)."""
    o = report.options
    n = 2 * report.saturating_n
    report.runs.append(measure(SHED_RUN, shedding, n, o, o.duration_s, o.warmup_s))


def _find(runs: Sequence[PacedRun], run: str, path: str) -> PacedRun | None:
    return next((r for r in runs if r.run == run and r.path == path), None)


def store_failures(run: PacedRun) -> int:
    """Answers and counters that say the store was taken for down."""
    answered = sum(
        count
        for answer, count in run.result.answers.items()
        if any(code in answer for code in STORE_FAILURE_CODES)
    )
    return answered + (run.failure_decisions or 0) + (run.settle_failures or 0)


def targets(runs: Sequence[PacedRun]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def check(name: str, measured: float | None, goal: float, vacuous: bool = False) -> None:
        # vacuous: nothing to measure (no refusal at all) meets the target.
        ok = (measured is None and vacuous) or (measured is not None and measured <= goal)
        rows.append({"target": name, "goal": goal, "measured": measured, "met": ok})

    routed = [r for r in runs if r.path == "routed"]
    check(
        "store-failure answers + failure_decisions + settle_failures, every routed run",
        float(sum(store_failures(r) for r in routed)) if routed else None,
        0,
    )
    unloaded = _find(runs, "unloaded", "routed")
    for run, note in (("2x", "defaults"), (SHED_RUN, "busy limit on")):
        loaded = _find(runs, run, "routed")
        if loaded is None:
            continue
        refusals = loaded.result.refusal_ms
        check(
            f"refusal p99 ms at 2x ({note})",
            refusals["p99"] if refusals["count"] else None,
            TARGET_REFUSAL_P99_MS,
            vacuous=True,
        )
        if unloaded is not None and unloaded.result.ttft_ms["count"]:
            base = unloaded.result.ttft_ms["p99"]
            ratio = loaded.result.ttft_ms["p99"] / base if base else None
            check(
                f"TTFT p99 at 2x / unloaded TTFT p99 ({note})",
                None if ratio is None else round(ratio, 2),
                TARGET_TTFT_P99_RATIO,
            )
    return rows


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _answers(result: StreamResult) -> str:
    return ", ".join(f"{answer}: {count}" for answer, count in result.answers.items()) or "none"


def table(report: PacedReport) -> str:
    o = report.options
    header = (
        f"{'run':<8} {'path':<7} {'N':>5} {'events/s':>9} {'req/s':>7} {'TTFT p50':>8} "
        f"{'TTFT p99':>8} {'gap p50':>7} {'gap p99':>7} {'refused':>7} {'ref p99':>7} "
        f"{'CPU %':>6} {'core %':>6} {'us/event':>8} {'fail dec':>8} {'settle f':>8}"
    )
    lines = [
        f"paced streaming: {o.tokens} tokens a stream, {o.chunk_delay_ms:g} ms between events; "
        f"routed with every policy on; saturating N = {report.saturating_n} ({report.n_source})",
        header,
        "-" * len(header),
    ]
    for r in [*report.ramp, *report.runs]:
        res = r.result
        lines.append(
            f"{r.run:<8} {r.path:<7} {r.concurrency:>5} {res.events_per_s:>9,.0f} "
            f"{res.requests / res.duration_s if res.duration_s else 0:>7,.0f} "
            f"{res.ttft_ms['p50']:>8.1f} {res.ttft_ms['p99']:>8.1f} "
            f"{res.gap_ms['p50']:>7.1f} {res.gap_ms['p99']:>7.1f} {refused(res):>7} "
            f"{_num(res.refusal_ms['p99'] if res.refusal_ms['count'] else None):>7} "
            f"{_num(r.router_cpu_percent, 0):>6} {_num(r.router_core_busy_percent, 0):>6} "
            f"{_num(r.router_cpu_us_per_event, 0):>8} "
            f"{_num(r.failure_decisions, 0):>8} {_num(r.settle_failures, 0):>8}"
        )
    lines.append("answers by status and code (requests sent inside each window):")
    for r in [*report.ramp, *report.runs]:
        lines.append(f"  {r.run:<8} {r.path:<7} {r.concurrency:>5}  {_answers(r.result)}")
    lines.append(
        "Times in ms: TTFT from the send to the first content event; gap between consecutive "
        "events of a stream; ref p99: latency of answers other than 200. CPU % (of one core) "
        "and us/event are the router's over the window, core % how busy its core was (by "
        "anyone: above CPU %, the core was shared); fail dec / settle f: the change of "
        "limits.failure_decisions / limits.settle_failures in GET /v1/status over the run."
    )
    lines.append("")
    lines.append("targets (paced streaming, every policy on, one router core):")
    for row in targets(report.runs):
        verdict = "met" if row["met"] else "MISSED"
        measured = "none" if row["measured"] is None else f"{row['measured']:,.2f}"
        lines.append(f"  {row['target']:<78} <= {row['goal']:>5,g}: {measured:>9}  {verdict}")
    return "\n".join(lines)
