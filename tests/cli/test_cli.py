"""The `router` command and `router-server` start-up: problems listed, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router_cli.main import main
from router_core import keys
from router_core.auth import KeyIndex, authenticate
from router_core.config_codec import structure
from router_server.mock_backend import free_port

from tests.helpers.support import with_data_dir, write_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "router.yaml"

BAD_CONFIG = """\
backends:
  a: {base_url: "http://127.0.0.1:1/v1", read_timeout_s: -1}
models:
  gpt-4o:
    backends:
      - {backend: a}
      - {backend: a, weight: 0}
      - {backend: missing}
organizations:
  acme: {keys: [{id: k, hash: nothex}]}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_server(config: Path) -> subprocess.CompletedProcess[str]:
    """`router-server` on a config it should refuse (so it exits by itself)."""
    return subprocess.run(
        [sys.executable, "-m", "router_server", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(EXAMPLE)]) == 0
    assert "OK (2 backends, 2 models, 2 organizations, 3 keys)" in capsys.readouterr().out


def test_validate_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for expected in (
        "backends.a.read_timeout_s: must be > 0",
        "models.gpt-4o.backends[1].weight: must be > 0",
        "organizations.acme.keys[0].id: must be 4 to 32 letters or digits",
        "organizations.acme.keys[0].hash: must be 'sha256:'",
    ):
        assert expected in result.stderr


MANY_MISTAKES = """\
version: 99
backends:
  a: {base_url: "http://127.0.0.1:1/v1", api_key_env: ROUTER_TEST_DEFINITELY_UNSET}
models:
  gpt-4o:
    strategy: fastest
    backends: [{backend: a}, {backend: azure}]
organizations:
  acme: {models: [gpt-4o, gpt-5]}
observability: {tracing: true, tracing_exporter: consle}
"""


def test_validate_prints_every_problem_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MANY_MISTAKES)
    result = run_cli("config", "validate", "--check-env", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    header, *lines = result.stderr.splitlines()
    assert header == f"{path}: 6 problem(s)"
    assert sorted(line.strip() for line in lines) == [
        "backends.a.api_key_env: environment variable ROUTER_TEST_DEFINITELY_UNSET is not set",
        "models.gpt-4o.backends[1].backend: unknown backend 'azure'; defined: a",
        "models.gpt-4o.strategy: must be one of weighted, least_latency, least_load, not 'fastest'",
        "observability.tracing_exporter: must be one of otlp, console, memory, "
        "not 'consle' (did you mean 'console'?)",
        "organizations.acme.models: unknown model 'gpt-5'",
        "version: 99 is not supported; this router reads version 1 "
        "(write version: 1, or run a router that reads version 99)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backends: {a: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "must be a mapping at the top level"),
        ("", "must be a mapping at the top level"),
    ],
)
def test_validate_reports_unusable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_yaml_errors_carry_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("backends:\n  a: {base_url: [\n")
    result = run_cli("config", "validate", str(path))
    assert re.search(r"bad\.yaml:\d+:\d+: invalid YAML", result.stderr)


def test_validate_missing_file() -> None:
    result = run_cli("config", "validate", "/nonexistent/router.yaml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_refuses_to_start_on_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = start_server(path)
    assert result.returncode == 1
    assert "models.gpt-4o.backends[1].weight: must be > 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_refuses_a_missing_backend_credential(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["backends"]["mock-b"]["api_key_env"] = "ROUTER_TEST_DEFINITELY_UNSET"
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data))
    result = start_server(path)
    assert result.returncode == 1
    assert (
        "backends.mock-b.api_key_env: environment variable ROUTER_TEST_DEFINITELY_UNSET"
        in result.stderr
    )
    # `config validate` checks the environment only when asked.
    assert run_cli("config", "validate", str(path)).returncode == 0
    assert run_cli("config", "validate", "--check-env", str(path)).returncode == 1


def test_keys_create_prints_a_working_key_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--org", "acme"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"^\s+(rk_\w+)$", out, re.MULTILINE)
    line = re.search(r"- \{id: \"(\w+)\", hash: \"(sha256:[0-9a-f]{64})\"\}", out)
    assert key is not None
    assert line is not None
    assert out.count(key.group(1)) == 1
    parsed = keys.parse(key.group(1))
    assert parsed is not None
    assert parsed.key_id == line.group(1)
    config = structure(
        {
            "backends": {"a": {"base_url": "http://a/v1"}},
            "models": {"m": {"backends": [{"backend": "a"}]}},
            "organizations": {"acme": {"keys": [yaml.safe_load(out.splitlines()[-1])[0]]}},
        }
    )
    assert authenticate(key.group(1), KeyIndex.from_config(config)).organization == "acme"


def test_keys_create_rejects_a_bad_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--org", "acme", "--id", "no!"]) == 2


def test_demo_sends_a_request_through(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    for backend in data["backends"].values():
        backend["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    # The example keeps its data in router-data/ of the working directory.
    del data["state"]["dir"]
    path = write_config(tmp_path / "router.yaml", with_data_dir(data, tmp_path / "data"))
    result = run_cli("demo", "--config", str(path), "--port", str(free_port()), "--check")
    assert result.returncode == 0, result.stderr
    assert "-> HTTP 200" in result.stdout
    assert "reply: 'mock token" in result.stdout
