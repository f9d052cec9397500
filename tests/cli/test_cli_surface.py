"""The command's surface: --version, `python -m router_cli`, help for every option,
one spelling of the output format, and one exit code per kind of failure."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from router_cli import DISTRIBUTION
from router_cli.main import build_parser
from router_server import DISTRIBUTION as SERVER_DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# `python -m router_cli` is tested once; elsewhere the module, which always ran.
CLI = "router_cli.main"
BAD_CONFIG = "backends:\n  a: {base_url: 'http://127.0.0.1:1/v1', read_timeout_s: -1}\n"


def run(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_version(tmp_path: Path) -> None:
    done = run("-m", "router_cli", "--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"router {version(DISTRIBUTION)}\n"
    done = run("-m", "router_server", "--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"router-server {version(SERVER_DISTRIBUTION)}\n"


def test_python_m_router_cli_is_the_router_command(tmp_path: Path) -> None:
    done = run("-m", "router_cli", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: router ")
    for command in ("config", "keys", "serve", "simulate", "demo", "usage"):
        assert command in done.stdout


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_every_option_and_command_has_help() -> None:
    missing = []
    for parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{parser.prog} {n}" for n in action.choices if n not in helped]
            elif not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_one_spelling_of_the_output_format() -> None:
    for parser in parsers(build_parser()):
        if any(action.dest == "format" for action in parser._actions):
            # --json still parses (as a hidden, deprecated alias) but is not offered.
            assert "--json" not in parser.format_help()
    parser = build_parser()
    for argv in (
        ["keys", "list", "--config", "c.yaml", "--format", "json"],
        ["simulate", "--config", "c.yaml", "--trace", "t.jsonl", "--format", "json"],
        ["usage", "report", "--since", "24h", "--format", "json"],
    ):
        assert parser.parse_args(argv).format == "json"


def test_the_old_json_flag_still_works_and_says_it_is_deprecated(tmp_path: Path) -> None:
    done = run("-m", CLI, "simulate", "--config", str(EXAMPLES / "policy.yaml"),
               "--trace", str(EXAMPLES / "trace.jsonl"), "--json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requests"] > 0
    assert "--json is deprecated; use --format json" in done.stderr


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    (tmp_path / "log.txt").write_text("req-1\n")
    (tmp_path / "trace.jsonl").write_text("")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        [CLI, "config", "validate", "{config}"],
        [CLI, "keys", "list", "--config", "{config}"],
        [CLI, "keys", "create", "--org", "acme", "--config", "{config}"],
        [CLI, "keys", "revoke", "k1234", "--config", "{config}", "--reason", "x"],
        [CLI, "usage", "report", "--since", "24h", "--config", "{config}"],
        [CLI, "usage", "reconcile", "--client-log", "log.txt", "--config", "{config}"],
        [CLI, "simulate", "--config", "{config}", "--trace", "trace.jsonl"],
        [CLI, "demo", "--config", "{config}", "--check"],
        [CLI, "serve", "--config", "{config}"],
        ["router_server", "--config", "{config}"],
    ],
    ids=lambda argv: " ".join(a for a in argv if not a.startswith("{")),
)
def test_an_invalid_config_exits_1_from_every_command(argv: list[str], bad_config: Path) -> None:
    args = [a.replace("{config}", str(bad_config)) for a in argv]
    done = run("-m", *args, cwd=bad_config.parent)
    assert done.returncode == 1, done.stderr
    assert "backends.a.read_timeout_s: must be > 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_config_exits_1_too(tmp_path: Path) -> None:
    for args in ([CLI, "keys", "list", "--config", "nope.yaml"],
                 ["router_server", "--config", "nope.yaml"]):  # fmt: skip
        done = run("-m", *args, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "nope.yaml: cannot read" in done.stderr


def test_a_bad_command_line_exits_2(tmp_path: Path) -> None:
    for args in ([CLI, "keys", "list"],  # --config missing
                 [CLI, "keys", "create", "--org", "acme", "--reason", "x"],
                 [CLI, "usage", "report", "--since", "yesterday"],
                 ["router_server", "--no-such-flag"]):  # fmt: skip
        done = run("-m", *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_what_is_not_there_exits_3(tmp_path: Path) -> None:
    # A key store on a Redis nobody listens on.
    config = tmp_path / "redis.yaml"
    example = (EXAMPLES / "router.yaml").read_text()
    assert "\nstate:\n  store: embedded\n" in example
    config.write_text(
        example.replace("\nstate:\n  store: embedded\n", "\nstate:\n  store: redis\n")
    )
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = run("-m", CLI, "keys", "list", "--config", str(config), cwd=tmp_path,
               env={"ROUTER_REDIS_URL": f"redis://127.0.0.1:{port}/0"})  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    # A ledger that is not there.
    done = run("-m", CLI, "usage", "report", "--since", "24h", "--ledger",
               str(tmp_path / "none.sqlite3"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "no usage ledger at" in done.stderr
