"""The container's variables: `router serve` (the image's entrypoint) and
`router-server` take ROUTER_CONFIG, ROUTER_HOST, ROUTER_PORT and
ROUTER_DATA_DIR, and a flag on the command line wins over each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_server import config_file, environment
from router_server.mock_backend.process import free_port, terminate

from tests.helpers.support import CHAT, auth, with_data_dir, write_config

# The variables a developer's shell might already hold: each test sets its own.
CLEAN = {name: "" for name in ("ROUTER_CONFIG", "ROUTER_HOST", "ROUTER_PORT", "ROUTER_DATA_DIR")}


def _env(backend_env: dict[str, str], **variables: str) -> dict[str, str]:
    return {**os.environ, **CLEAN, **backend_env, **variables}


@contextmanager
def serving(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running until /healthz answers on `port` (or it exits)."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v1/status/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer on port {port}: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            yield proc
        finally:
            terminate(proc, 20)


def _read_only_config(config_data: dict[str, Any], tmp_path: Path) -> Path:
    """The config where a container mounts it: a directory the router cannot
    write to, whose `state.dir` (relative to the file) would be inside it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write_config(etc / "router.yaml", {**config_data, "state": {"dir": "data"}})
    etc.chmod(0o555)
    return path


def test_router_serve_takes_config_listener_and_data_dir_from_the_environment(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = _read_only_config(config_data, tmp_path)
    data = tmp_path / "var" / "router"
    port = free_port("127.0.0.1")
    env = _env(
        backend_env,
        ROUTER_CONFIG=str(path),
        ROUTER_HOST="127.0.0.1",
        ROUTER_PORT=str(port),
        ROUTER_DATA_DIR=str(data),
    )
    command = [sys.executable, "-m", "router_cli", "serve"]  # no flags at all
    with serving(command, env, port, tmp_path / "router.log"):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, headers=auth(), timeout=10
        )
        assert answer.status_code == 200
        status = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=10).json()
        assert status["components"]["spool"]["state"] == "ok"
    # Usage went to the data directory, none next to the (read-only) config.
    assert (data / "spool").is_dir()
    assert (data / "usage.sqlite3").is_file()
    assert not (path.parent / "data").exists()
    # `router usage report` in the same environment finds that ledger.
    report = subprocess.run(
        [sys.executable, "-m", "router_cli", "usage", "report", "--config", str(path),
         "--since", "1h", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert sum(row["requests"] for row in json.loads(report.stdout)) == 1


def test_flags_win_over_the_variables(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", {**config_data, "state": {"dir": "data"}})
    port = free_port("127.0.0.1")
    env = _env(
        backend_env,
        # Each of these would fail if it were used.
        ROUTER_CONFIG=str(tmp_path / "missing.yaml"),
        ROUTER_HOST="192.0.2.1",  # TEST-NET: not this host's
        ROUTER_PORT="not-a-port",  # not even read: the flag gives the port
        ROUTER_DATA_DIR=str(tmp_path / "env-data"),
    )
    command = [
        sys.executable, "-m", "router_server",
        "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with serving(command, env, port, tmp_path / "router.log"):
        pass
    # The data directory has no flag: the variable wins over the file.
    assert (tmp_path / "env-data" / "spool").is_dir()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("value", "why"),
    [("http", "'http' is not a port number"), ("70000", "70000 is not a port number (0 to 65535)")],
)
def test_a_bad_port_variable_is_one_line_naming_it(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path, value: str, why: str
) -> None:
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "router_cli", "serve"],
        env=_env(backend_env, ROUTER_CONFIG=str(path), ROUTER_PORT=value),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"router-server: ROUTER_PORT={why}"]
    assert not (tmp_path / "data").exists()  # nothing was opened


def test_without_a_config_flag_or_variable_the_command_line_is_wrong(tmp_path: Path) -> None:
    for command in (["router_cli", "serve"], ["router_server"]):
        result = subprocess.run(
            [sys.executable, "-m", *command],
            env={**os.environ, **CLEAN}, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "--config" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_config_variable_naming_a_missing_file_is_reported_like_the_flag(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "router_cli", "serve"],
        env={**os.environ, **CLEAN, "ROUTER_CONFIG": str(missing)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_data_dir_variable_applies_on_every_load_and_empty_means_unset(
    config_data: dict[str, Any], tmp_path: Path
) -> None:
    # On every load, the reloader's too: otherwise a reload would see
    # `state` change (a restart-only setting) on every file change.
    path = write_config(tmp_path / "router.yaml", {**config_data, "state": {"dir": "data"}})
    assert config_file.load(path, {}, check_env=False).state.dir == str(tmp_path / "data")
    empty = {"ROUTER_DATA_DIR": " "}
    assert config_file.load(path, empty, check_env=False).state.dir == str(tmp_path / "data")
    chosen = {"ROUTER_DATA_DIR": str(tmp_path / "elsewhere")}
    loaded = config_file.load(path, chosen, check_env=False)
    assert loaded.state.dir == str(tmp_path / "elsewhere")


def test_port_variable_rules() -> None:
    assert environment.port({}) is None
    assert environment.port({"ROUTER_PORT": ""}) is None
    assert environment.port({"ROUTER_PORT": " 8080 "}) == 8080
    assert environment.port({"ROUTER_PORT": "0"}) == 0
    with pytest.raises(environment.BadVariable, match="ROUTER_PORT='-'"):
        environment.port({"ROUTER_PORT": "-"})
    with pytest.raises(environment.BadVariable, match="ROUTER_PORT=-1 "):
        environment.port({"ROUTER_PORT": "-1"})
