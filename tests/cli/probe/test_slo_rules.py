"""The pure half of `router loadtest` (router_cli.probe.slo): the schedule,
percentiles and the SLO judgement, on fixed numbers; and the Server-Timing
field read back as the router writes it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_cli.probe import slo
from router_cli.probe.http import ProbeUsage, Secrets, base_url, server_timing
from router_server.pipeline import server_timing as written

OK = slo.Targets()


def by_slo(verdicts: tuple[slo.Verdict, ...]) -> dict[str, slo.Verdict]:
    return {v.slo: v for v in verdicts}


def test_nearest_rank_on_known_values() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert slo.nearest_rank(values, 0.95) == 95
    assert slo.nearest_rank(values, 0.5) == 50
    assert slo.nearest_rank(values, 1.0) == 100
    assert slo.nearest_rank([7.0], 0.95) == 7
    assert slo.nearest_rank([1.0, 2.0], 0.5) == 1
    with pytest.raises(ValueError, match="no values"):
        slo.nearest_rank([], 0.5)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0.01, 1.0))
def test_nearest_rank_is_the_smallest_value_covering_q(values: list[float], q: float) -> None:
    ordered = sorted(values)
    found = slo.nearest_rank(ordered, q)
    assert found in ordered
    assert sum(v <= found for v in ordered) >= q * len(ordered)
    assert sum(v < found for v in ordered) < q * len(ordered)


def test_the_schedule_is_fixed_by_rate_and_duration() -> None:
    assert list(slo.due_offsets(10, 1)) == [i / 10 for i in range(10)]
    assert len(list(slo.due_offsets(2.5, 2))) == 5
    assert len(list(slo.due_offsets(3, 0.5))) == 2  # due at 0 and 1/3; 2/3 is past the end
    assert len(list(slo.due_offsets(100, 0.3))) == 30  # not 31 for a float's rounding
    with pytest.raises(ValueError, match="positive"):
        list(slo.due_offsets(0, 1))


def test_a_run_within_every_target_passes() -> None:
    samples = [slo.Sample(500.0, None, 10.0, 450.0)] * 99 + [slo.Sample(2000.0, "503 overloaded")]
    verdicts = by_slo(slo.judge(samples, 0, OK))
    assert verdicts["latency"].passed
    assert verdicts["latency"].measured == 50.0
    assert verdicts["router_overhead"].passed
    assert verdicts["router_overhead"].measured == 10.0
    assert verdicts["error_rate"].passed
    assert verdicts["error_rate"].measured == 0.01
    assert verdicts["schedule"].passed


def test_each_target_fails_on_its_own() -> None:
    slow = [slo.Sample(900.0, None, 10.0, 100.0)] * 20  # 800 ms without the backend
    assert [v.slo for v in slo.judge(slow, 0, OK) if not v.passed] == ["latency"]
    heavy = [slo.Sample(300.0, None, 151.0, 100.0)] * 20
    assert [v.slo for v in slo.judge(heavy, 0, OK) if not v.passed] == ["router_overhead"]
    failing = [slo.Sample(30.0, None, 1.0, 20.0)] * 97 + [slo.Sample(5.0, "502 backend_error")] * 3
    assert [v.slo for v in slo.judge(failing, 0, OK) if not v.passed] == ["error_rate"]
    behind = [slo.Sample(30.0, None, 1.0, 20.0)] * 10
    assert [v.slo for v in slo.judge(behind, 1, OK) if not v.passed] == ["schedule"]


def test_the_quantile_decides_which_answers_count() -> None:
    samples = [slo.Sample(100.0, None, 5.0, 0.0)] * 94 + [slo.Sample(1000.0, None, 5.0, 0.0)] * 6
    assert not by_slo(slo.judge(samples, 0, OK))["latency"].passed  # p95 is 1000
    lenient = slo.Targets(quantile=0.9)
    assert by_slo(slo.judge(samples, 0, lenient))["latency"].passed  # p90 is 100


def test_end_to_end_counts_the_backend_and_missing_timing_counts_whole() -> None:
    samples = [slo.Sample(500.0, None, 10.0, 450.0)] * 10
    whole = slo.Targets(exclude_backend=False)
    assert by_slo(slo.judge(samples, 0, whole))["latency"].measured == 500.0
    untimed = [slo.Sample(500.0)] * 10
    verdicts = by_slo(slo.judge(untimed, 0, OK))
    assert verdicts["latency"].measured == 500.0
    assert "10 without Server-Timing, counted whole" in verdicts["latency"].detail
    # No router share reported: the overhead SLO cannot be shown, so it fails.
    assert not verdicts["router_overhead"].passed
    assert verdicts["router_overhead"].measured is None
    assert "no answer carried Server-Timing" in verdicts["router_overhead"].detail


def test_nothing_answered_fails_every_latency_slo() -> None:
    verdicts = by_slo(slo.judge([], 5, OK))
    assert [v.passed for v in verdicts.values()] == [False, False, False, False]
    errors_only = by_slo(slo.judge([slo.Sample(3.0, "cannot connect")] * 4, 0, OK))
    assert errors_only["latency"].measured is None
    assert errors_only["error_rate"].measured == 1.0


def test_targets_reject_a_quantile_outside_0_1() -> None:
    with pytest.raises(ValueError, match="quantile"):
        slo.Targets(quantile=1.5)


def test_the_summary_counts_every_request() -> None:
    samples = [slo.Sample(40.0, None, 2.0, 30.0), slo.Sample(9.0, "429 rate_limit_exceeded")]
    verdicts = slo.judge(samples, 1, OK)
    out = slo.summary(samples, 1, OK, verdicts, rate=3, duration_s=1)
    assert out["requests"] == {"scheduled": 3, "sent": 2, "unsent": 1, "ok": 1, "errors": 1}
    assert out["errors_by_kind"] == {"429 rate_limit_exceeded": 1}
    assert out["latency_ms"]["judged"]["p95"] == 10.0
    assert out["latency_ms"]["router"]["max"] == 2.0
    assert [s["slo"] for s in out["slos"]] == [
        "latency",
        "router_overhead",
        "error_rate",
        "schedule",
    ]
    assert out["passed"] is False


@given(st.floats(0, 100), st.floats(0, 100))
def test_server_timing_reads_back_what_the_router_writes(total_s: float, backend_s: float) -> None:
    router_ms, backend_ms = server_timing(written(total_s, backend_s))
    assert router_ms is not None
    assert backend_ms is not None
    assert math.isclose(router_ms, max(0.0, total_s - backend_s) * 1000, abs_tol=0.001)
    assert math.isclose(backend_ms, backend_s * 1000, abs_tol=0.001)


def test_server_timing_from_elsewhere() -> None:
    assert server_timing(None) == (None, None)
    assert server_timing('cdn;dur=3, router;desc="x";dur=1.5') == (1.5, None)
    assert server_timing("router;dur=abc, backend;dur=2") == (None, 2.0)


def test_urls_and_secrets() -> None:
    assert base_url("https://r.example/v1/") == "https://r.example"
    assert base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(ProbeUsage, match="not an http"):
        base_url("router.example")
    assert Secrets("rk_secret_value", "tok").scrub("bad rk_secret_value tok") == "bad *** ***"
