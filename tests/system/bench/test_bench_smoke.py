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
         "--loadgen", "python", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.glob("bench-*.json")
    data = json.loads(written.read_text())
    measured = data["measurements"]
    paths = {(m["scenario"]["key"], m["path"]) for m in measured}
    assert ("chat-c16", "direct") in paths
    assert ("chat-c16", "routed") in paths
    # The limits runs (routed only): limits and budgets on, in memory and in Redis.
    limited = {m["scenario"]["key"]: m for m in measured if m["scenario"]["limits"]}
    assert set(limited) == {"chat-c16-memory", "chat-c16-redis", "open-rate-redis"}
    assert all(m["path"] == "routed" for m in limited.values())
    assert all(m["limit_store_failures"] == 0 for m in limited.values()), limited
    assert {row["scenario"] for row in data["limits_added"]} == set(limited)
    failed = [
        (m["scenario"]["key"], m["path"], m["result"]) for m in measured if m["result"]["errors"]
    ]
    assert not failed, (failed, result.stdout[-3000:])
    assert all(m["result"]["requests"] > 0 for m in measured)
    assert {t["transport"] for t in data["transports"]} == {"aiohttp", "httpx"}
    assert "router-added latency" in result.stdout
    assert "limits add" in result.stdout
