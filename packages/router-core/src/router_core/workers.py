"""How many router processes serve one box: `--workers`, `server.workers`, the cores.

Rules:
- The command line's `--workers` wins over `server.workers`; with neither,
  the count is the usable cores (the caller passes them: the core reads no
  system state) when `state.store` is redis, and 1 with the embedded store.
- The embedded store refuses more than one worker, whichever way it was
  asked for: its rate limits and budgets live in one process's memory, so N
  workers would each admit the whole limit and together N times it. The
  refusal names both fixes (a shared store, or one worker).
- Each worker owns a slot, 0 to N-1, for the life of the group: a worker
  that dies is replaced in the same slot, so its replacement drains the
  slot's usage spool (`spool_name`).
"""

from __future__ import annotations

from router_core.config import RouterConfig
from router_core.config_enums import StateStoreKind

MAX_WORKERS = 1024


class WorkersRefused(ValueError):
    """The worker count asked for cannot keep this config's promises."""


def embedded_refusal(workers: int) -> str:
    return (
        f"{workers} workers cannot share the embedded store: its limits live in each "
        f"process's memory, so every worker would admit the whole limit ({workers} times "
        "it in all); set state.store: redis (shared by every worker), or run one worker "
        "(--workers 1)"
    )


def worker_count(config: RouterConfig, requested: int | None, usable_cores: int) -> int:
    """The number of workers to run; `requested` is `--workers` (None: not given)."""
    asked = requested if requested is not None else config.server.workers
    if asked is not None and not 1 <= asked <= MAX_WORKERS:
        raise WorkersRefused(f"--workers must be between 1 and {MAX_WORKERS}, not {asked}")
    embedded = config.state.store == StateStoreKind.EMBEDDED
    if asked is None:
        return 1 if embedded else max(1, min(usable_cores, MAX_WORKERS))
    if embedded and asked > 1:
        raise WorkersRefused(embedded_refusal(asked))
    return asked


def spool_name(slot: int) -> str:
    """The directory, under `state.dir`, of worker `slot`'s usage spool. Slot 0
    keeps the single process's `spool`, so going from one worker to several
    (or back to one) leaves no records behind in it."""
    if slot < 0:
        raise ValueError(f"a worker slot is >= 0, not {slot}")
    return "spool" if slot == 0 else f"spool-worker-{slot}"
