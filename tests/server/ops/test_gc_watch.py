"""The cycle collector: the server sets its young threshold from the config and
reports every collection's pause, in /v1/status and /metrics."""

from __future__ import annotations

import gc
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from router_server import gc_watch
from router_server.gc_watch import RECENT_S, GcWatch

from tests.helpers.support import CHAT, auth


def test_a_collection_is_counted_in_its_generation_with_its_pause() -> None:
    watch = gc_watch.watch()
    assert gc_watch.watch() is watch  # one per process: the collector's callbacks are
    before = watch.status()
    gc.collect(1)
    after = watch.status()
    assert after["collections"][1] == before["collections"][1] + 1
    assert after["collections"][0] == before["collections"][0]
    assert after["pause_s"][1] > before["pause_s"][1]
    assert after["longest_pause_ms"] > 0
    assert after["recent_longest_pause_ms"] > 0


def test_the_recent_longest_pause_forgets_pauses_older_than_the_window() -> None:
    watch = GcWatch()
    watch.callback("start", {"generation": 0})
    watch.callback("stop", {"generation": 0, "collected": 5})
    assert watch.collections == [1, 0, 0]
    assert watch.collected == [5, 0, 0]
    # A long pause from before the window, and the one just timed.
    watch._recent.appendleft((time.monotonic() - RECENT_S - 1, 0.5))
    watch.longest_pause_s = 0.5
    status = watch.status()
    assert status["longest_pause_ms"] == 500.0
    assert 0 < status["recent_longest_pause_ms"] < 500
    # A stop without its start (the watch installed mid-collection) is ignored.
    watch.callback("stop", {"generation": 2, "collected": 1})
    assert watch.collections == [1, 0, 0]


def _chat_on_new_connections(url: str, n: int) -> None:
    """`n` requests, each on a connection of its own: a closed connection leaves
    its objects (hypercorn's, in cycles) to the collector."""
    for _ in range(n):
        answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(), timeout=10)
        assert answer.status_code == 200, answer.text


def _gc_samples(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, s.labels.get("generation", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("router_gc_")
    }


def test_the_server_collects_at_the_configured_threshold_and_reports_each_pause(
    start_router: Any, config_data: dict[str, Any]
) -> None:
    # At CPython's own threshold, the garbage of a few dozen closed connections
    # sets the collector off.
    data = {**config_data, "server": {**config_data.get("server", {}), "gc_young_threshold": 700}}
    router = start_router(data)
    _chat_on_new_connections(router.url, 200)
    status = httpx.get(f"{router.url}/v1/status", timeout=10).json()["gc"]
    assert status["threshold"][0] == 700
    assert status["enabled"] is True
    assert status["frozen_objects"] > 10_000  # the start-up heap, frozen once ready
    assert status["collections"][0] >= 5
    assert status["collected"][0] >= 1_000
    assert status["pause_s"][0] > 0
    assert status["longest_pause_ms"] > 0
    metrics = _gc_samples(router.url)
    assert metrics[("router_gc_collections_total", "0")] >= status["collections"][0]
    assert metrics[("router_gc_pause_seconds_total", "0")] > 0
    assert ("router_gc_recent_longest_pause_seconds", "") in metrics


def test_on_the_default_threshold_that_garbage_does_not_set_the_collector_off(
    start_router: Any, config_data: dict[str, Any]
) -> None:
    router = start_router(config_data)
    before = httpx.get(f"{router.url}/v1/status", timeout=10).json()["gc"]
    _chat_on_new_connections(router.url, 200)
    after = httpx.get(f"{router.url}/v1/status", timeout=10).json()["gc"]
    assert after["threshold"][0] == 200_000
    # The same requests at 700 ran five collections or more (above); here, none.
    assert after["collections"] == before["collections"]
