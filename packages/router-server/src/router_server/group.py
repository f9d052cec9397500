"""A worker's place in its group, and the group's metrics seen from any worker.

Rules:
- Each worker of `router serve --workers N` has a slot (0 to N-1) and, besides
  the public listener it shares with the others, a private Unix socket in the
  group's run directory on which it serves the same app to its peers.
- `/metrics` on any worker is the whole group's: the worker scrapes its peers'
  sockets (their own series only: `LOCAL_SCRAPE`) and adds a `worker` label to
  every sample, so `sum without (worker)` gives the group's totals and the
  component gauges (in flight, loop lag, circuits) stay per process. A peer
  that does not answer (being replaced) is `router_worker_up{worker=...} 0`.
- A replaced worker starts its counters from zero under the same `worker`
  label: a counter reset, which `rate()` and `increase()` already handle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

# The header a worker sends its peers for their own series alone (no fan-out).
LOCAL_SCRAPE = "x-router-worker-scrape"
_PEER_TIMEOUT_S = 2.0


@attrs.frozen
class WorkerSlot:
    slot: int
    count: int
    # The group's run directory: the workers' private sockets.
    run_dir: Path

    def socket_path(self, slot: int) -> Path:
        return self.run_dir / f"worker-{slot}.sock"

    @property
    def own_socket(self) -> Path:
        return self.socket_path(self.slot)

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker": self.slot, "workers": self.count}


def single_status() -> dict[str, Any]:
    """The `process` section of a router that is not part of a group."""
    return {"pid": os.getpid(), "worker": 0, "workers": 1}


def _labelled(line: str, worker: int) -> str:
    """A sample line with `worker="N"` added first among its labels."""
    for i, char in enumerate(line):
        if char == "{":
            return f'{line[: i + 1]}worker="{worker}",{line[i + 1 :]}'
        if char == " ":
            return f'{line[:i]}{{worker="{worker}"}}{line[i:]}'
    return line


def merge(parts: Sequence[tuple[int, bytes]]) -> bytes:
    """The text expositions of several workers as one: each family once, with
    its help and type from the first worker that has it, and every worker's
    samples under it with their `worker` label."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in parts:
        family = ""
        for line in text.decode().splitlines():
            if not line:
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                if name not in heads:
                    order.append(name)
                    heads[name], samples[name] = [], []
                if line.startswith("# HELP "):
                    family = name
                if len(heads[name]) < 2 and line not in heads[name]:
                    heads[name].append(line)
                continue
            if line.startswith("#"):
                continue
            samples.setdefault(family, []).append(_labelled(line, worker))
    out: list[str] = []
    for name in order:
        out.extend(heads[name])
        out.extend(samples[name])
    return ("\n".join(out) + "\n").encode()


def up_family(up: Mapping[int, bool]) -> bytes:
    lines = [
        "# HELP router_worker_up 1 if the worker answered this scrape (0: being replaced).",
        "# TYPE router_worker_up gauge",
        *(f'router_worker_up{{worker="{w}"}} {1.0 if ok else 0.0}' for w, ok in sorted(up.items())),
    ]
    return ("\n".join(lines) + "\n").encode()


async def _scrape_peer(worker: WorkerSlot, slot: int, headers: Mapping[str, str]) -> bytes | None:
    transport = httpx.AsyncHTTPTransport(uds=str(worker.socket_path(slot)))
    try:
        async with httpx.AsyncClient(transport=transport, timeout=_PEER_TIMEOUT_S) as client:
            answer = await client.get(
                "http://worker/metrics", headers={**headers, LOCAL_SCRAPE: "1"}
            )
    except httpx.HTTPError:
        return None
    return answer.content if answer.status_code == 200 else None


async def group_metrics(worker: WorkerSlot, own: bytes, headers: Mapping[str, str]) -> bytes:
    """The group's exposition, scraped from every peer at once."""
    found: dict[int, bytes | None] = {worker.slot: own}

    async def scrape(slot: int) -> None:
        found[slot] = await _scrape_peer(worker, slot, headers)

    async with anyio.create_task_group() as tg:
        for slot in range(worker.count):
            if slot != worker.slot:
                tg.start_soon(scrape, slot)
    parts = [(slot, text) for slot, text in sorted(found.items()) if text is not None]
    return merge(parts) + up_family({slot: text is not None for slot, text in found.items()})
