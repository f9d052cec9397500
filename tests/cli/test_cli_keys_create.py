"""`router keys create`: every scope given reaches the key, and a flag that cannot
take effect, or a name the config does not have, is an error (exit 2) before any
key is made."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from router_cli.main import main
from router_core import keys
from router_core.config_codec import structure

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "router.yaml"


def example_in(directory: Path) -> Path:
    """The example config in `directory`; its relative store paths land beside it."""
    path = directory / "router.yaml"
    path.write_text(EXAMPLE.read_text())
    return path


def test_the_printed_line_carries_every_scope(capsys: pytest.CaptureFixture[str]) -> None:
    before = time.time()
    argv = ["keys", "create", "--org", "acme", "--model", "gpt-4o-mini",
            "--model", "text-embedding-3-small", "--route", "/v1/chat/completions",
            "--expires-in-s", "3600"]  # fmt: skip
    assert main(argv) == 0
    after = time.time()
    out = capsys.readouterr().out
    entry = yaml.safe_load(out.splitlines()[-1])[0]
    data = yaml.safe_load(EXAMPLE.read_text())
    data["organizations"]["acme"]["keys"].append(entry)
    key = next(k for k in structure(data).organizations["acme"].keys if k.id == entry["id"])
    assert key.models == ("gpt-4o-mini", "text-embedding-3-small")
    assert key.routes == ("/v1/chat/completions",)
    assert key.expires_at is not None
    assert before + 3600 - 1 <= key.expires_at <= after + 3600 + 1
    assert key.allows_model("gpt-4o-mini")
    assert not key.allows_route("/v1/embeddings")
    printed = next(line.strip() for line in out.splitlines() if line.strip().startswith("rk_"))
    assert keys.verify(printed, key.hash)


def test_without_scopes_the_line_is_unrestricted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--org", "acme"]) == 0
    captured = capsys.readouterr()
    entry = yaml.safe_load(captured.out.splitlines()[-1])[0]
    assert set(entry) == {"id", "hash"}
    # The organization cannot be checked without a config; the command says so.
    assert "not checked without --config" in captured.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reason", "for the audit"], "--reason is recorded only in a key store"),
        (["--expires-in-s", "0"], "--expires-in-s must be > 0"),
        (["--expires-in-s", "-5"], "--expires-in-s must be > 0"),
        (["--id", "no!"], "--id must be 4 to 32 letters or digits"),
    ],
)
def test_flags_that_cannot_take_effect_are_refused(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--org", "acme", *flags]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1  # one line
    assert "rk_" not in captured.out  # no key was made


def test_with_config_an_unknown_organization_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = example_in(tmp_path)
    assert main(["keys", "create", "--org", "nosuchorg", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "router keys create: unknown organization 'nosuchorg'; the config has acme, globex\n"
    )
    assert not (tmp_path / "router-data").exists()  # refused before the store was opened


def test_with_config_an_unknown_model_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = example_in(tmp_path)
    argv = ["keys", "create", "--org", "acme", "--config", str(config), "--model", "gpt-5"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "router keys create: unknown model 'gpt-5'; "
        "the config has gpt-4o-mini, text-embedding-3-small\n"
    )


def test_with_config_the_id_is_refused_and_a_reason_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = example_in(tmp_path)
    assert main(["keys", "create", "--org", "acme", "--config", str(config), "--id", "mine1"]) == 2
    assert "--id applies only without --config" in capsys.readouterr().err
    argv = ["keys", "create", "--org", "globex", "--config", str(config), "--model",
            "gpt-4o-mini", "--reason", "for the batch job"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--config", str(config), "--format", "json"]) == 0
    listed = yaml.safe_load(capsys.readouterr().out)
    assert [(k["organization"], k["models"]) for k in listed] == [("globex", ["gpt-4o-mini"])]
