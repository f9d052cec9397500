"""`router simulate` and the live router, on one config and one small trace, agree.

The trace is replayed twice: through `router simulate --format json`, and against a
real router process in front of the two mock backends, with the real secret
of each key id, counting `x-router-backend` on answers and the error code of
refusals. The comparison is exact because every outcome in it is decided by
rules, not by chance or by the clock:
- routing by tier and by route rule (no weighted draw): `chat` goes to mock-a,
  falling back to mock-b; globex's `chat` is routed to mock-b;
- a backend fault that lasts to the end of the trace (mock-a is stopped at the
  trace's 30th second and not restarted; in the second replay it answers 503
  from its 20th), so however fast a breaker opens or a probe notices, every
  later `chat` request is served by mock-b;
- limits that do not depend on the elapsed time while the test runs: a request
  quota per day, a request rate of 1 per hour with a burst of 3, and a total
  budget on a model whose input is free (so the prompt's bound, which the
  router takes from the bytes sent, does not matter; only max_tokens does,
  and the mock generates exactly max_tokens tokens).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

from router_core import keys
from router_server.mock_backend import MockBackendProcess

from tests.helpers.support import ACME_KEY, GLOBEX_KEY, REVOKED_KEY, base_config, write_config

T0 = 1_772_442_000
FAULT_AT_S = 30
INITECH_KEY = keys.format_key("initech1", "I" * 32)
UNKNOWN_KEY = keys.format_key("nobody1", "N" * 32)
# Keys of acme that their own rules refuse: expired before the trace begins
# (by the trace's clock and the wall clock alike), for one route, for one model.
EXPIRED_KEY = keys.format_key("expired1", "E" * 32)
EMBED_KEY = keys.format_key("embedonly1", "M" * 32)
BONLY_KEY = keys.format_key("bonly1", "B" * 32)
SECRETS = {"acme1": ACME_KEY, "globex1": GLOBEX_KEY, "revoked1": REVOKED_KEY,
           "initech1": INITECH_KEY, "nobody1": UNKNOWN_KEY, "expired1": EXPIRED_KEY,
           "embedonly1": EMBED_KEY, "bonly1": BONLY_KEY}  # fmt: skip
# The live router's codes, in the simulator's words.
LIVE_CODES = {"invalid_api_key": "unauthenticated"}


def policy(mock_a_url: str, mock_b_url: str) -> dict[str, Any]:
    data = base_config(mock_a_url, mock_b_url)
    data["models"] = {
        "chat": {
            "backends": [
                {"backend": "mock-a", "model": "mock-gpt", "tier": 0},
                {"backend": "mock-b", "model": "mock-gpt", "tier": 1},
            ],
            "routes": [
                {
                    "organizations": ["globex"],
                    "backends": [{"backend": "mock-b", "model": "mock-gpt"}],
                }
            ],
        },
        "b-only": {"backends": [{"backend": "mock-b", "model": "mock-gpt-b"}]},
    }
    # USD per million tokens: input free, output $1,000 (a tenth of a cent a token).
    data["prices"] = {"chat": {"input": 0, "output": 0}, "b-only": {"input": 0, "output": 1000}}
    orgs = data["organizations"]
    orgs["acme"]["model_limits"] = {"b-only": {"budget": {"total": 0.05}}}
    orgs["globex"]["limits"] = {"quotas": {"requests_per_day": 6}}
    orgs["initech"] = {
        "models": ["chat"],
        "limits": {"requests": {"rate": 1, "per": "hour", "burst": 3}},
        "keys": [{"id": "initech1", "hash": keys.hash_key(INITECH_KEY)}],
    }
    return data


def trace() -> list[dict[str, Any]]:
    """Sixty requests, one a second, interleaving every caller and outcome."""
    callers = [
        ("acme1", "chat", 4),
        ("globex1", "chat", 6),
        ("acme1", "b-only", 10),  # 10 tokens: $0.01, so the $0.05 budget serves 5
        ("initech1", "chat", 5),
        ("acme1", "chat", 7),
        ("globex1", "chat", 3),
        ("nobody1", "chat", 2),
        ("revoked1", "chat", 2),
        ("globex1", "b-only", 2),  # not globex's model
        ("acme1", "gpt-9", 2),  # no such model
    ]
    return sixty(callers)


def sixty(callers: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """Sixty trace lines, one a second, going round `callers` (key, model, max_tokens)."""
    lines = []
    for i in range(60):
        key, model, tokens = callers[i % len(callers)]
        lines.append({
            "ts": T0 + i, "key": key, "model": model,
            # The mock counts a chat prompt as its words + 3, and generates max_tokens.
            "prompt_tokens": 5 + 3, "completion_tokens": tokens, "max_tokens": tokens,
        })  # fmt: skip
    return lines


def replay_live(
    url: str,
    lines: list[dict[str, Any]],
    mock_a: MockBackendProcess,
    fault_at_s: int = FAULT_AT_S,
    fault: str = "down",
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Answers by backend, refusals by code, and completion tokens by model; from
    `fault_at_s`, mock-a is stopped (`down`) or answers 503 (`error`)."""
    served: Counter[str] = Counter()
    denied: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    injected = False
    with httpx.Client(base_url=url, timeout=15) as client:
        for line in lines:
            if line["ts"] - T0 >= fault_at_s and not injected:
                injected = True
                if fault == "down":
                    mock_a.stop()
                else:
                    mock_a.configure(error_rate=1.0, error_status=503)
            body = {
                "model": line["model"],
                "messages": [{"role": "user", "content": "one two three four five"}],
                "max_tokens": line["max_tokens"],
            }
            response = client.post(
                "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {SECRETS[line['key']]}"},
            )
            if response.status_code == 200:
                served[response.headers["x-router-backend"]] += 1
                tokens[line["model"]] += response.json()["usage"]["completion_tokens"]
            else:
                code = response.json()["error"]["code"]
                denied[LIVE_CODES.get(code, code)] += 1
    return served, denied, tokens


def simulate(
    tmp_path: Path, config: Path, lines: list[dict[str, Any]], fault_at_s: int, fault: str = "down"
) -> Any:
    trace_file = tmp_path / "trace.jsonl"
    trace_file.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    faults = tmp_path / "faults.yaml"
    faults.write_text(f"faults: [{{backend: mock-a, kind: {fault}, start_s: {fault_at_s}}}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "router_cli.main", "simulate", "--config", str(config),
         "--trace", str(trace_file), "--faults", str(faults), "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_simulate_agrees_with_the_live_router(
    tmp_path: Path, mocks: tuple[MockBackendProcess, MockBackendProcess], start_router: Any
) -> None:
    mock_a, mock_b = mocks
    data = policy(mock_a.url, mock_b.url)
    config = write_config(tmp_path / "policy.yaml", data)
    lines = trace()
    simulated = simulate(tmp_path, config, lines, FAULT_AT_S)

    router = start_router(data)
    served, denied, _ = replay_live(router.url, lines, mock_a)

    sim_served = {name: row["served"] for name, row in simulated["backends"].items()}
    sim_denied = {reason: n for reason, n in simulated["denials"].items() if n}
    assert sim_served == {"mock-a": served["mock-a"], "mock-b": served["mock-b"]}
    assert sim_denied == dict(denied)
    # And both are what the rules say (so the agreement is not two equal mistakes).
    assert sim_denied == {
        "unauthenticated": 12,
        "model_not_found": 12,
        "quota_exceeded": 6,  # globex: 12 chat requests, 6 a day
        "rate_limit_exceeded": 3,  # initech: 6 requests, a burst of 3
        "budget_exceeded": 1,  # acme b-only: 6 requests, 5 affordable
    }
    assert sum(sim_served.values()) == 60 - sum(sim_denied.values())
    assert sim_served["mock-a"] > 0
    assert sim_served["mock-b"] > sim_served["mock-a"]


# The second replay: mock-a answers 503 from its 20th second on. Errors, not a
# refused connection: a refusal asks for a probe at once, which would open the
# circuit on the first failure and leave the retry budget nothing to refuse.
RULES_FAULT_AT_S = 20


def rules_policy(mock_a_url: str, mock_b_url: str) -> dict[str, Any]:
    """The first policy, with every outcome of the second trace decided by count, not time:
    no active probe and no cool-down ends within the trace (an hour each), a breaker
    that opens after 3 failed attempts, and a retry budget earned by requests alone
    (an eighth of a retry each, an exact binary fraction; none by the second), so
    once mock-a is down the budget grants some failovers and refuses one."""
    data = policy(mock_a_url, mock_b_url)
    data["health"] = {"probe_interval_s": 3600, "open_s": 3600, "failure_threshold": 3}
    data["routing"] = {"max_attempts": 2, "retry_budget_ratio": 0.125, "retry_min_per_s": 0}
    data["limits"] = {"max_tokens_policy": "clamp"}
    acme = data["organizations"]["acme"]
    # $0.025 on b-only, shared by acme1 (10 tokens a request) and bonly1 (1 token).
    acme["model_limits"] = {"b-only": {"budget": {"total": 0.025}}}
    acme["keys"] += [
        {"id": "expired1", "hash": keys.hash_key(EXPIRED_KEY), "expires_at": T0 - 3600},
        {"id": "embedonly1", "hash": keys.hash_key(EMBED_KEY), "routes": ["/v1/embeddings"]},
        {"id": "bonly1", "hash": keys.hash_key(BONLY_KEY), "models": ["b-only"]},
    ]
    return data


def rules_trace() -> list[dict[str, Any]]:
    """Sixty requests, one a second: chat that fails over once mock-a is down, b-only
    under the clamp, and keys their own rules refuse."""
    callers = [
        ("acme1", "chat", 4),
        ("acme1", "b-only", 10),
        ("expired1", "chat", 2),
        ("acme1", "chat", 4),
        ("bonly1", "chat", 2),  # its scope is b-only
        ("embedonly1", "chat", 2),  # its route is /v1/embeddings
        ("acme1", "chat", 4),
        ("globex1", "chat", 3),
        ("acme1", "chat", 4),
        ("bonly1", "b-only", 1),
    ]
    return sixty(callers)


def test_simulate_agrees_on_failover_clamp_and_key_rules(
    tmp_path: Path, mocks: tuple[MockBackendProcess, MockBackendProcess], start_router: Any
) -> None:
    mock_a, mock_b = mocks
    data = rules_policy(mock_a.url, mock_b.url)
    config = write_config(tmp_path / "policy.yaml", data)
    lines = rules_trace()
    simulated = simulate(tmp_path, config, lines, RULES_FAULT_AT_S, "error")

    router = start_router(data)
    served, denied, tokens = replay_live(router.url, lines, mock_a, RULES_FAULT_AT_S, "error")
    status = httpx.get(f"{router.url}/v1/status", timeout=15).json()

    backends = simulated["backends"]
    assert {name: row["served"] for name, row in backends.items()} == {
        "mock-a": served["mock-a"], "mock-b": served["mock-b"]
    }  # fmt: skip
    sim_denied = {reason: n for reason, n in simulated["denials"].items() if n}
    assert sim_denied == dict(denied)
    # The same attempts, failures and failovers, so the same breaker and budget.
    live = status["backends"]
    assert {name: (row["attempts"], row["failed_attempts"]) for name, row in backends.items()} == {
        name: (live[name]["requests"], live[name]["failures"]) for name in ("mock-a", "mock-b")
    }
    assert simulated["failovers"] == status["retries"]["retries"]
    # The same clamp: acme's spend is b-only's tokens at $0.001 each (chat is free).
    assert simulated["spend_usd"]["acme"] == round(tokens["b-only"] * 0.001, 9)
    # And what the rules say.
    assert sim_denied == {
        "unauthenticated": 6,  # expired1
        "route_not_allowed": 6,  # embedonly1
        "model_not_allowed": 6,  # bonly1 asking for chat
        # 10 + 1 + 10 + 1 tokens, then 3 (clamped from 10); the 7 others find $0 left.
        "budget_exceeded": 7,
        # mock-a answers 503 from 20 s: failed over at 20 s, refused by the budget
        # at 23 s, failed over at 26 s, when its circuit opens (3 in a row, at
        # low volume).
        "backend_error": 1,
    }
    assert tokens["b-only"] == 25
    assert simulated["failovers"] == 2
    assert (backends["mock-a"]["served"], backends["mock-a"]["failed_attempts"]) == (8, 3)
