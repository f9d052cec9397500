"""`router simulate --strategies` and `--explain`, and prefix-heavy synthetic traces."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from router_cli.simulate import read_trace
from router_cli.simulate.synth import main as synth_main
from router_cli.simulate.synth import prefix_records
from router_core.config_codec import structure
from router_server import config_file

from tests.helpers.sim_support import config_data

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
FLEET = EXAMPLES / "fleet.yaml"
STRATEGIES = "weighted,least_latency,least_load,least_load+affinity"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router_cli.main", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_trace(path: Path, n: int, *, rate: float = 12.0, prompts: int = 8, seed: int = 1) -> Path:
    config = config_file.load(FLEET, check_env=False)
    records = prefix_records(
        config, n, rate=rate, start=1_767_225_600.0, seed=seed, prompts=prompts, sessions=0.6
    )
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_the_strategies_side_by_side_on_a_fixed_seed(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "fleet.jsonl", 4000, prompts=128)
    done = simulate(
        "--config", str(FLEET), "--faults", str(EXAMPLES / "fleet-servers-tight.yaml"),
        "--trace", str(trace), "--strategies", STRATEGIES, "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    compared = json.loads(done.stdout)["strategies"]
    assert list(compared) == STRATEGIES.split(",")
    for summary in compared.values():
        assert summary["served"] == 4000
        for row in summary["backends"].values():
            assert 0 < row["utilisation"] <= 1
    weighted, latency = compared["weighted"], compared["least_latency"]
    load, affinity = compared["least_load"], compared["least_load+affinity"]

    def p99_ttft(summary: dict[str, Any]) -> float:
        return float(summary["ttft_ms"]["p99"])

    # Counting load queues less than weighted draws; least_latency, which
    # follows answers that have already come back, herds onto the fast ones.
    assert p99_ttft(load) < p99_ttft(weighted) < p99_ttft(latency)
    assert p99_ttft(affinity) < p99_ttft(weighted)
    # Affinity keeps prefixes where they are cached; the others scatter them.
    assert affinity["cache_hit_rate"] > 1.3 * weighted["cache_hit_rate"]
    assert affinity["cache_hit_rate"] > load["cache_hit_rate"]
    # The same trace and seed, the same table.
    again = simulate(
        "--config", str(FLEET), "--faults", str(EXAMPLES / "fleet-servers-tight.yaml"),
        "--trace", str(trace), "--strategies", "least_load+affinity", "--format", "json",
    )  # fmt: skip
    assert json.loads(again.stdout)["strategies"]["least_load+affinity"] == affinity


def test_the_comparison_as_a_table(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "fleet.jsonl", 200)
    done = simulate(
        "--config", str(FLEET), "--faults", str(EXAMPLES / "fleet-servers.yaml"),
        "--trace", str(trace), "--strategies", "weighted, least_load+affinity",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Strategies" in done.stdout
    assert "weighted" in done.stdout
    assert "replayed under 2 strategies" in done.stdout


def test_explain_writes_each_decision(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "fleet.jsonl", 300)
    explained = tmp_path / "explain.jsonl"
    done = simulate(
        "--config", str(FLEET), "--faults", str(EXAMPLES / "fleet-servers.yaml"),
        "--trace", str(trace), "--strategies", "weighted,least_load+affinity",
        "--explain", str(explained),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in explained.read_text().splitlines()]
    assert len(lines) == 600
    by_strategy = {
        s: [x for x in lines if x["strategy"] == s] for s in ("weighted", "least_load+affinity")
    }
    assert {len(v) for v in by_strategy.values()} == {300}
    trace_lines = {n for n, _ in enumerate(trace.read_text().splitlines(), 1)}
    for line in lines:
        assert line["outcome"] == "served"
        assert line["line"] in trace_lines
        assert 0 <= line["ttft_ms"] <= line["latency_ms"]
        assert 0 <= line["queued_ms"] <= line["ttft_ms"]
        assert line["cached_tokens"] >= 0
        route = line["route"]
        assert route["rule"] == "model"
        assert {c["backend"] for c in route["candidates"]} == {"gpu-1", "gpu-2", "gpu-3", "gpu-4"}
        assert route["candidates"][0]["backend"] == line["backend"]
    for line in by_strategy["weighted"]:
        assert "affinity" not in line["route"]
        assert all("load" not in c for c in line["route"]["candidates"])
    for line in by_strategy["least_load+affinity"]:
        affinity = line["route"]["affinity"]
        assert affinity["chosen"] == line["backend"]
        assert all(0 <= c["load"] <= 1 for c in line["route"]["candidates"])
    # Affinity found the served prefix of most requests in its index.
    known = [x for x in by_strategy["least_load+affinity"] if x["route"]["affinity"]["depth"] > 0]
    assert len(known) > 200


def test_explain_without_strategies_and_a_failed_request(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(json.dumps(config_data()))
    faults = tmp_path / "faults.yaml"
    faults.write_text("faults:\n  - {backend: a, kind: down, start_s: 0}\n")
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"ts": 1772442000, "key": "acme1", "model": "a-only", "prompt_tokens": 1, '
        '"completion_tokens": 2}\n'
        '{"ts": 1772442001, "key": "revoked1", "model": "a-only", "prompt_tokens": 1, '
        '"completion_tokens": 2}\n'
        '{"ts": 1772442002, "key": "acme1", "model": "nope", "prompt_tokens": 1, '
        '"completion_tokens": 2}\n'
    )
    explained = tmp_path / "explain.jsonl"
    done = simulate(
        "--config", str(config), "--trace", str(trace), "--faults", str(faults),
        "--explain", str(explained),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line, revoked, unknown = [json.loads(x) for x in explained.read_text().splitlines()]
    # Refused before routing: no decision to explain, but the reason.
    assert revoked == {"line": 2, "ts": 1772442001.0, "model": "a-only",
                       "outcome": "unauthenticated"}  # fmt: skip
    assert unknown["outcome"] == "model_not_found"
    assert "route" not in unknown
    assert "strategy" not in line
    assert line["outcome"] == "backend_error"
    assert line["route"]["candidates"][0]["backend"] == "a"
    assert "backend" not in line
    assert "cached_tokens" not in line


def test_an_unknown_strategy_is_a_usage_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    for given, expected in (
        ("weighted,fastest", "unknown strategy 'fastest'; known: weighted, least_latency"),
        ("least_load+cache", "unknown strategy 'least_load+cache'"),
        (",", "needs at least one strategy"),
        ("weighted,weighted", "names a strategy twice"),
    ):
        done = simulate("--config", str(FLEET), "--trace", str(trace), "--strategies", given)
        assert done.returncode == 2, given
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == ""


def test_an_unwritable_explain_file_exits_1(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    done = simulate(
        "--config", str(FLEET), "--trace", str(trace), "--explain", str(tmp_path / "no" / "x")
    )
    assert done.returncode == 1
    assert "cannot write" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_segments_and_sessions_are_named_by_line(tmp_path: Path) -> None:
    head = '{"ts": 1772442000, "key": "demo", "model": "llama-3.1-8b", "completion_tokens": 2, '
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        head + '"prompt_tokens": 10, "segments": [["sys", 10]], "session": "s1"}\n'
        + head + '"prompt_tokens": 10, "segments": [["sys", 11]]}\n'
        + head + '"prompt_tokens": 10, "segments": "sys"}\n'
        + head + '"prompt_tokens": 10, "segments": [["", 3]]}\n'
        + head + '"prompt_tokens": 10, "segments": [["sys", 0]]}\n'
        + head + '"prompt_tokens": 10, "segments": [["sys", 2, 3]]}\n'
        + head + '"prompt_tokens": 10, "session": 7}\n'
        + head + '"prompt_tokens": 10, "answer": ""}\n'
    )  # fmt: skip
    done = simulate("--config", str(FLEET), "--trace", str(trace))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"{trace}: 7 problem(s)"
    assert lines[1] == (f"  {trace}:2: segments add up to 11 tokens, more than prompt_tokens (10)")
    assert lines[2].startswith(f"  {trace}:3: segments must be a list of [id, tokens] pairs")
    assert lines[3].startswith(f"  {trace}:4: segments[0] must be [id, tokens] with a non-empty")
    assert lines[4].startswith(f"  {trace}:5: segments[0] must be")
    assert lines[5].startswith(f"  {trace}:6: segments[0] must be")
    assert lines[6] == f"  {trace}:7: session must be a non-empty string, not 7"
    assert lines[7] == f'  {trace}:8: answer must be a non-empty string, not ""'


def test_prefix_traces_are_deterministic_and_extend_each_turn() -> None:
    config = config_file.load(FLEET, check_env=False)

    def trace(seed: int) -> list[dict[str, Any]]:
        return list(
            prefix_records(
                config, 3000, rate=12.0, start=1_767_225_600.0, seed=seed, prompts=8, sessions=0.6
            )
        )

    first = trace(4)
    assert first == trace(4)
    assert first != trace(5)
    assert len(first) == 3000
    assert [r["ts"] for r in first] == sorted(r["ts"] for r in first)
    # Every line is a valid trace line, and every prompt is its segments.
    lines = [orjson.dumps(r) for r in first]
    parsed = list(read_trace(lines))
    assert all(p.prompt_tokens == sum(t for _, t in p.segments) for p in parsed)
    systems = {r["segments"][0][0] for r in first}
    assert systems <= {f"system-{i}" for i in range(8)}
    assert len(systems) > 4
    # A session's turns each extend the one before: its prompt, its answer, a new message.
    sessions: dict[str, list[dict[str, Any]]] = {}
    for r in first:
        if "session" in r:
            sessions.setdefault(r["session"], []).append(r)
    assert len(sessions) > 100
    multi = [turns for turns in sessions.values() if len(turns) > 1]
    assert multi
    for turns in multi:
        for before, after in itertools.pairwise(turns):
            n = len(before["segments"])
            assert after["segments"][:n] == before["segments"]
            assert after["segments"][n] == [before["answer"], before["completion_tokens"]]
            assert before["answer"] == f"{before['session']}.answer-{n // 2}"
            assert len(after["segments"]) == n + 2
    singles = [r for r in first if "session" not in r]
    assert singles
    assert not any("answer" in r for r in singles)
    assert all(len(r["segments"]) == 2 for r in singles)


def test_synth_cli_writes_the_trace_and_refuses_bad_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    args = ["--config", str(FLEET), "--requests", "50", "--rate", "5", "--out", str(out)]
    assert synth_main([*args, "--prompts", "3", "--sessions", "1"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 50
    assert all("session" in r for r in records)
    for bad in (["--sessions", "1.5", "--prompts", "2"], ["--prompts", "-1"]):
        with pytest.raises(SystemExit) as raised:
            synth_main([*args, *bad])
        assert raised.value.code == 2
    assert "--sessions must be from 0 to 1" in capsys.readouterr().err


def test_a_config_without_keys_cannot_be_synthesised() -> None:
    data = config_data()
    for org in data["organizations"].values():
        org["keys"] = []
    with pytest.raises(ValueError, match="no valid API keys"):
        list(prefix_records(structure(data), 1, rate=1, start=0, seed=0, prompts=1, sessions=0))


def test_out_of_range_server_parameters_exit_1_by_line(tmp_path: Path) -> None:
    faults = tmp_path / "servers.yaml"
    faults.write_text(
        "default:\n  server: {slots: 16, speed: 1}\n"
        "backends:\n  gpu-4: {server: {slots: 0, cache_blocks: -1}}\n"
        "  gpu-9: {server: {}}\n"
    )
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    done = simulate("--config", str(FLEET), "--trace", str(trace), "--faults", str(faults))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"{faults}: 3 problem(s)",
        f"  {faults}:4: backends.gpu-4.server.slots: must be an integer from 1 to 100,000, not 0",
        f"  {faults}:4: backends.gpu-4.server.cache_blocks: must be an integer from 0 to "
        "100,000,000, not -1",
        f"  {faults}:5: backends.gpu-9: not a backend of the config",
    ]
