"""Shared test helpers: keys, configs, and request bodies."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import yaml
from starlette.testclient import TestClient

from router_core import keys
from router_server.limits import MemoryLimitStore

ACME_KEY = keys.format_key("acme1", "A" * 32)
GLOBEX_KEY = keys.format_key("globex1", "G" * 32)
REVOKED_KEY = keys.format_key("revoked1", "R" * 32)
# The credential the second mock backend demands; only the router knows it.
BACKEND_SECRET = "backend-secret-" + "Z" * 20
BACKEND_SECRET_ENV = "ROUTER_TEST_MOCK_B_KEY"

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


def auth(key: str = ACME_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def raw_post(body: bytes, path: str = "/v1/chat/completions", key: str = ACME_KEY) -> bytes:
    """A JSON POST as an HTTP/1.1 client writes it on a socket (kept alive)."""
    return b"\r\n".join([
        f"POST {path} HTTP/1.1".encode(),
        b"host: router",
        b"content-type: application/json",
        b"authorization: Bearer " + key.encode(),
        b"content-length: %d" % len(body),
        b"",
        body,
    ])  # fmt: skip


def base_config(mock_a_url: str, mock_b_url: str) -> dict[str, Any]:
    """Two backends; `chat` spread over both, `embed` on A only, `b-only` on B."""
    return {
        "server": {"request_timeout_s": 10},
        # A probe that times out opens the circuit; on a loaded machine a healthy
        # mock can take longer than half a second to list its models, and the
        # tests' backends fail by refusing connections or hanging requests.
        "health": {"probe_interval_s": 0.5, "probe_timeout_s": 5},
        "backends": {
            "mock-a": {"base_url": mock_a_url, "connect_timeout_s": 1, "read_timeout_s": 5},
            "mock-b": {
                "base_url": mock_b_url,
                "api_key_env": BACKEND_SECRET_ENV,
                "connect_timeout_s": 1,
                "read_timeout_s": 5,
            },
        },
        "models": {
            "chat": {
                "backends": [
                    {"backend": "mock-a", "model": "mock-gpt", "weight": 1},
                    {"backend": "mock-b", "model": "mock-gpt", "weight": 1},
                ]
            },
            "embed": {"backends": [{"backend": "mock-a", "model": "mock-embed"}]},
            "b-only": {"backends": [{"backend": "mock-b", "model": "mock-gpt-b"}]},
        },
        "organizations": {
            "acme": {
                "models": ["*"],
                "keys": [
                    {"id": "acme1", "hash": keys.hash_key(ACME_KEY)},
                    {"id": "revoked1", "hash": keys.hash_key(REVOKED_KEY), "revoked": True},
                ],
            },
            "globex": {
                "models": ["chat"],
                "keys": [{"id": "globex1", "hash": keys.hash_key(GLOBEX_KEY)}],
            },
        },
    }


def with_changes(config: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A deep copy of `config` with top-level sections merged one level deep."""
    result = copy.deepcopy(config)
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = {**result[name], **value}
        else:
            result[name] = value
    return result


def with_data_dir(config: dict[str, Any], directory: Path) -> dict[str, Any]:
    """`config` with every file the router keeps under `directory` (`state.dir`):
    usage data (ledger, spool), and the embedded stores (idempotency keys, admin
    overrides, managed keys and nonces). The default is relative to the working
    directory, which another router may be using; a directory the test chose
    itself is kept. Each app needs its own."""
    state = config.get("state") or {}
    return {**config, "state": {"dir": str(directory), **state}}


def redis_state(url_env: str, **more: Any) -> dict[str, Any]:
    """A `state` section keeping every store in the Redis whose URL is in `url_env`."""
    redis = {"url_env": url_env, **more.pop("redis", {})}
    return {"store": "redis", "redis": redis, **more}


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def eventually(condition: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Whether `condition()` becomes true within `timeout` seconds (for real servers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


DAY_US = 86_400_000_000
# 2026-01-31 12:00 UTC: a day before a month ends.
JAN_31_NOON = (20_484 * DAY_US) + DAY_US // 2


@attrs.define
class Clock:
    now: int = JAN_31_NOON

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


@attrs.define
class Limited:
    client: TestClient
    store: MemoryLimitStore
    clock: Clock


LimitedFactory = Callable[[dict[str, Any]], Limited]


def patient_backends(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with backend timeouts for a test that loads the machine itself
    (1,000 requests at once on a CI box): what it checks is the limits, not
    whether a starved mock backend accepts a connection within a second."""
    data = copy.deepcopy(config)
    for backend in data["backends"].values():
        backend.update(connect_timeout_s=10, read_timeout_s=60)
    data["server"] = {**data.get("server", {}), "request_timeout_s": 60}
    return data


def run_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`router-server` where it should refuse to start (so it exits by itself)."""
    return subprocess.run(
        [sys.executable, "-m", "router_server", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
