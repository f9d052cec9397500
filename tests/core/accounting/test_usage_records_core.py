"""Usage records: counts from the backend or flagged estimates, exact cost, wire round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.accounting import records
from router_core.accounting.reconcile import reconcile
from router_core.accounting.records import AuditRecord, Outcome, TokenCounts, UsageRecord
from router_core.accounting.wire import (
    audit_from_wire,
    audit_to_wire,
    format_us,
    parse_us,
    usage_from_wire,
    usage_to_wire,
)
from router_core.config_codec import structure
from router_core.requests import Operation

SCHEMAS = Path(__file__).parents[3] / "schemas"
USAGE_SCHEMA = jsonschema_rs.validator_for(
    json.loads((SCHEMAS / "usage.records.v1.json").read_text())
)

counts = st.builds(
    TokenCounts,
    *(st.integers(0, 10**9) for _ in range(5)),
    st.booleans(),
)
text = st.text(min_size=1, max_size=30)
optional = st.one_of(st.none(), text)
BACKEND_ONLY = (Operation.GEMINI, Operation.BEDROCK, Operation.PROVIDER_EMBEDDING)
usage_records = st.builds(
    UsageRecord,
    record_id=st.uuids().map(str),
    request_id=text,
    client_request_id=optional,
    organization=text,
    key_id=text,
    route=st.just("/v1/chat/completions"),
    # Every operation a route takes (Gemini's, Bedrock's and providers' embedding
    # calls are backend calls, never a record's).
    operation=st.sampled_from([None, *(o.value for o in Operation if o not in BACKEND_ONLY)]),
    model=optional,
    backend=optional,
    backend_model=optional,
    stream=st.booleans(),
    started_at_us=st.integers(0, 2**52),
    finished_at_us=st.integers(0, 2**52),
    latency_ms=st.floats(0, 1e6),
    ttft_ms=st.one_of(st.none(), st.floats(0, 1e6)),
    status=st.integers(100, 599),
    outcome=st.sampled_from(Outcome),
    reason=optional,
    usage=counts,
    cost_nano_usd=st.one_of(st.none(), st.integers(0, 10**18)),
    router_instance=text,
)


@given(usage_records)
def test_wire_round_trip_and_schema(record: UsageRecord) -> None:
    wire = usage_to_wire(record)
    assert usage_from_wire(json.loads(json.dumps(wire))) == record
    errors = [str(e) for e in USAGE_SCHEMA.iter_errors(wire)]
    assert errors == []


@given(st.integers(0, 2**52))
def test_timestamps_round_trip(us: int) -> None:
    assert parse_us(format_us(us)) == us


def test_reported_counts_read_details() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert records.reported_counts(usage) == TokenCounts(10, 5, 15, 4, 2, estimated=False)
    assert records.reported_counts(None) is None
    assert records.reported_counts({"prompt_tokens": -1, "completion_tokens": "x"}) == TokenCounts()


def test_estimates_are_flagged() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x" * 40}]}
    estimate = records.estimated_counts(body, 7)
    assert estimate == TokenCounts(10, 7, 17, 0, 0, estimated=True)
    answer = {"choices": [{"message": {"role": "assistant", "content": "y" * 9}}]}
    assert records.estimate_tokens(records.completion_chars(answer)) == 3


@pytest.mark.parametrize(
    ("field", "given", "prompt_tokens"),
    [
        ("prompt", [1, 2, 3, 4, 5], 5),
        ("prompt", [[1, 2], [3], [4, 5, 6]], 6),
        ("input", [7] * 9, 9),
        ("input", [[0, 1, 2, 3]], 4),
        ("input", ["x" * 8, "y" * 4], 3),
        ("prompt", "x" * 40, 10),
    ],
)
def test_a_prompt_of_token_ids_counts_one_token_per_id(
    field: str, given: object, prompt_tokens: int
) -> None:
    estimate = records.estimated_counts({"model": "m", field: given}, 2)
    assert estimate == TokenCounts(prompt_tokens, 2, prompt_tokens + 2, estimated=True)


def test_cost_is_exact_nano_usd_and_none_without_a_price() -> None:
    config = structure(
        {
            "backends": {"a": {"base_url": "http://a/v1"}},
            "models": {
                "m": {"backends": [{"backend": "a"}]},
                "free": {"backends": [{"backend": "a"}]},
            },
            "prices": {"m": {"input": 0.15, "output": 0.6}},
        }
    )
    used = TokenCounts(1000, 2000, 3000)
    # 1000 * 150 nano + 2000 * 600 nano
    assert records.price(config, "m", used) == 1_350_000
    assert records.price(config, "free", used) is None
    assert records.price(config, None, used) is None


def test_cache_reads_and_writes_are_charged_at_their_rates() -> None:
    config = structure(
        {
            "backends": {"a": {"base_url": "http://a/v1"}},
            "models": {"claude": {"backends": [{"backend": "a"}]}},
            "prices": {"claude": {"input": 3, "output": 15, "cache_read": 0.3,
                                  "cache_write": 3.75}},
        }
    )  # fmt: skip
    # Anthropic's usage as counts: 100 fresh + 600 read + 300 written = 1000 prompt.
    used = TokenCounts(1000, 10, 1010, cached_tokens=600, cache_write_tokens=300)
    assert records.price(config, "claude", used) == 100 * 3000 + 600 * 300 + 300 * 3750 + 150_000


def test_outcomes_from_problem_codes() -> None:
    assert records.outcome_of(None) is Outcome.SUCCESS
    assert records.outcome_of("rate_limit_exceeded") is Outcome.DENIED
    assert records.outcome_of("backend_timeout") is Outcome.BACKEND_ERROR
    assert records.outcome_of(None, cancelled=True) is Outcome.CLIENT_CANCELLED
    assert records.outcome_of(None, replayed=True) is Outcome.REPLAYED


def _wire(record_id: str, request_id: str, **changes: Any) -> dict[str, Any]:
    record = UsageRecord(
        record_id=record_id, request_id=request_id, client_request_id=None,
        organization="o", key_id="k", route="/v1/chat/completions", operation="chat",
        model="m", backend="a", backend_model="m", stream=False, started_at_us=0,
        finished_at_us=1, latency_ms=1.0, ttft_ms=None, status=200,
        outcome=Outcome.SUCCESS, reason=None, usage=TokenCounts(1, 2, 3), cost_nano_usd=None,
        router_instance="h:1",
    )  # fmt: skip
    wire = usage_to_wire(record)
    wire.update(changes)
    return wire


def test_reconcile_dedupes_by_record_id_and_finds_every_difference() -> None:
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(7)]
    topic = [
        _wire(ids[0], "r0"),
        _wire(ids[0], "r0"),  # redelivered: not a duplicate charge
        _wire(ids[1], "r1"),
        _wire(ids[2], "r1"),  # a second charge for r1
        _wire(ids[3], "r2", status=502),
        _wire(ids[4], "r3", outcome="replayed"),  # a replay is not a charge
        _wire(ids[5], "stray"),
        # A concurrent duplicate refused with 409: a retry, not a charge.
        _wire(ids[6], "r0", outcome="denied", reason="idempotency_conflict", status=409),
    ]
    client: list[dict[str, Any]] = [
        {"request_id": "r0"},
        {"request_id": "r1"},
        {"request_id": "r2", "status": 200},
        {"request_id": "r3"},
        {"request_id": "r4"},
    ]
    report = reconcile(client, topic)
    assert report.redelivered == 1
    assert report.replayed == 2
    assert report.missing == ("r3", "r4")
    assert report.duplicated == ("r1",)
    assert [(m.id, m.field, m.client, m.router) for m in report.mismatched] == [
        ("r2", "status", 200, 502)
    ]
    assert report.unexpected == ("stray",)
    assert not report.exact
    assert reconcile([{"request_id": "r0"}], topic[:2]).exact


AUDIT_SCHEMA = jsonschema_rs.validator_for(
    json.loads((SCHEMAS / "audit.router.v1.json").read_text())
)
audit_records = st.builds(
    AuditRecord,
    record_id=st.uuids().map(str),
    at_us=st.integers(0, 2**52),
    event=text,
    organization=optional,
    key_id=optional,
    request_id=optional,
    detail=st.dictionaries(text, st.one_of(st.integers(), text, st.floats(0, 1e9))),
    router_instance=text,
)


@given(audit_records)
def test_audit_wire_round_trip_and_schema(record: AuditRecord) -> None:
    wire = audit_to_wire(record)
    assert audit_from_wire(json.loads(json.dumps(wire))) == record
    assert [str(e) for e in AUDIT_SCHEMA.iter_errors(wire)] == []
