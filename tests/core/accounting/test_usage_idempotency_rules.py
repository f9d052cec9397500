"""Idempotency verdicts: replay, 409, 422 or proceed, from the entry a key already has."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.accounting import idempotency as idem
from router_core.problems import ClientError

RESPONSE = idem.StoredResponse(200, "application/json", (("x-router-backend", "a"),), b"{}")


def test_verdicts() -> None:
    fp = idem.fingerprint("/v1/chat/completions", {"a": 1})
    assert idem.decide(None, fp) is idem.Verdict.PROCEED
    assert idem.decide(idem.Entry(fp, "o"), fp) is idem.Verdict.CONFLICT
    assert idem.decide(idem.Entry(fp, "o", RESPONSE), fp) is idem.Verdict.REPLAY
    other = idem.fingerprint("/v1/chat/completions", {"a": 2})
    assert idem.decide(idem.Entry(fp, "o"), other) is idem.Verdict.MISMATCH
    assert idem.decide(idem.Entry(fp, "o", RESPONSE), other) is idem.Verdict.MISMATCH


def test_fingerprint_ignores_key_order_but_not_route_or_values() -> None:
    a = idem.fingerprint("/r", {"x": 1, "y": [1, 2]})
    assert a == idem.fingerprint("/r", {"y": [1, 2], "x": 1})
    assert a != idem.fingerprint("/s", {"x": 1, "y": [1, 2]})
    assert a != idem.fingerprint("/r", {"x": 1, "y": [2, 1]})


def test_refusals_are_409_and_422() -> None:
    assert idem.refusal(idem.Verdict.CONFLICT, "k").status == 409
    assert idem.refusal(idem.Verdict.CONFLICT, "k").problem.code == "idempotency_conflict"
    assert idem.refusal(idem.Verdict.MISMATCH, "k").status == 422
    assert idem.refusal(idem.Verdict.MISMATCH, "k").problem.code == "idempotency_key_reused"


STORED = [(200, True), (400, True), (404, True), (402, False), (429, False), (409, False),
          (500, False), (502, False), (504, False)]  # fmt: skip


@pytest.mark.parametrize(("status", "kept"), STORED)
def test_only_answers_a_retry_would_get_again_are_stored(status: int, kept: bool) -> None:
    assert idem.storable(status) is kept


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\nb"])
def test_bad_keys_are_the_callers_fault(key: str) -> None:
    with pytest.raises(ClientError) as info:
        idem.check_key(key)
    assert info.value.status == 422


@given(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
    st.one_of(st.none(), st.binary(max_size=200)),
)
def test_entries_round_trip(fingerprint: str, owner: str, body: bytes | None) -> None:
    response = None if body is None else idem.StoredResponse(201, "text/event-stream", (), body)
    entry = idem.Entry(fingerprint, owner, response)
    assert idem.decode_entry(idem.encode_entry(entry)) == entry
