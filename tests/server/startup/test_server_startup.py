"""Starting `router-server`: refusals are one clear line, and a failed start
closes whatever it had opened."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app
from router_server.backends import BackendClient
from router_server.mock_backend.process import free_port
from router_server.process import RouterProcess
from router_server.usage.spool import SpoolError

from tests.helpers.support import CHAT, auth, run_server, with_data_dir, write_config


def test_an_unknown_log_level_is_one_line_naming_the_choices(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "data"))
    result = run_server("--config", str(path), "--log-level", "verbose", env=backend_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "router-server: argument --log-level: unknown log level 'verbose': use one of "
        "debug, info, warning, error, critical (see router-server --help)"
    ]
    assert "listening" not in result.stdout


def test_a_second_router_on_the_same_usage_dir_refuses_and_the_first_serves_on(
    start_router: Any, config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    first = start_router(config_data)
    second = run_server(
        "--config", first.config_path, "--port", str(free_port("127.0.0.1")), env=backend_env
    )
    assert second.returncode == 3  # something it needs (the spool) is not available
    assert "Traceback" not in second.stderr
    spool = (tmp_path / "router-0-data" / "spool").absolute()
    assert second.stderr.strip().splitlines() == [
        f"router-server: cannot start: the usage spool {spool} is in use by another router "
        f"process (pid {first.pid}); stop that router, or give this one its own state.dir"
    ]
    # Nothing claimed to listen: the app's resources never opened.
    assert "listening" not in second.stdout
    answer = httpx.post(f"{first.url}/v1/chat/completions", json=CHAT, headers=auth(), timeout=10)
    assert answer.status_code == 200


def test_listening_is_announced_once_the_app_is_open(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    # (The line is printed from the app's readiness callback, after its lifespan
    # opened everything; this checks it still comes, with the right address.)
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "d"))
    port = free_port("127.0.0.1")
    with subprocess.Popen(
        [sys.executable, "-m", "router_server", "--config", str(path), "--port", str(port)],
        env={**os.environ, **backend_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert line.strip() == f"router listening on http://127.0.0.1:{port}"


def test_the_access_log_follows_the_log_level(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "data"))
    with (
        (tmp_path / "router.log").open("wb") as log,
        RouterProcess(path, args=["--log-level", "warning"], env=backend_env, log=log) as router,
    ):
        answer = httpx.post(
            f"{router.url}/v1/chat/completions", json=CHAT, headers=auth(), timeout=10
        )
        assert answer.status_code == 200
    lines = [
        json.loads(line)
        for line in (tmp_path / "router.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert [line for line in lines if line["logger"] == "router.access"] == []
    assert all(line["level"] not in {"debug", "info"} for line in lines)


def _backend_clients() -> list[BackendClient]:
    return [o for o in gc.get_objects() if isinstance(o, BackendClient)]


def test_a_failed_start_closes_the_clients_it_had_opened(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    # The backend clients open before the usage spool; the spool cannot open
    # (a file stands where its directory should be).
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spool").write_text("not a directory")
    app = create_app(structure(with_data_dir(config_data, tmp_path / "data")), env=backend_env)
    existing = _backend_clients()
    with pytest.raises(SpoolError, match="cannot be opened") as failure, TestClient(app):
        pass
    # The failed lifespan's clients are still referenced from the traceback
    # kept in `failure`; the real objects say whether they were closed.
    opened = [c for c in _backend_clients() if not any(c is e for e in existing)]
    assert failure.tb is not None
    assert sorted(c.name for c in opened) == sorted(config_data["backends"])
    assert [c.name for c in opened if not c.client.is_closed] == []
