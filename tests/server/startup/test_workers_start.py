"""`--workers` with the embedded store: one worker by default, more refused at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from router_server.mock_backend.process import free_port
from router_server.workers import cgroup_cpu_limit, usable_cores

from tests.helpers.support import run_server, with_data_dir, write_config


def test_more_workers_than_one_on_the_embedded_store_is_refused_naming_the_fixes(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "data"))
    port = str(free_port("127.0.0.1"))
    result = run_server("--config", str(path), "--port", port, "--workers", "2", env=backend_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "embedded store" in line
    assert "state.store: redis" in line
    assert "--workers 1" in line
    assert "listening" not in result.stdout
    assert not (tmp_path / "data" / "spool").exists()  # refused before anything opened


def test_server_workers_in_the_file_with_the_embedded_store_is_an_invalid_config(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    data = with_data_dir(config_data, tmp_path / "data")
    data["server"] = {**data.get("server", {}), "workers": 4}
    path = write_config(tmp_path / "router.yaml", data)
    result = run_server("--config", str(path), env=backend_env)
    assert result.returncode == 1
    assert "server.workers" in result.stderr
    assert "state.store: redis" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_count_out_of_range_is_one_line(
    config_data: dict[str, Any], backend_env: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", with_data_dir(config_data, tmp_path / "data"))
    result = run_server("--config", str(path), "--workers", "0", env=backend_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "router-server: --workers must be between 1 and 1024, not 0"
    ]


def test_the_embedded_default_runs_one_process_whatever_the_cores(
    start_router: Any, config_data: dict[str, Any]
) -> None:
    router = start_router(config_data)
    process = httpx.get(f"{router.url}/v1/status").json()["process"]
    assert process == {"pid": router.pid, "worker": 0, "workers": 1}


def test_a_cgroup_cpu_limit_caps_the_default_worker_count(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: 2 workers at most
    assert cgroup_cpu_limit(cpu_max) == 2
    assert 1 <= usable_cores(cpu_max) <= 2
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one worker
    assert cgroup_cpu_limit(cpu_max) == 1
    assert usable_cores(cpu_max) == 1


def test_no_cgroup_cpu_limit_leaves_the_affinity(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cores = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert usable_cores(cpu_max) == cores
    # Unreadable or garbled: the affinity alone, never an error.
    assert usable_cores(tmp_path / "absent") == cores
    cpu_max.write_text("not numbers\n")
    assert usable_cores(cpu_max) == cores
