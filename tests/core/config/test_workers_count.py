"""How many workers serve one box: the flag, the config, the cores, the store."""

from __future__ import annotations

from typing import Any

import pytest

from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid, structure
from router_core.workers import WorkersRefused, spool_name, worker_count


def data(store: str = "embedded", workers: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "backends": {"a": {"base_url": "http://127.0.0.1:9"}},
        "models": {"m": {"backends": [{"backend": "a"}]}},
        "state": {"store": store},
    }
    if workers is not None:
        out["server"] = {"workers": workers}
    return out


def config(store: str = "embedded", workers: int | None = None) -> RouterConfig:
    return structure(data(store, workers))


def test_unset_means_every_usable_core_on_redis_and_one_embedded() -> None:
    assert worker_count(config("redis"), None, usable_cores=8) == 8
    assert worker_count(config("embedded"), None, usable_cores=8) == 1


def test_the_flag_wins_over_the_config() -> None:
    assert worker_count(config("redis", workers=4), 2, usable_cores=8) == 2
    assert worker_count(config("redis", workers=4), None, usable_cores=8) == 4
    assert worker_count(config("embedded", workers=1), 1, usable_cores=8) == 1


def test_embedded_store_refuses_more_than_one_worker_naming_both_fixes() -> None:
    with pytest.raises(WorkersRefused) as refused:
        worker_count(config("embedded"), 2, usable_cores=8)
    message = str(refused.value)
    assert "state.store: redis" in message
    assert "--workers 1" in message


def test_config_with_embedded_store_and_workers_is_invalid() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        structure(data("embedded", workers=3))
    found = {p.path: p.message for p in caught.value.problems}
    assert "state.store: redis" in found["server.workers"]


@pytest.mark.parametrize("bad", [0, -1, 1025])
def test_out_of_range_counts_are_refused(bad: int) -> None:
    with pytest.raises(WorkersRefused, match="between 1 and 1024"):
        worker_count(config("redis"), bad, usable_cores=2)
    with pytest.raises(ConfigInvalid):
        structure(data("redis", workers=bad))


def test_slot_zero_keeps_the_single_process_spool() -> None:
    assert spool_name(0) == "spool"
    assert spool_name(3) == "spool-worker-3"
    assert len({spool_name(i) for i in range(64)}) == 64
    with pytest.raises(ValueError, match=">= 0"):
        spool_name(-1)
