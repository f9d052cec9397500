"""How fast `router simulate` replays a large trace.

    python benchmarks/simulate_bench.py [--requests 1000000] [--no-limits]

Writes a synthetic trace for `examples/policy.yaml` (Poisson arrivals at
200/s) to a temporary file, then runs `router simulate --format json` on it with
`examples/faults.yaml` as a separate process and reports its wall and CPU
time. By default the policy's limits are raised so that requests flow, while
every request is still checked against a rate limit and a budget (acme) or
a quota (globex); `--no-limits` drops them, to see the routing alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "examples" / "policy.yaml"
FAULTS = ROOT / "examples" / "faults.yaml"


def bench_config(no_limits: bool) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(POLICY.read_text()))
    orgs = data["organizations"]
    if no_limits:
        for org in orgs.values():
            org.pop("limits", None)
    else:
        orgs["acme"]["limits"] = {
            "requests": {"rate": 1000, "per": "second"},
            "budget": {"per_day": 100_000},
        }
        orgs["globex"]["limits"] = {"quotas": {"requests_per_day": 10_000_000}}
    return data


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--no-limits", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(ROOT / "packages" / p / "src") for p in ("router-core", "router-server", "router-cli")
    )}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "policy.yaml"
        config.write_text(yaml.safe_dump(bench_config(args.no_limits), sort_keys=False))
        trace = Path(tmp) / "trace.jsonl"
        subprocess.run(
            [sys.executable, "-m", "router_cli.simulate.synth", "--config", str(config),
             "--requests", str(args.requests), "--rate", "200", "--out", str(trace)],
            check=True, env=env,
        )  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "router_cli.main", "simulate", "--config", str(config),
             "--trace", str(trace), "--faults", str(FAULTS), "--format", "json"],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = orjson.loads(done.stdout)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    result = {
        "requests": summary["requests"],
        "served": summary["served"],
        "denied": summary["denied"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "us_per_request_cpu": round(cpu / max(1, summary["requests"]) * 1e6, 1),
        "max_rss_mb": round(after.ru_maxrss / 1024, 1),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
