"""The machine under the benchmark: core pinning, and a process's CPU time and memory."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pinning:
    router_cpu: int | None
    others_cpu: int | None
    note: str

    def router_prefix(self) -> list[str]:
        return [] if self.router_cpu is None else ["taskset", "-c", str(self.router_cpu)]


def choose_pinning(enabled: bool) -> Pinning:
    if not enabled:
        return Pinning(None, None, "off (--no-pin)")
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return Pinning(None, None, "off (no taskset / sched_setaffinity on this platform)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None, f"off (only {len(cpus)} core available)")
    router, others = cpus[0], cpus[1]
    return Pinning(
        router, others, f"router on cpu {router}; mock backends + load generator on cpu {others}"
    )


def apply_pinning(pinning: Pinning) -> None:
    """Pin this process; the mock backends and load generators inherit it."""
    if pinning.others_cpu is not None:
        os.sched_setaffinity(0, {pinning.others_cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def machine_info(pinning: Pinning, load_generator: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pinning": pinning.note,
        "load_generator": load_generator,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def git_commit() -> str | None:
    """HEAD, with "-dirty" when the work tree has changes; None outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")
