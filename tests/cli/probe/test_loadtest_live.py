"""`router loadtest` against a real router with mock backends. The live runs
assert structure and counts, never timings: targets are set far beyond what
a loaded machine could miss, except where a failure is built in (a backend
that errors; one request in flight against a backend slower than the
schedule). The judgement itself is tested on fixed numbers in test_slo_rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from router_cli.main import main
from router_server.exit_codes import Exit
from router_server.mock_backend import MockBackendProcess, free_port
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, REVOKED_KEY

Live = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
# Targets no loaded machine misses: only the error rate and the schedule can fail.
LOOSE = ["--p95-ms", "600000", "--router-ms", "600000"]
SLOS = ["latency", "router_overhead", "error_rate", "schedule"]


def loadtest(
    capsys: pytest.CaptureFixture[str], url: str, *args: str, key: str = ACME_KEY
) -> tuple[int, dict[str, Any], str]:
    code = main(["loadtest", url, "--key", key, "--format", "json", *args])
    out, err = capsys.readouterr()
    assert key not in out + err
    return code, (json.loads(out) if out else {}), err


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    return {v["slo"]: v["passed"] for v in report["slos"]}


def test_a_healthy_run_sends_every_request_and_passes(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    code, report, _ = loadtest(capsys, router.url, "--rate", "20", "--duration", "1",
                               "--model", "chat", *LOOSE)  # fmt: skip
    assert code == Exit.OK, report
    assert report["requests"]["scheduled"] == 20
    assert report["requests"]["sent"] + report["requests"]["unsent"] == 20
    assert report["requests"]["ok"] == report["requests"]["sent"]
    assert report["errors_by_kind"] == {}
    assert verdicts(report) == dict.fromkeys(SLOS, True)
    # Every answer carried the router's Server-Timing, so both shares are known.
    assert report["latency_ms"]["router"]["p95"] is not None
    assert report["latency_ms"]["backend"]["p95"] is not None
    assert set(report) >= {"passed", "rate", "duration_s", "url", "model", "stream", "targets"}
    assert report["model"] == "chat"
    assert report["stream"] is False
    assert report["targets"]["exclude_backend"] is True


def test_a_streamed_run_reads_every_stream_to_done(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    code, report, _ = loadtest(capsys, router.url, "--rate", "10", "--duration", "1", "--stream",
                               "--model", "chat", "--include-backend", *LOOSE)  # fmt: skip
    assert code == Exit.OK, report
    assert report["stream"] is True
    assert report["requests"]["ok"] == report["requests"]["sent"] == 10
    assert report["targets"]["exclude_backend"] is False


def test_a_backend_that_errors_fails_the_error_rate(
    live_router: Live, mocks: Mocks, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    mocks[1].configure(error_rate=1.0, error_status=400)  # b-only is mock-b's alone
    code, report, err = loadtest(capsys, router.url, "--rate", "10", "--duration", "1",
                                 "--model", "b-only", *LOOSE)  # fmt: skip
    assert code == Exit.FAILED
    judged = verdicts(report)
    assert judged["error_rate"] is False
    assert judged["latency"] is False  # no answer succeeded: no data
    assert report["requests"]["errors"] == report["requests"]["sent"] == 10
    assert sum(report["errors_by_kind"].values()) == 10
    assert all(kind.startswith("4") for kind in report["errors_by_kind"])
    assert "failed: latency, router_overhead, error_rate" in err


def test_requests_beyond_the_in_flight_bound_are_counted_unsent(
    live_router: Live, mocks: Mocks, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    # Each answer takes at least 300 ms and one may be open at a time: of 10
    # requests due over half a second at most 2 can be sent, however fast the box.
    mocks[1].configure(latency_ms=300)
    code, report, _ = loadtest(capsys, router.url, "--rate", "20", "--duration", "0.5",
                               "--model", "b-only", "--max-in-flight", "1", *LOOSE)  # fmt: skip
    assert code == Exit.FAILED
    assert verdicts(report)["schedule"] is False
    counts = report["requests"]
    assert counts["scheduled"] == 10
    assert counts["sent"] <= 2
    assert counts["unsent"] == 10 - counts["sent"]
    assert counts["errors"] == 0


def test_the_table_prints_a_line_per_slo(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    args = ["loadtest", router.url, "--key", ACME_KEY, "--rate", "5", "--duration", "1",
            "--model", "chat", "--router-ms", "0"]  # fmt: skip
    assert main(args) == Exit.FAILED  # no router takes 0 ms
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split()[1] for line in lines] == SLOS
    assert lines[1].startswith("FAIL  router_overhead")


def test_before_any_load_a_bad_key_model_or_url_is_refused(
    live_router: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    router = live_router()
    base = ["--rate", "5", "--duration", "1"]
    code, report, err = loadtest(capsys, router.url, *base, key=REVOKED_KEY)
    assert (code, report) == (Exit.USAGE, {})
    assert "the key was refused: 401" in err
    code, _, err = loadtest(capsys, router.url, *base, "--model", "nope")
    assert code == Exit.USAGE
    assert "model 'nope' is not offered to this key (it may use: b-only, chat, embed)" in err
    code, _, err = loadtest(capsys, f"http://127.0.0.1:{free_port()}", *base)
    assert code == Exit.UNAVAILABLE
    assert "cannot connect" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0", "--duration", "1"], "must be positive"),
        (["--rate", "5", "--duration", "1", "--max-error-rate", "2"], "is a share"),
        (["--rate", "5", "--duration", "1", "--quantile", "0"], "--quantile"),
        (["--rate", "5", "--duration", "1", "--max-in-flight", "0"], "at least 1"),
        (["--rate", "100000", "--duration", "100"], "over a million"),
    ],
)
def test_options_that_cannot_work_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", "http://127.0.0.1:1", "--key", ACME_KEY, *args]) == Exit.USAGE
    assert message in capsys.readouterr().err
