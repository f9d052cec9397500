"""The benchmark still runs end to end (figures are never asserted, only sanity)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_quick_bench_runs_and_writes_its_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--no-pin",
         "--loadgen", "python", "--paced", "off", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.glob("bench-*.json")
    data = json.loads(written.read_text())
    measured = data["measurements"]
    paths = {(m["scenario"]["key"], m["path"]) for m in measured}
    assert ("chat-c16", "direct") in paths
    assert ("chat-c16", "routed") in paths
    # The limits runs (routed only): limits and budgets on, in memory and in Redis,
    # and every policy on (Redis limits, idempotency keys, ledger, Kafka export).
    limited = {m["scenario"]["key"]: m for m in measured if m["scenario"]["limits"]}
    assert set(limited) == {"chat-c16-memory", "chat-c16-redis", "open-rate-redis", "chat-c16-all"}
    assert all(m["path"] == "routed" for m in limited.values())
    # The every-policy run keeps the limits' default (short) wait, so on a loaded
    # machine it may take decisions in failure mode: only that it counted them.
    waited = {key: m for key, m in limited.items() if key != "chat-c16-all"}
    assert all(m["limit_store_failures"] == 0 for m in waited.values()), waited
    assert isinstance(limited["chat-c16-all"]["limit_store_failures"], int)
    assert {row["scenario"] for row in data["limits_added"]} == set(limited)
    assert isinstance(data["every_policy_cpu_ratio"], float)
    # --quick: one back-to-back pair (auth alone, every policy on), whose ratio
    # is then the one checked.
    (pair,) = data["every_policy_cpu_rounds"]
    assert pair["auth_us"] > 0
    assert pair["all_us"] > 0
    assert data["every_policy_cpu_ratio"] == round(pair["all_us"] / pair["auth_us"], 2)
    # Messages and Responses, native and translated, each against chat's CPU.
    costs = {row["scenario"]: row for row in data["protocol_costs"]}
    assert set(costs) == {
        f"{protocol}-{kind}-c16"
        for protocol in ("messages", "responses")
        for kind in ("native", "translated", "stream-translated")
    }
    assert all(isinstance(row["cpu_ratio"], float) for row in costs.values()), costs
    assert data["paced"] is None
    # The routing runs: least_load with prefix affinity against weighted, and
    # the decision alone in-process.
    assert [row["scenario"] for row in data["routing_costs"]] == ["fleet-affinity-c16"]
    assert isinstance(data["routing_costs"][0]["cpu_us_added"], float)
    assert isinstance(data["routing_decision_us"]["difference"], float)
    failed = [
        (m["scenario"]["key"], m["path"], m["result"]) for m in measured if m["result"]["errors"]
    ]
    assert not failed, (failed, result.stdout[-3000:])
    assert all(m["result"]["requests"] > 0 for m in measured)
    assert {t["transport"] for t in data["transports"]} == {"aiohttp", "httpx"}
    assert "router-added latency" in result.stdout
    assert "limits add" in result.stdout
    assert "every policy on / authentication alone" in result.stdout
    assert "median of 1 back-to-back pairs" in result.stdout


def test_paced_streaming_scenario_runs_alone(tmp_path: Path) -> None:
    """`--paced only` at a tiny N (no ramp): every run streams, counters are read."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--no-pin",
         "--paced", "only", "--paced-n", "2", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.glob("bench-*.json")
    data = json.loads(written.read_text())
    assert data["measurements"] == []  # no closed-loop run
    scenario = data["paced"]
    assert (scenario["saturating_n"], scenario["n_source"]) == (2, "given")
    assert scenario["ramp"] == []
    runs = {(r["run"], r["path"]): r for r in scenario["runs"]}
    assert set(runs) == {(run, path) for run in ("unloaded", "1x", "2x")
                         for path in ("direct", "routed")} | {("2x shed", "routed")}  # fmt: skip
    assert runs[("2x", "routed")]["concurrency"] == 4
    # The same 2x load, on a router with the busy limit on.
    assert runs[("2x shed", "routed")]["concurrency"] == 4
    for (_, path), run in runs.items():
        answered = run["result"]["answers"]
        assert answered.get("200", 0) > 0, (path, answered, result.stdout[-3000:])
        assert run["result"]["connected"] == run["concurrency"]
        assert run["result"]["events"] > 0
        if path == "routed":
            # Read from GET /v1/status; their values depend on the machine's load.
            assert isinstance(run["failure_decisions"], int)
            assert isinstance(run["settle_failures"], int)
            assert isinstance(run["router_cpu_percent"], float)
    assert {t["target"] for t in scenario["targets"]} >= {
        "refusal p99 ms at 2x (defaults)",
        "refusal p99 ms at 2x (busy limit on)",
    }
    assert "paced streaming" in result.stdout
    assert "saturating N" in result.stdout
