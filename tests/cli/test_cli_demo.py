"""`router demo` outside the repository: its config ships inside router_cli."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from router_cli import demo
from router_server import config_file
from router_server.mock_backend import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "router.yaml"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_cli.main", *args],
        capture_output=True, text=True, timeout=90, check=False, cwd=cwd,
    )  # fmt: skip


def test_demo_help_outside_the_repository(tmp_path: Path) -> None:
    done = run_cli("demo", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the demo config shipped with router_cli" in " ".join(done.stdout.split())


def test_the_shipped_demo_config_is_the_example() -> None:
    # One config, two homes: the package's (for `router demo` anywhere) and
    # examples/ (for reading and for `nox -s demo`).
    assert demo.demo_config_text() == EXAMPLE.read_text()


def test_without_config_the_demo_runs_the_shipped_one_in_a_directory_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with demo.config_file_for(None) as path:
        home = Path(path).parent
        assert home != tmp_path
        config = config_file.load(path)
        assert demo._demo_key_known(config)
        assert Path(config.state.dir) == home / "router-data"  # the router's data goes there
    assert not home.exists()  # and is gone when the demo stops
    assert list(tmp_path.iterdir()) == []


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_router_demo_check_with_no_config_from_anywhere(tmp_path: Path) -> None:
    data = yaml.safe_load(demo.demo_config_text())
    ports = [urlsplit(b["base_url"]).port for b in data["backends"].values()]
    if any(port is None or _taken(port) for port in ports):
        pytest.skip(f"the demo config's mock backend ports {ports} are in use")
    done = run_cli("demo", "--check", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "-> HTTP 200" in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written where it was run
