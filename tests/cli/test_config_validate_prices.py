"""`router config validate` says which models the shipped price table prices."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_cli.main import main

CONFIG = """\
backends:
  claude: {base_url: "https://api.anthropic.com/v1", kind: anthropic, api_key_env: ANTHROPIC_KEY}
models:
  opus: {backends: [{backend: claude, model: claude-opus-4-5-20251101}]}
  haiku: {backends: [{backend: claude, model: claude-haiku-4-5}]}
prices:
  haiku: {input: 2, output: 9}
"""


def test_validate_names_each_shipped_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG)
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("OK (1 backends, 2 models, 0 organizations, 0 keys)")
    assert out[1:] == [
        "prices.opus: shipped price of anthropic claude-opus-4-5-20251101 (read 2026-12-07): "
        "USD per million tokens input 5, output 25, cache read 0.50, cache write 6.25"
    ]


def test_validate_names_none_with_the_opt_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG + "pricing: {shipped: false}\n")
    assert main(["config", "validate", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
