"""`router serve --workers 2` on a real Redis: real processes, a real shared listener.

Every check polls with a generous deadline and asserts on counts, never on
time: which worker accepts a connection is the kernel's choice, so the tests
send until each worker has been seen, then check the totals exactly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router_core.accounting.frames import FrameKind
from router_core.accounting.records import Outcome, TokenCounts, UsageRecord
from router_core.accounting.wire import usage_to_wire
from router_core.config import SpoolSettings
from router_core.workers import spool_name
from router_server.process import RouterProcess
from router_server.usage.spool import Spool

from tests.helpers.support import (
    ACME_KEY,
    CHAT,
    auth,
    eventually,
    patient_backends,
    redis_state,
    write_config,
)

REDIS_ENV = "ROUTER_TEST_WORKERS_REDIS"
DEADLINE_S = 60.0


class Group:
    """A supervisor with its workers, its config file and its data directory."""

    def __init__(self, tmp_path: Path, data: dict[str, Any], env: dict[str, str]) -> None:
        self.data_dir = tmp_path / "data"
        self.data = dict(data)
        self.data["state"] = redis_state(REDIS_ENV, dir=str(self.data_dir))
        self.path = write_config(tmp_path / "router.yaml", self.data)
        self.log: IO[bytes] = (tmp_path / "router.log").open("wb")
        self.router = RouterProcess(
            self.path, args=["--workers", "2"], env=env, log=self.log, startup_timeout=DEADLINE_S
        )

    def start(self) -> Group:
        self.router.start()
        assert eventually(lambda: self.workers_up() == 2, DEADLINE_S), "the workers never all rose"
        return self

    def close(self) -> None:
        self.router.stop(timeout=DEADLINE_S)
        self.log.close()

    @property
    def url(self) -> str:
        return self.router.url

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def workers_up(self) -> int:
        try:
            found = self.metrics()
        except httpx.HTTPError:
            return 0
        return int(sum(v for (name, _), v in found.items() if name == "router_worker_up"))

    def chats_by_worker(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (name, labels), value in self.metrics().items():
            label = dict(labels)
            if name == "router_requests_total" and label["route"] == "/v1/chat/completions":
                counts[label["worker"]] += int(value)
        return counts

    def status(self) -> dict[str, Any]:
        # A new connection each time: any worker may take it.
        answer: dict[str, Any] = httpx.get(f"{self.url}/v1/status", timeout=10).json()
        return answer

    def pids_by_slot(self, until: int = 2) -> dict[int, int]:
        seen: dict[int, int] = {}

        def both() -> bool:
            process = self.status()["process"]
            seen[process["worker"]] = process["pid"]
            return len(seen) >= until

        assert eventually(both, DEADLINE_S, step=0.01), f"saw only workers {sorted(seen)}"
        return seen

    def ledger_request_ids(self) -> Counter[str]:
        path = self.data_dir / "usage.sqlite3"
        if not path.exists():
            return Counter()
        with sqlite3.connect(path, timeout=10) as db:
            rows = db.execute("SELECT request_id FROM usage_records").fetchall()
        return Counter(row[0] for row in rows)


@pytest.fixture
def group(
    tmp_path: Path, config_data: dict[str, Any], backend_env: dict[str, str], redis_url: str
) -> Iterator[Group]:
    made = Group(tmp_path, patient_backends(config_data), {**backend_env, REDIS_ENV: redis_url})
    yield made
    made.close()


def chats(url: str, n: int) -> list[httpx.Response]:
    """`n` chat completions at once, each on a connection of its own."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        timeout = httpx.Timeout(60, pool=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            calls = [
                client.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(ACME_KEY))
                for _ in range(n)
            ]
            return list(await asyncio.gather(*calls))

    return asyncio.run(run())


def test_two_workers_serve_and_metrics_count_the_requests_of_both(group: Group) -> None:
    group.start()
    pids = group.pids_by_slot()
    assert sorted(pids) == [0, 1]
    assert len(set(pids.values())) == 2
    assert group.router.pid not in pids.values()  # the supervisor serves nothing itself
    sent = 0
    while sent < 400 and len(group.chats_by_worker()) < 2:
        answers = chats(group.url, 16)
        assert [a.status_code for a in answers] == [200] * 16
        sent += 16
    by_worker = group.chats_by_worker()
    assert sorted(by_worker) == ["0", "1"], by_worker
    assert all(count > 0 for count in by_worker.values())
    assert sum(by_worker.values()) == sent  # every request of both, each once


def test_a_request_quota_across_workers_admits_exactly_its_limit(
    tmp_path: Path,
    config_data: dict[str, Any],
    backend_env: dict[str, str],
    redis_url: str,
) -> None:
    limit = 40
    data = patient_backends(config_data)
    data["limits"] = {"timeout_ms": 1000}
    # The subject is exactness: no request shed for the loop lag a burst makes.
    data["server"] = {**data["server"], "admission": {"max_loop_lag_ms": None}}
    data["organizations"]["acme"]["limits"] = {"requests": {"rate": limit, "per": "hour"}}
    group = Group(tmp_path, data, {**backend_env, REDIS_ENV: redis_url})
    try:
        group.start()
        statuses = Counter(a.status_code for a in chats(group.url, 3 * limit))
        assert statuses == Counter({200: limit, 429: 2 * limit})
        by_worker = group.chats_by_worker()
        assert sum(by_worker.values()) == 3 * limit
        assert sorted(by_worker) == ["0", "1"]  # both took part in the one burst
        for _ in range(4):  # the store answered every decision: none by failure policy
            assert group.status()["limits"]["failure_decisions"] == 0
    finally:
        group.close()


class Load:
    """Chat completions, one connection each, from a few threads until stopped;
    keeps the request id of every answer that came back."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.answered: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = httpx.post(
                    f"{self.url}/v1/chat/completions", json=CHAT, headers=auth(ACME_KEY), timeout=60
                )
            except httpx.HTTPError:  # in flight on the worker that was killed
                with self._lock:
                    self.failed += 1
                continue
            with self._lock:
                if answer.status_code == 200:
                    self.answered.append(answer.headers["x-request-id"])
                else:
                    self.failed += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE_S)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def test_a_killed_worker_is_replaced_and_every_record_lands_once_in_the_ledger(
    group: Group,
) -> None:
    group.start()
    before = group.pids_by_slot()
    with Load(group.url) as load:
        assert eventually(lambda: load.count() >= 40, DEADLINE_S)
        os.kill(before[1], signal.SIGKILL)
        at_kill = load.count()
        # Replaced in its slot (a new pid), and the group serves on meanwhile.
        assert eventually(lambda: group.pids_by_slot().get(1) not in (None, before[1]), DEADLINE_S)
        assert eventually(lambda: load.count() >= at_kill + 40, DEADLINE_S)
    answered = load.answered
    assert len(set(answered)) == len(answered)
    # Every answered request's record, the killed worker's included (its spool is
    # drained by the replacement), and none twice.
    assert eventually(
        lambda: set(answered) <= set(group.ledger_request_ids()), DEADLINE_S, step=0.2
    ), f"missing {len(set(answered) - set(group.ledger_request_ids()))} records"
    assert max(group.ledger_request_ids().values()) == 1
    assert group.pids_by_slot()[0] == before[0]  # the other worker was left alone
    assert group.workers_up() == 2


def test_sigterm_stops_every_worker_after_draining_their_spools(group: Group) -> None:
    group.start()
    pids = group.pids_by_slot()
    answers = chats(group.url, 30)
    assert [a.status_code for a in answers] == [200] * 30
    ids = {a.headers["x-request-id"] for a in answers}
    supervisor = group.router
    assert supervisor._proc is not None
    proc: subprocess.Popen[bytes] = supervisor._proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(DEADLINE_S) == 0
    # The workers are gone too, not orphaned on the port.
    assert eventually(lambda: not any(_alive(pid) for pid in pids.values()), DEADLINE_S)
    assert set(group.ledger_request_ids()) >= ids
    assert max(group.ledger_request_ids().values()) == 1
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{group.url}/v1/status/healthz", timeout=2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of the exited supervisor's child would still answer: check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sighup_to_the_supervisor_reloads_every_worker(group: Group) -> None:
    # Only the signal reloads here: the file is not watched within the test.
    group.data["server"] = {**group.data["server"], "config_watch_s": 3600}
    write_config(group.path, group.data)
    group.start()
    group.pids_by_slot()
    changed = dict(group.data)
    changed["models"] = {**changed["models"], "chat-renamed": changed["models"]["chat"]}
    write_config(group.path, changed)
    assert group.router._proc is not None
    group.router._proc.send_signal(signal.SIGHUP)
    reloaded: set[int] = set()

    def both_reloaded() -> bool:
        status = group.status()
        if status["config"]["reloads"] >= 1:
            reloaded.add(status["process"]["worker"])
        return reloaded == {0, 1}

    assert eventually(both_reloaded, DEADLINE_S, step=0.01), f"reloaded: {sorted(reloaded)}"
    models = httpx.get(f"{group.url}/v1/models", headers=auth(ACME_KEY)).json()["data"]
    assert "chat-renamed" in {m["id"] for m in models}
    assert group.workers_up() == 2  # nobody died of the signal


def test_a_removed_slots_spool_is_drained_by_the_smaller_group(group: Group) -> None:
    # Records a third worker appended but never exported (the group ran with
    # --workers 3 and stopped before draining), found by a group of two.
    orphan = group.data_dir / spool_name(2)
    spool = Spool.open(orphan, SpoolSettings(), ["ledger"])
    ids = [f"orphan-{i}" for i in range(5)]
    for request_id in ids:
        record = UsageRecord(
            record_id=str(uuid.uuid4()), request_id=request_id, client_request_id=None,
            organization="acme", key_id="acme1", route="/v1/chat/completions",
            operation="chat", model="chat", backend="mock-a", backend_model="mock-gpt",
            stream=False, started_at_us=1_796_000_000_000_000,
            finished_at_us=1_796_000_000_100_000, latency_ms=100.0, ttft_ms=None,
            status=200, outcome=Outcome.SUCCESS, reason=None, usage=TokenCounts(1, 1, 2),
            cost_nano_usd=None, router_instance="gone:1",
        )  # fmt: skip
        spool.append(FrameKind.USAGE, orjson.dumps(usage_to_wire(record)), 1_796_000_000_000_000)
    spool.close()
    group.start()
    assert eventually(lambda: set(ids) <= set(group.ledger_request_ids()), DEADLINE_S, step=0.2)
    assert max(group.ledger_request_ids().values()) == 1
    # Acknowledged: the spool holds nothing the ledger has yet to read. The
    # cursor is written after the ledger's insert commits, so it may lag the
    # records just seen (a fresh-clone run on a loaded machine caught that).
    cursor_file = orphan / "cursor.ledger"

    def acknowledged() -> bool:
        spooled = sum(p.stat().st_size for p in orphan.glob("*.spool"))
        return cursor_file.exists() and int(cursor_file.read_text() or 0) == spooled

    assert eventually(acknowledged, DEADLINE_S, step=0.2)


def test_group_metrics_behind_the_ops_token_need_it_and_pass_it_to_the_peers(
    tmp_path: Path, config_data: dict[str, Any], backend_env: dict[str, str], redis_url: str
) -> None:
    token = "ops-" + "T" * 32
    data = patient_backends(config_data)
    data["observability"] = {"ops_token_env": "ROUTER_TEST_WORKERS_OPS"}
    env = {**backend_env, REDIS_ENV: redis_url, "ROUTER_TEST_WORKERS_OPS": token}
    group = Group(tmp_path, data, env)
    try:
        group.router.start()
        assert httpx.get(f"{group.url}/metrics", timeout=10).status_code == 401

        def up() -> float:
            answer = httpx.get(
                f"{group.url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10
            )
            assert answer.status_code == 200
            return sum(
                s.value
                for family in text_string_to_metric_families(answer.text)
                for s in family.samples
                if s.name == "router_worker_up"
            )

        # Each peer answers the token it was handed (a peer refusing it is "down").
        assert eventually(lambda: up() == 2, DEADLINE_S)
        assert token not in (tmp_path / "router.log").read_text()
    finally:
        group.close()
