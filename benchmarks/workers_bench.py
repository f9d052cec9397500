"""`bench.py --workers-compare`: one worker on one core against two workers on two.

Both runs use the same config on Redis (the embedded store refuses a second
worker), the same mock backend and the same closed-loop load; only the
router's worker count and the cores it may use (taskset) change. On a box
with fewer than three cores the mock backend and the load generator share
the router's cores, so the ratio is indicative: it understates what two
dedicated cores give.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from loadgen import Result, Spec

from router_core.keys import hash_key
from router_server.mock_backend import MockBackendProcess, free_port
from router_server.process import RouterProcess

API_KEY = "rk_bench_" + "W" * 32
CHAT = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]})


def _config(port: int, backend_url: str, data_dir: Path) -> dict[str, Any]:
    return {
        "listeners": {"public": {"host": "127.0.0.1", "port": port}},
        "backends": {"fast": {"base_url": backend_url, "max_in_flight": 1024}},
        "models": {"bench": {"backends": [{"backend": "fast", "model": "mock-gpt"}]}},
        "organizations": {
            "bench": {"models": ["*"], "keys": [{"id": "bench", "hash": hash_key(API_KEY)}]}
        },
        "state": {"store": "redis", "dir": str(data_dir)},
    }


def _workers_up(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith("router_worker_up")]
    if not lines:  # a single process: no group metrics
        return 1
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines)


def run(
    workdir: Path,
    redis_url: str,
    run_load: Callable[[Spec], Result],
    duration_s: float,
    warmup_s: float,
    concurrency: int,
    output_dir: Path,
) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("bench: --workers-compare needs two usable cores", file=sys.stderr)
        return 2
    pin = shutil.which("taskset") is not None
    modes: Sequence[tuple[int, list[int]]] = ((1, cpus[:1]), (2, cpus[:2]))
    rows: list[dict[str, Any]] = []
    with MockBackendProcess(["--latency-ms", "0"]) as mock:
        for workers, on in modes:
            port = free_port("127.0.0.1")
            path = workdir / f"workers-{workers}.yaml"
            path.write_text(json.dumps(_config(port, mock.url, workdir / f"data-{workers}")))
            prefix = ["taskset", "-c", ",".join(map(str, on))] if pin else []
            with (workdir / f"workers-{workers}.log").open("wb") as log:
                router = RouterProcess(
                    path,
                    port=port,
                    args=["--workers", str(workers), "--no-access-log"],
                    env={"ROUTER_REDIS_URL": redis_url},
                    log=log,
                    command_prefix=prefix,
                    startup_timeout=60,
                )
                with router:
                    deadline = 120
                    while _workers_up(router.url) < workers and deadline > 0:
                        httpx.get(f"{router.url}/v1/status/healthz", timeout=5)
                        deadline -= 1
                    spec = Spec(
                        url=f"{router.url}/v1/chat/completions",
                        body=CHAT,
                        headers={
                            "Content-Type": "application/json",
                            "Authorization": f"Bearer {API_KEY}",
                        },
                        duration_s=warmup_s,
                        warmup_s=0.0,
                        concurrency=concurrency,
                    )
                    run_load(spec)
                    result = run_load(Spec(**{**spec.__dict__, "duration_s": duration_s}))
            row = {
                "workers": workers,
                "cpus": on if pin else "unpinned",
                "rps": round(result.rps, 1),
                # Answers that were not errors (sheds under overload included in `rps`).
                "ok_rps": round((result.requests - result.errors) / result.duration_s, 1),
                "p50_ms": round(result.p50_ms, 2),
                "p99_ms": round(result.p99_ms, 2),
                "errors": result.errors,
            }
            rows.append(row)
            print(
                f"{workers} worker(s) on cpus {row['cpus']}: {row['ok_rps']} ok req/s "
                f"({row['rps']} with errors), "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, {row['errors']} errors"
            )
    ratio = rows[1]["ok_rps"] / rows[0]["ok_rps"] if rows[0]["ok_rps"] else 0.0
    print(f"2 workers / 1 worker: {ratio:.2f}x (indicative: the load shares these cores)")
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / "workers-compare.json"
    out.write_text(json.dumps({"runs": rows, "ratio": round(ratio, 3)}, indent=2))
    print(f"written: {out}")
    return 0
