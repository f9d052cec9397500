"""`router usage report` and `router usage reconcile` on a real SQLite ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import orjson
import pytest

from router_cli.main import main
from router_core.accounting.frames import Frame, FrameKind
from router_core.accounting.records import Outcome, TokenCounts, UsageRecord
from router_core.accounting.wire import parse_us, usage_to_wire
from router_server.usage.ledger import UsageLedger

DAY = "2026-11-20T10:00:00.000000Z"
NEXT_DAY = "2026-11-21T10:00:00.000000Z"


def record(n: int, org: str, model: str, key: str, at: str, **changes: object) -> UsageRecord:
    fields: dict[str, object] = dict(
        record_id=f"00000000-0000-4000-8000-{n:012d}", request_id=f"req-{n}",
        client_request_id=None, organization=org, key_id=key, route="/v1/chat/completions",
        operation="chat", model=model, backend="a", backend_model=model, stream=False,
        started_at_us=parse_us(at), finished_at_us=parse_us(at) + 1000, latency_ms=1.0,
        ttft_ms=None, status=200, outcome=Outcome.SUCCESS, reason=None,
        usage=TokenCounts(10, 5, 15), cost_nano_usd=1_500, router_instance="h:1",
    )  # fmt: skip
    fields.update(changes)
    return UsageRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "usage.sqlite3"
    records = [
        record(1, "acme", "chat", "k1", DAY),
        record(2, "acme", "chat", "k1", DAY),
        record(3, "acme", "chat", "k2", DAY, outcome=Outcome.DENIED, reason="budget_exceeded",
               status=402, usage=TokenCounts(), cost_nano_usd=0),
        record(4, "acme", "embed", "k1", NEXT_DAY, cost_nano_usd=None),
        record(5, "globex", "chat", "g1", NEXT_DAY),
    ]  # fmt: skip
    db = UsageLedger(path)
    frames = [
        Frame(0, FrameKind.USAGE, 0, orjson.dumps(usage_to_wire(r))) for r in [*records, records[0]]
    ]
    db.write(frames)  # record 1 twice: the ledger keeps it once
    db.close()
    return path


def report(capsys: pytest.CaptureFixture[str], ledger: Path, *args: str) -> tuple[int, str]:
    code = main(["usage", "report", "--ledger", str(ledger), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_report_as_json_groups_and_totals(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = report(capsys, ledger, "--since", "2026-11-01", "--group-by", "org,model,key",
                       "--format", "json")  # fmt: skip
    assert code == 0
    rows = json.loads(out)
    assert [(r["org"], r["model"], r["key"], r["requests"]) for r in rows] == [
        ("acme", "chat", "k1", 2),
        ("acme", "chat", "k2", 1),
        ("acme", "embed", "k1", 1),
        ("globex", "chat", "g1", 1),
    ]
    first = rows[0]
    assert first["success"] == 2
    assert first["total_tokens"] == 30
    assert first["cost_usd"] == "0.000003000"
    assert rows[1]["denied"] == 1
    assert rows[2]["cost_usd"] is None  # no price for the model


def test_report_as_table_and_csv_with_a_time_range(
    ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = report(capsys, ledger, "--since", DAY, "--until", "2026-11-21", "--group-by", "org")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["org", "requests", "success"]
    assert lines[1].split()[:3] == ["acme", "3", "2"]
    assert len(lines) == 2
    code, out = report(capsys, ledger, "--since", "2026-11-21", "--group-by", "day,org",
                       "--format", "csv")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["org"], r["requests"]) for r in rows] == [
        ("2026-11-21", "acme", "1"),
        ("2026-11-21", "globex", "1"),
    ]


def test_report_refuses_bad_arguments(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = report(capsys, ledger, "--since", "yesterday")
    assert code == 2
    assert "cannot read time 'yesterday'" in out
    code, out = report(capsys, ledger, "--since", "24h", "--group-by", "org,colour")
    assert code == 2
    assert "cannot group by colour" in out
    code, out = report(capsys, tmp_path / "none.sqlite3", "--since", "24h")
    assert code == 3  # the ledger is not there: unavailable, not a usage error
    assert "no usage ledger at" in out
    assert "Traceback" not in out


def test_reconcile_reports_each_kind_of_difference(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "client.log"
    log.write_text("".join(f"req-{n}\n" for n in range(1, 6)))
    assert main(["usage", "reconcile", "--client-log", str(log), "--ledger", str(ledger)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "exact"
    log.write_text(
        "# a client log: ids, or JSON lines with fields to compare\n"
        "req-1\n"
        '{"request_id": "req-2", "total_tokens": 16}\n'
        "req-3\nreq-4\nreq-404\n"
    )
    code = main(["usage", "reconcile", "--client-log", str(log), "--ledger", str(ledger)])
    out = capsys.readouterr().out
    assert code == 4
    assert "missing: req-404" in out
    assert "unexpected: req-5" in out
    assert "mismatched: req-2 total_tokens: client 16, router 15" in out
    assert out.splitlines()[-1] == "DIFFERENT"


def test_config_problems_in_the_usage_sections_name_their_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "backends: {a: {base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {backends: [{backend: a}]}}\n"
        "usage:\n"
        "  spool: {max_bytes: 100, fsync: sometimes}\n"
        "  kafka: {usage_topic: 'no spaces allowed', partitions: 0}\n"
        "idempotency: {retention_s: 3600}\n"
        "state: {store: memcached}\n"
    )
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    for line in (
        "usage.spool.max_bytes: must be >= 65536 (64 KiB)",
        "usage.spool.fsync: must be one of always, interval, never, not 'sometimes'",
        "usage.kafka.usage_topic: must be a Kafka topic name",
        "usage.kafka.partitions: must be > 0",
        "state.store: must be one of embedded, redis, not 'memcached'",
        "idempotency.retention_s: must be >= 86400 (keys are kept 24 h)",
    ):
        assert line in err


def test_kafka_export_needs_its_bootstrap_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROUTER_KAFKA_BOOTSTRAP", raising=False)
    config = tmp_path / "kafka.yaml"
    config.write_text(
        "backends: {a: {base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {backends: [{backend: a}]}}\n"
        "usage: {kafka: {}}\n"
    )
    assert main(["config", "validate", "--check-env", str(config)]) == 1
    assert (
        "usage.kafka.bootstrap_env: environment variable ROUTER_KAFKA_BOOTSTRAP is not set"
        in capsys.readouterr().err
    )
