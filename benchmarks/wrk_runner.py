"""Closed-loop runs with wrk (C, epoll): the fastest load generator when installed.

wrk gets a generated Lua script that sets the POST body and headers and, in
`done()`, prints one machine-readable line with the counts and the latency
percentiles, so nothing depends on wrk's human-readable report format.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from loadgen import Result, Spec

_MARK = "BENCH_RESULT"

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("%s %d %d %d %d %d %d %d %.1f %.1f %.1f %.1f\\n",
    "MARK", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(spec: Spec) -> str:
    body = spec.body
    if "]==]" in body:
        raise ValueError("request body cannot be quoted as a Lua long string")
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]"]
    for name, value in spec.headers.items():
        if '"' in name or '"' in value or "\\" in value:
            raise ValueError(f"header {name!r} cannot be quoted for Lua")
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if spec.idempotency_keys:
        # An Idempotency-Key of its own per request: this run's random prefix
        # and a counter (wrk runs one thread here, so the counter is unique).
        lines += [
            f'local prefix = "bench-{os.urandom(6).hex()}-"',
            "local counter = 0",
            "request = function()",
            "  counter = counter + 1",
            '  wrk.headers["Idempotency-Key"] = prefix .. counter',
            "  return wrk.format()",
            "end",
        ]
    return "\n".join(lines) + _DONE.replace("MARK", _MARK)


def parse(output: str) -> Result:
    for line in output.splitlines():
        if line.startswith(_MARK + " "):
            fields = line.split()[1:]
            requests, duration_us, *errors = (int(f) for f in fields[:7])
            p50, p90, p99, worst = (float(f) / 1000.0 for f in fields[7:])
            duration_s = duration_us / 1e6
            return Result(
                requests=requests,
                # connect/read/write errors, non-2xx-or-3xx answers (status > 399), timeouts
                errors=sum(errors),
                duration_s=round(duration_s, 3),
                rps=round(requests / duration_s, 1) if duration_s > 0 else 0.0,
                p50_ms=round(p50, 3),
                p90_ms=round(p90, 3),
                p99_ms=round(p99, 3),
                max_ms=round(worst, 3),
                connections=0,
            )
    raise RuntimeError(f"wrk printed no result line:\n{output}")


def run(spec: Spec) -> Result:
    """One closed-loop run of `spec` (its warm-up is the caller's business)."""
    if spec.rate is not None:
        raise ValueError("wrk runs closed loops only; use loadgen for fixed-rate runs")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "request.lua"
        script.write_text(lua_script(spec))
        command = [
            # wrk takes whole seconds only.
            "wrk", "-t1", f"-c{spec.concurrency}", f"-d{max(1, round(spec.duration_s))}s",
            f"--timeout={max(1, round(spec.timeout_s))}s", "-s", str(script), spec.url,
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=spec.duration_s + 60
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
