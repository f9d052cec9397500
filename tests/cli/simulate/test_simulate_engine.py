"""The simulation engine on small traces whose answers are known."""

from __future__ import annotations

import pytest

from router_cli.simulate import Simulation
from router_core.config_codec import structure

from tests.helpers.sim_support import T0, config_data, rec, run, with_org_limits


def test_shares_follow_the_weights() -> None:
    result = run(structure(config_data()), [rec(i * 0.5) for i in range(4000)])
    assert result.served_total == 4000
    assert result.served["a"] / 4000 == pytest.approx(0.75, abs=0.03)
    assert result.failovers == 0
    assert not result.denials


def test_one_seed_one_result() -> None:
    config = structure(config_data())
    records = [rec(i * 0.5) for i in range(500)]
    first, again = run(config, records, seed=7), run(config, records, seed=7)
    assert first.summary() == again.summary()
    assert run(config, records, seed=8).served != first.served


# From between two active probes (every 2 s), so some requests meet it first.
DOWN_A = """
faults:
  - {backend: a, kind: down, start_s: 101, end_s: 200}
"""


def test_a_down_backend_fails_over_until_a_probe_opens_its_circuit() -> None:
    config = structure(config_data())
    records = [rec(i * 0.5) for i in range(600)]  # 300 s, a request every 0.5 s
    result = run(config, records, DOWN_A)
    assert result.served_total == 600  # b takes every request while a is down
    # The first request to meet the fault (from 101 s) fails, and asks for the
    # probe that opens the circuit (or the round at 102 s does); after that,
    # every open_s, a trial probe, not a request, finds it down.
    assert 1 <= result.failovers <= 2
    assert result.failed_attempts["a"] == result.failovers
    healthy = run(config, records)
    assert result.served["b"] - healthy.served["b"] > 100
    # While down, a served nothing: its share of the requests in [101, 200) s went to b.
    during = run(config, records[200:400], DOWN_A.replace("101", "0").replace("200", "100"))
    assert during.served["a"] == 0
    # Back up, a trial probe closes its circuit within open_s, and a serves its
    # share again (3/4 of the 100 requests in [100, 150) s, less those few seconds).
    back = run(config, records[200:500], DOWN_A.replace("101", "0").replace("200", "100"))
    assert back.served["a"] > 50


def test_without_another_candidate_the_request_fails() -> None:
    config = structure(config_data())
    records = [rec(i * 0.5, "a-only") for i in range(600)]
    result = run(config, records, DOWN_A)
    failed = result.denials["backend_error"]
    skipped = result.denials["no_backend_available"]
    # The first request to meet it fails and asks for a probe, which opens the
    # circuit: the rest are not sent.
    assert failed == 1
    # Every request in [101, 200] s: at 200 s a probe finds a back, and the
    # trial probe it starts closes the circuit 0.2 s later (a's latency).
    assert failed + skipped == 199
    assert result.served["a"] == 401
    assert result.failovers == 0


def test_a_timeout_is_not_failed_over_an_error_is() -> None:
    """As the router: a hung backend would hang again (504); a 503 moves on."""
    config = structure(config_data())
    hang = "faults: [{backend: a, kind: hang, start_s: 0, end_s: 1000}]"
    result = run(config, [rec(0, "tiered")], hang)
    assert result.denials["backend_timeout"] == 1
    assert result.failed_attempts["a"] == 1
    assert result.failovers == 0
    error = "faults: [{backend: a, kind: error, start_s: 0, end_s: 1000}]"
    result = run(config, [rec(0, "tiered")], error)
    assert result.served["b"] == 1
    assert result.failovers == 1
    # The failed attempt's latency (200 ms by default) counts, then b's.
    assert result.summary()["latency_ms"]["p50"] == 400.0


def test_full_backends_shed_the_request() -> None:
    data = config_data()
    data["backends"]["a"]["max_in_flight"] = 2
    records = [rec(0, "a-only") for _ in range(3)] + [rec(1, "a-only")]
    result = run(structure(data), records)
    assert result.served["a"] == 3
    assert result.denials["overloaded"] == 1


def test_added_latency_shows_in_the_percentiles() -> None:
    config = structure(config_data())
    faults = """
default: {latency_ms: 100, per_token_ms: 1}
faults: [{backend: a, kind: latency, start_s: 0, end_s: 1000, added_ms: 500}]
"""
    result = run(config, [rec(i, "a-only", completion=50) for i in range(10)], faults)
    assert result.summary()["latency_ms"] == {"p50": 650.0, "p99": 650.0}
    beyond = faults.replace("500", "20000")  # past the 10 s read timeout
    assert run(config, [rec(0, "a-only")], beyond).denials["backend_timeout"] == 1


def test_denials_by_reason() -> None:
    data = with_org_limits(config_data(), "globex", {"quotas": {"requests_per_day": 5}})
    data = with_org_limits(data, "acme", {"requests": {"rate": 1, "per": "hour", "burst": 3}})
    records = [
        rec(0, key="nobody1"),  # unknown key
        rec(1, key="revoked1"),
        rec(2, key=None, org="initech"),  # unknown organization
        rec(3, "embed"),  # no such model
        rec(4, "a-only", key="globex1"),  # not globex's
        *(rec(10 + i, key="globex1") for i in range(8)),  # 5 pass the quota, 3 do not
        *(rec(30 + i) for i in range(5)),  # 3 pass the burst, 2 do not
    ]
    result = run(structure(data), records)
    assert dict(result.denials) == {
        "unauthenticated": 3,
        "model_not_found": 2,
        "quota_exceeded": 3,
        "rate_limit_exceeded": 2,
    }
    assert result.served_total == 8


def test_a_keys_own_rules_refuse_as_the_router_does() -> None:
    """Expiry (at the trace's time), the key's routes and its models, as the live path."""
    data = config_data()
    acme_keys = data["organizations"]["acme"]["keys"]
    acme_keys.append({**acme_keys[0], "id": "expired1", "expires_at": T0 + 10})
    acme_keys.append({**acme_keys[0], "id": "embed1", "routes": ["/v1/embeddings"]})
    acme_keys.append({**acme_keys[0], "id": "aonly1", "models": ["a-only"]})
    records = [
        rec(5, key="expired1"),  # still valid
        rec(10, key="expired1"),  # expired from T0 + 10 on
        rec(11, key="embed1"),  # a chat request: not its route
        rec(12, "a-only", key="aonly1"),
        rec(13, key="aonly1"),  # chat is acme's, but not this key's
        rec(14, "embed", key="aonly1"),  # no such model comes first
    ]
    result = run(structure(data), records)
    assert dict(result.denials) == {
        "unauthenticated": 1,
        "route_not_allowed": 1,
        "model_not_allowed": 1,
        "model_not_found": 1,
    }
    assert result.served_total == 2


def test_spend_is_the_price_table_math() -> None:
    records = [
        *(rec(i, prompt=1000, completion=500) for i in range(10)),
        *(rec(20 + i, "a-only", prompt=300, completion=100) for i in range(4)),
        *(rec(40 + i, key="globex1", prompt=2000, completion=0) for i in range(3)),
    ]
    result = run(structure(config_data()), records)
    # chat: $0.15 and $0.60 per million tokens; a-only: $1 and $2.
    acme = 10 * (1000 * 0.15 + 500 * 0.60) + 4 * (300 * 1 + 100 * 2)
    globex = 3 * 2000 * 0.15
    assert result.summary()["spend_usd"] == {
        "acme": pytest.approx(acme / 1e6, abs=1e-12),
        "globex": pytest.approx(globex / 1e6, abs=1e-12),
    }


def test_a_budget_denies_and_clamps() -> None:
    # $1 + $2 per million tokens; a total budget of 1,000 nano-USD... in USD:
    data = with_org_limits(config_data(), "acme", {"budget": {"total": 0.0021}})
    # Each request: 100 prompt tokens (+8 reserved) and max_tokens 500, 450 generated.
    # Worst case 108 * 1000 + 500 * 2000 = 1,108,000 nano; actual 100,000 + 900,000.
    records = [rec(i, "a-only", prompt=100, completion=450, max_tokens=500) for i in range(4)]
    result = run(structure(data), records)
    # Two are served in full (2,000,000 nano). The third is clamped to what is left
    # (100,000 - 108,000 < 0: nothing), so it is refused, as is the fourth.
    assert result.served_total == 2
    assert result.denials["budget_exceeded"] == 2
    assert result.spend["acme"] == 2_000_000


def test_clamp_caps_the_completion() -> None:
    data = with_org_limits(config_data(), "acme", {"budget": {"total": 0.0015}})
    records = [
        rec(0, "a-only", prompt=100, completion=450, max_tokens=500),
        rec(1, "a-only", prompt=100, completion=450, max_tokens=500),
    ]
    result = run(structure(data), records)
    # Left after the first (1,000,000 nano): 500,000; the prompt reserves 108,000, so
    # max_tokens is clamped to 392,000 / 2,000 = 196 tokens, and 196 are generated.
    assert result.served_total == 2
    assert result.spend["acme"] == 1_000_000 + 100 * 1000 + 196 * 2000


def test_the_fast_ledger_and_the_routers_ledger_agree_on_the_example() -> None:
    """The whole example (limits, clamping, faults) with SimLedger and with MemoryLedger."""
    from pathlib import Path

    from router_cli.simulate import load_world, read_trace
    from router_cli.simulate.ledger import CoreLedger
    from router_server import config_file

    examples = Path(__file__).resolve().parents[3] / "examples"
    config = config_file.load(examples / "policy.yaml", check_env=False)
    world = load_world(examples / "faults.yaml", config)
    lines = (examples / "trace.jsonl").read_bytes().splitlines()
    fast = Simulation(config, world, seed=3).run(read_trace(lines))
    literal = Simulation(config, world, seed=3, ledger=CoreLedger()).run(read_trace(lines))
    assert fast.summary() == literal.summary()
    assert sum(fast.denials.values()) > 0
