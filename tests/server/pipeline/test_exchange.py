"""A request's Exchange: one finish releases everything it holds, once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from router_core.accounting.records import Outcome, TokenCounts, UsageRecord
from router_core.auth import Principal
from router_core.config_codec import structure
from router_core.problems import ClientError
from router_core.requests import Operation, validate_openai
from router_core.retry_budget import RetryBudget
from router_server.backpressure import Backpressure
from router_server.dispatch import Dispatcher
from router_server.exchange import Ending, Exchange
from router_server.health import Health
from router_server.limits import LimitGate, MemoryLimitStore
from router_server.runtime import Runtime
from router_server.state.layer import StateLayer
from router_server.usage.setup import open_usage
from router_server.usage.trace import Unrecorded, UsageTrace

from tests.helpers.support import CHAT, base_config


def test_finish_gives_the_slot_back_and_records_once_however_often_called(
    tmp_path: Path,
) -> None:
    data = base_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    data["state"] = {"dir": str(tmp_path / "usage")}
    data["organizations"]["acme"]["limits"] = {"quotas": {"tokens_per_month": 1_000}}
    config = structure(data)
    runtime = Runtime.build(config, {})
    principal = Principal("acme", "key-1", config.organizations["acme"])

    class Records(list[UsageRecord]):
        """An observer that keeps every record (and ignores unrecorded answers)."""

        def observe(self, record: UsageRecord) -> None:
            self.append(record)

        def observe_unrecorded(self, answer: Unrecorded) -> None:
            return None

    async def main() -> tuple[int, list[UsageRecord], object]:
        records = Records()
        backpressure = Backpressure(lambda: config.server)
        limits = LimitGate(MemoryLimitStore(), config.state.store)
        health = Health(lambda: config)
        dispatch = Dispatcher(health, lambda: {}, RetryBudget(lambda: config.routing))
        stores = StateLayer.open(config, {})
        async with open_usage(config, {}, stores) as usage:
            usage.recorder.observers.append(records)
            trace = UsageTrace("req-1", "/v1/chat/completions", 0.0, 0, config)
            trace.principal = principal
            trace.inference = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 5})
            exchange = Exchange(runtime, trace, usage, limits, dispatch)
            await exchange.enter(backpressure)
            exchange.ticket = await limits.admit(
                config, "req-1", principal.limit_scope, trace.inference
            )
            counts = TokenCounts(3, 4, 7)
            await exchange.finish(Ending(200, Outcome.SUCCESS, counts=counts, served=True))
            # A second way out (a cancellation arriving late) changes nothing.
            await exchange.finish(Ending(499, Outcome.CLIENT_CANCELLED))
            big = validate_openai(Operation.CHAT, {**CHAT, "max_tokens": 1_000})
            with pytest.raises(ClientError) as refused:
                await limits.admit(config, "req-2", principal.limit_scope, big)
        return backpressure.in_flight, records, refused.value.extra["current_usage"]

    in_flight, records, quota_used = anyio.run(main)
    assert in_flight == 0
    assert [(r.status, r.outcome, r.usage.total_tokens) for r in records] == [
        (200, Outcome.SUCCESS, 7)
    ]
    assert quota_used == 7  # settled once, with the record's counts
