"""Relative paths in a config file are relative to the file's directory, for the
server and every command alike, so a command run from another directory finds
the same stores the router uses (instead of quietly creating empty ones)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from router_cli.main import main
from router_server import config_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "router.yaml"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(the config, in conf/; one working directory; another one)."""
    conf, here, there = (tmp_path / name for name in ("conf", "here", "there"))
    for directory in (conf, here, there):
        directory.mkdir()
    config = conf / "router.yaml"
    config.write_text(EXAMPLE.read_text())  # state.dir: router-data, relative
    return config, here, there


def test_keys_list_from_another_directory_sees_the_same_store(
    layout: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, here, there = layout
    monkeypatch.chdir(here)
    assert main(["keys", "create", "--org", "acme", "--config", str(config)]) == 0
    key_id = capsys.readouterr().out.split()[2]  # "API key <id> for organization ..."
    monkeypatch.chdir(there)
    # The table, as a user would read it: today's complaint was an empty one.
    assert main(["keys", "list", "--config", "../conf/router.yaml"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[:3] for row in rows] == [[key_id, "acme", "active"]]
    assert (config.parent / "router-data" / "keys.sqlite3").exists()
    assert list(here.iterdir()) == []
    assert list(there.iterdir()) == []


def test_every_relative_path_is_resolved_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["state"]["dir"] = "data/state"
    data["listeners"]["admin"] = {
        "port": 8443, "cert_file": "certs/server.pem", "key_file": "certs/server.key",
        "ca_file": "../ca/ca.pem",
    }  # fmt: skip
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "router.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    config = config_file.load("conf/router.yaml", check_env=False)
    conf = tmp_path / "conf"
    assert Path(config.state.dir) == conf / "data" / "state"
    admin = config.listeners.admin
    assert admin is not None
    assert Path(admin.cert_file) == conf / "certs" / "server.pem"
    assert Path(admin.key_file) == conf / "certs" / "server.key"
    assert Path(admin.ca_file) == conf / ".." / "ca" / "ca.pem"
    # Absolute, so a process that changes directory later still finds them.
    assert Path(config.state.dir).is_absolute()
    # An absolute directory stays as it is.
    data["state"]["dir"] = str(tmp_path / "absolute")
    (tmp_path / "conf" / "router.yaml").write_text(yaml.safe_dump(data))
    config = config_file.load("conf/router.yaml", check_env=False)
    assert Path(config.state.dir) == tmp_path / "absolute"


def test_usage_report_reads_the_ledger_beside_the_config(
    layout: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from router_server.usage.ledger import UsageLedger

    config, _, there = layout
    ledger = UsageLedger(config.parent / "router-data" / "usage.sqlite3")
    ledger.write([])  # an empty ledger, as a router that answered nothing leaves it
    ledger.close()
    monkeypatch.chdir(there)
    code = main(["usage", "report", "--config", "../conf/router.yaml", "--since", "24h"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "no usage records in this range\n"
