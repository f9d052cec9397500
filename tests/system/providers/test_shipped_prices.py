"""The shipped price table, live: a budgeted model with no `prices` entry, routed
to an `anthropic` backend (the mock playing api.anthropic.com) under a model id
the table knows, is reserved for and charged at the shipped price."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from router_core.config_enums import BackendKind
from router_core.price_table import BY_ID
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import BACKEND_SECRET, BACKEND_SECRET_ENV
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
OPUS = "claude-opus-4-5-20251101"


def opus_config(config_data: dict[str, Any], mocks: Mocks, budget: str) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["backends"]["anthropic"] = {
        "kind": "anthropic",
        "base_url": mocks[1].url,
        "api_key_env": BACKEND_SECRET_ENV,
        "connect_timeout_s": 1,
        "read_timeout_s": 5,
    }
    data["models"]["opus"] = {"backends": [{"backend": "anthropic", "model": OPUS}]}
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    # A budget on `opus` alone: no `prices` section at all.
    acme = data["organizations"]["acme"]
    acme["model_limits"] = {"opus": {"budget": {"total": budget}}}
    assert "prices" not in data
    return data


def test_a_budgeted_request_is_charged_the_shipped_price(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    router = start_router(opus_config(config_data, mocks, budget="10"))
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="opus", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert reply.usage is not None
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["backend"], record["backend_model"], record["outcome"]) == (
        "anthropic", OPUS, "success"
    )  # fmt: skip
    usage = record["usage"]
    assert usage["completion_tokens"] == 4
    price = BY_ID[(BackendKind.ANTHROPIC, OPUS)].price
    assert (price.input, price.output) == (Decimal(5), Decimal(25))
    # $5 and $25 per million tokens: 5000 and 25000 nano-USD per token.
    uncached = usage["prompt_tokens"] - usage["cached_tokens"] - usage["cache_write_tokens"]
    assert usage["cached_tokens"] == usage["cache_write_tokens"] == 0
    expected = uncached * 5000 + usage["completion_tokens"] * 25000
    assert expected > 0
    assert record["cost_usd"] == f"{expected / 1e9:.9f}"
    assert BACKEND_SECRET not in json.dumps(record)


def test_the_reservation_uses_the_shipped_price(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks
) -> None:
    # A $0.001 budget affords at most 40 output tokens at $25 per million, less
    # the prompt's worst case: max_tokens 100 is clamped (the default policy)
    # before the backend is called, which only a price can decide.
    router = start_router(opus_config(config_data, mocks, budget="0.001"))
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="opus", messages=[{"role": "user", "content": "hi"}], max_tokens=100
        )
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens < 40
