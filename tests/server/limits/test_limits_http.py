"""Rate limits, quotas and budgets over HTTP, on the in-memory store.

Includes the spec's three budget/quota scenarios (SC-003): an organization at
its budget, a key whose daily quota is exhausted, and a monthly window that
rolls over.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

import pytest

from router_core.limits.budget import BudgetState

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import ACME_KEY, CHAT, DAY_US, Limited, LimitedFactory, auth

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
# $1 per 1M input tokens and $2 per 1M output: 1,000 and 2,000 nano-USD a token.
PRICES = {
    "chat": {"input": 1, "output": 2},
    "embed": {"input": 1},
    "b-only": {"input": 1, "output": 2},
}


def limited_config(config_data: dict[str, Any], **acme: Any) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["prices"] = PRICES
    data["organizations"]["acme"].update(acme)
    return data


def chat_hits(mocks: Mocks) -> int:
    return sum(m.stats()["by_path"].get("/v1/chat/completions", 0) for m in mocks)


def ask(limited: Limited, **body: Any) -> Any:
    return limited.client.post("/v1/chat/completions", json={**CHAT, **body}, headers=auth())


def test_rate_limit_answers_429_with_headers_and_spares_the_backend(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    app = limited(limited_config(config_data, limits={"requests": {"rate": 3, "per": "minute"}}))
    answers = [ask(app) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    denied = answers[3]
    error = denied.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_exceeded"
    assert (error["limit_type"], error["limit"], error["current_usage"]) == ("rate_limit", 3, 3)
    assert error["retry_after"] == 20  # one request every 20 s
    assert denied.headers["retry-after"] == "20"
    assert denied.headers["retry-after-ms"] == "20000"
    assert denied.headers["ratelimit-policy"] == '"requests";q=3'
    assert denied.headers["ratelimit"].startswith('"requests";r=0;t=')
    assert chat_hits(mocks) == 3
    app.clock.advance(20)
    assert ask(app).status_code == 200


def test_denials_are_audit_events(
    limited: LimitedFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = limited(limited_config(config_data, limits={"requests": {"rate": 1, "per": "hour"}}))
    assert ask(app).status_code == 200
    with caplog.at_level(logging.INFO, logger="router.audit"):
        assert ask(app).status_code == 429
    (event,) = [r for r in caplog.records if r.name == "router.audit"]
    assert event.getMessage() == "limit_denied"
    assert vars(event)["organization"] == "acme"
    assert vars(event)["key_id"] == "acme1"
    assert vars(event)["limit_type"] == "rate_limit"
    assert ACME_KEY not in str(vars(event))


def test_inference_route_speaks_the_seed_body(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    app = limited(limited_config(config_data, limits={"requests": {"rate": 1, "per": "hour"}}))
    body = {"model": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}}
    first = app.client.post(
        "/v1/inference", json={**body, "request_id": str(uuid.uuid4())}, headers=auth()
    )
    assert first.status_code == 200
    second = app.client.post(
        "/v1/inference", json={**body, "request_id": str(uuid.uuid4())}, headers=auth()
    )
    assert second.status_code == 429
    assert second.json() == {
        "error": second.json()["error"],
        "code": "RATE_LIMIT_EXCEEDED",
        "limit_type": "rate_limit",
        "current_usage": 1,
        "limit": 1,
        "retry_after": 3600,
    }
    assert "organization 'acme'" in second.json()["error"]


def test_organization_at_its_budget_is_refused_402(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """SC-003 scenario 1: an organization at its budget."""
    # Worst case per request: 27 prompt-bound tokens x 1,000 + 10 x 2,000 = 47,000 nano;
    # actual (mock): 5 x 1,000 + 10 x 2,000 = 25,000. Two fit in 90,000; the third is
    # clamped to the 6 output tokens the remaining 40,000 afford; the fourth is refused.
    app = limited(limited_config(config_data, limits={"budget": {"per_day": "0.00009"}}))
    answers = [ask(app, max_tokens=10) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 402]
    assert [a.json()["usage"]["completion_tokens"] for a in answers[:3]] == [10, 10, 6]
    error = answers[3].json()["error"]
    assert (error["code"], error["type"], error["limit_type"]) == (
        "budget_exceeded",
        "insufficient_quota",
        "budget",
    )
    assert error["limit"] == pytest.approx(0.00009)
    assert error["current_usage"] == pytest.approx(0.000067)
    assert int(answers[3].headers["retry-after"]) == 12 * 3600  # noon to midnight
    assert "budget per day" in error["message"]
    # The spend was settled to what the backend reported, with nothing held.
    state = app.store.ledger.get(f"org:acme:usd:day:{app.clock.now // DAY_US}", app.clock.now)
    assert state == BudgetState(committed=2 * 25_000 + 17_000, reserved=0)
    assert chat_hits(mocks) == 3


def test_key_with_exhausted_daily_quota(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """SC-003 scenario 2: a key whose daily quota is exhausted; the org's other key is not."""
    data = limited_config(config_data)
    keys = data["organizations"]["acme"]["keys"]
    keys[0]["limits"] = {"quotas": {"requests_per_day": 2}}
    data["organizations"]["globex"]["keys"][0]["limits"] = {}
    app = limited(data)
    assert [ask(app).status_code for _ in range(3)] == [200, 200, 402]
    denied = ask(app)
    error = denied.json()["error"]
    assert (error["code"], error["limit_type"], error["current_usage"], error["limit"]) == (
        "quota_exceeded",
        "quota",
        2,
        2,
    )
    assert "key 'acme1'" in error["message"]
    assert "request quota per day" in error["message"]
    app.clock.advance(12 * 3600)  # past midnight
    assert ask(app).status_code == 200


def test_monthly_window_rolls_over(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    """SC-003 scenario 3: a monthly token quota, exhausted on Jan 31, fresh on Feb 1."""
    app = limited(limited_config(config_data, limits={"quotas": {"tokens_per_month": 100}}))
    assert ask(app, max_tokens=40).status_code == 200  # holds bound + 40, settles to 45
    assert ask(app, max_tokens=40).status_code == 402
    app.clock.advance(11 * 3600 + 59 * 60)  # 23:59 on Jan 31
    assert ask(app, max_tokens=40).status_code == 402
    app.clock.advance(60)  # Feb 1, 00:00
    assert ask(app, max_tokens=40).status_code == 200


def test_clamp_policy_lowers_max_tokens_to_what_the_budget_affords(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    # Prompt bound of CHAT: 8 + 4 + len('user') + len('hello there') = 27 tokens = 27,000 nano;
    # a budget of 67,000 nano leaves output for (67,000 - 27,000) / 2,000 = 20 tokens.
    app = limited(limited_config(config_data, limits={"budget": {"total": "0.000067"}}))
    answer = ask(app, max_tokens=500)
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 20
    data = limited_config(config_data, limits={"budget": {"total": "0.000067"}})
    data["limits"] = {"max_tokens_policy": "refuse"}
    strict = limited(data)
    assert ask(strict, max_tokens=500).status_code == 402
    assert ask(strict, max_tokens=20).status_code == 200


def test_absent_max_tokens_is_capped_when_a_budget_applies(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    data = limited_config(config_data, limits={"budget": {"per_month": 10}})
    data["limits"] = {"default_max_tokens": 7}
    app = limited(data)
    answer = ask(app)
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 7


def test_backend_failure_releases_the_reservation(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    app = limited(
        limited_config(
            config_data, limits={"budget": {"per_day": 1}, "quotas": {"requests_per_day": 5}}
        )
    )
    for mock in mocks:
        mock.configure(error_rate=1.0)
    assert ask(app, max_tokens=10).status_code == 502
    day = app.clock.now // DAY_US
    assert app.store.ledger.get(f"org:acme:usd:day:{day}", app.clock.now) == BudgetState(0, 0)
    assert app.store.ledger.get(f"org:acme:req:day:{day}", app.clock.now) == 0
    assert app.store.ledger.open_holds == 0


def test_streamed_request_settles_from_the_usage_the_router_asked_for(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    app = limited(limited_config(config_data, limits={"budget": {"per_day": 1}}))
    with app.client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth(),
        json={**CHAT, "stream": True, "max_tokens": 6},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert not any('"usage"' in line and '"choices":[]' in line for line in lines)
    state = app.store.ledger.get(f"org:acme:usd:day:{app.clock.now // DAY_US}", app.clock.now)
    assert state == BudgetState(committed=5 * 1_000 + 6 * 2_000, reserved=0)
    assert app.store.ledger.open_holds == 0


def test_no_limits_no_headers(
    limited: LimitedFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    app = limited(config_data)
    answer = ask(app)
    assert answer.status_code == 200
    assert not any(h.startswith("x-ratelimit") for h in answer.headers)


def test_limit_config_problems_have_paths(config_data: dict[str, Any]) -> None:
    from router_core.config_codec import ConfigInvalid, structure

    data = limited_config(
        config_data,
        limits={"requests": {"rate": 0, "per": "fortnight"}, "budget": {"per_day": "0.0000000001"}},
    )
    data["prices"] = {"chat": {"input": "0.0001"}}
    with pytest.raises(ConfigInvalid) as info:
        structure(data)
    problems = sorted(str(p) for p in info.value.problems)
    assert problems == [
        "organizations.acme.limits.budget.per_day: "
        "must be > 0 and < 9,000,000 USD with at most 9 decimals",
        "organizations.acme.limits.requests.per: must be one of second, minute, hour, "
        "not 'fortnight'",
        "organizations.acme.limits.requests.rate: must be > 0",
        "prices.chat.input: must be >= 0 USD per 1M tokens with at most 3 decimals",
    ]
    data = limited_config(config_data, limits={"budget": {"per_day": 5}})
    data["prices"] = {"chat": {"input": 1}}
    with pytest.raises(ConfigInvalid) as missing:
        structure(data)
    assert [str(p) for p in missing.value.problems] == [
        "prices.embed: required: organizations.acme has a budget that covers this model "
        "(the shipped price table has no price for 'mock-embed')",
        "prices.b-only: required: organizations.acme has a budget that covers this model "
        "(the shipped price table has no price for 'mock-gpt-b')",
    ]


def test_rates_too_large_to_count_exactly_are_config_problems(config_data: dict[str, Any]) -> None:
    from router_core.config_codec import ConfigInvalid, structure

    data = limited_config(config_data, limits={"tokens": {"rate": 1_000_000_000, "per": "minute"}})
    with pytest.raises(ConfigInvalid) as info:
        structure(data)
    assert [p.path for p in info.value.problems] == ["organizations.acme.limits.tokens"]
    assert "too large to count exactly" in info.value.problems[0].message
    fine = limited_config(config_data, limits={"tokens": {"rate": 30_000_000, "per": "minute"}})
    assert structure(fine)
