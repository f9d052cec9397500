"""`router simulate` on files: JSON output, and bad input named by line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from router_cli.simulate import FaultsInvalid, TraceInvalid, parse_world, read_trace
from router_core.config_codec import structure

from tests.helpers.sim_support import config_data

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_cli.main", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_example_as_json() -> None:
    done = simulate(
        "--config", str(EXAMPLES / "policy.yaml"), "--trace", str(EXAMPLES / "trace.jsonl"),
        "--faults", str(EXAMPLES / "faults.yaml"), "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    lines = (EXAMPLES / "trace.jsonl").read_text().splitlines()
    assert summary["requests"] == len(lines)
    assert summary["served"] + summary["denied"] == len(lines)
    backends = summary["backends"]
    assert set(backends) == {"gpt-a", "gpt-b", "gpt-fallback"}
    assert sum(b["served"] for b in backends.values()) == summary["served"]
    assert sum(b["share"] for b in backends.values()) == pytest.approx(1.0)
    # gpt-a is down for a minute: the first request to meet it fails, then a probe
    # and trial probes, not requests, find it down.
    assert 1 <= summary["backends"]["gpt-a"]["failed_attempts"] <= 3
    assert summary["denials"]["quota_exceeded"] > 0
    assert set(summary["spend_usd"]) == {"acme", "globex"}
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]


def test_the_example_as_tables() -> None:
    done = simulate(
        "--config", str(EXAMPLES / "policy.yaml"), "--trace", str(EXAMPLES / "trace.jsonl")
    )
    assert done.returncode == 0, done.stderr
    for heading in ("Backends", "Denials", "Spend", "Failovers", "p50"):
        assert heading in done.stdout


def test_a_bad_trace_is_named_by_line(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        '{"ts": 1772442000, "key": "acme1", "model": "chat", "prompt_tokens": 1, '
        '"completion_tokens": 2}\n'
        "{not json\n"
        '{"ts": 1772442001, "key": "acme1", "model": "chat", "prompt_tokens": "12", '
        '"completion_tokens": 2}\n'
        "\n"
        '{"ts": 1772442002, "model": "chat", "prompt_tokens": 1, "completion_tokens": 2}\n'
        '{"ts": 1772441000, "org": "acme", "model": "chat", "prompt_tokens": 1, '
        '"completion_tokens": 2, "max_token": 5}\n'
        '{"ts": 1772441000, "org": "acme", "model": "chat", "prompt_tokens": 1, '
        '"completion_tokens": 2}\n'
    )
    config = tmp_path / "router.yaml"
    config.write_text(json.dumps(config_data()))
    done = simulate("--config", str(config), "--trace", str(trace))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"{trace}: 5 problem(s)"
    assert lines[1].startswith(f"  {trace}:2: not valid JSON")
    assert lines[2] == (
        f'  {trace}:3: prompt_tokens must be an integer from 0 to 1,000,000,000, not "12"'
    )
    assert lines[3].startswith(f"  {trace}:5: needs exactly one of 'key'")
    assert lines[4].startswith(f"  {trace}:6: unknown field(s) max_token")
    assert lines[5].startswith(f"  {trace}:7: ts goes backwards")


def test_a_bad_faults_file_is_named_by_line(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text(
        "default: {latency_ms: 100}\n"
        "faults:\n"
        "  - {backend: a, kind: down, start_s: 10, end_s: 20}\n"
        "  - {backend: nope, kind: down, start_s: 10}\n"
        "  - backend: b\n"
        "    kind: sideways\n"
        "  - {backend: b, kind: latency, start_s: 30, end_s: 20}\n"
    )
    config = tmp_path / "router.yaml"
    config.write_text(json.dumps(config_data()))
    trace = tmp_path / "trace.jsonl"
    trace.write_text("")
    done = simulate("--config", str(config), "--trace", str(trace), "--faults", str(faults))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    problems = done.stderr.splitlines()[1:]
    assert problems[0].startswith(f"  {faults}:4: faults[1].backend: unknown backend 'nope'")
    assert problems[1].startswith(f"  {faults}:5: faults[2].kind: must be one of down, hang")
    assert problems[2] == f"  {faults}:7: faults[3].end_s: must be after start_s (30), not 20"
    assert problems[3] == f"  {faults}:7: faults[3].added_ms: a latency fault needs added_ms > 0"


def test_bad_yaml_and_missing_files_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(json.dumps(config_data()))
    faults = tmp_path / "faults.yaml"
    faults.write_text("faults: [\n")
    done = simulate("--config", str(config), "--trace", str(tmp_path / "none.jsonl"))
    assert done.returncode == 1
    assert "cannot read" in done.stderr
    (tmp_path / "t.jsonl").write_text("")
    done = simulate("--config", str(config), "--trace", str(tmp_path / "t.jsonl"), "--faults",
                    str(faults))  # fmt: skip
    assert done.returncode == 1
    assert "invalid YAML" in done.stderr
    assert "Traceback" not in done.stderr


def test_readers_in_process() -> None:
    good = b'{"ts": "2026-03-02T09:00:00.5Z", "org": "acme", "model": "m", "prompt_tokens": 0, '
    record = next(read_trace([good + b'"completion_tokens": 0, "operation": "embedding"}']))
    assert record.ts_us == 1_772_442_000_500_000
    assert (record.org, record.key, record.operation) == ("acme", None, "embedding")
    with pytest.raises(TraceInvalid, match="needs a time zone"):
        list(read_trace([b'{"ts": "2026-03-02T09:00:00", "org": "a", "model": "m"}']))
    config = structure(config_data())
    with pytest.raises(FaultsInvalid, match=r"faults:1: latency: unknown field"):
        parse_world("latency: {}", config)
    world = parse_world("backends: {a: {latency_ms: 5}}\nrefused_ms: 3", config)
    assert world.model_of("a").latency_ms == 5
    assert world.model_of("b").latency_ms == 200
    assert world.refused_ms == 3
