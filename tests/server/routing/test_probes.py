"""Trial and early probes, on a clock the test moves: what they send, and what
their answers do to the circuit. The backend is an `httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest

from router_core.attempts import FailureKind
from router_core.config import RouterConfig
from router_core.config_codec import structure
from router_server.backends import BackendClient, open_client
from router_server.health import Health
from router_server.probes import probe_forever, probe_one, run_trial, start_trials, trial_model

from tests.helpers.support import base_config

Answer = Callable[[httpx.Request], httpx.Response]


class Clock:
    """A monotonic clock in seconds that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(**health: Any) -> RouterConfig:
    data = base_config("http://mock-a.invalid/v1", "http://mock-b.invalid/v1")
    data["health"] = {"failure_threshold": 1, "open_s": 5, "probe_timeout_s": 1, **health}
    return structure(data)


def client(
    cfg: RouterConfig, name: str, answer: Answer, seen: list[httpx.Request]
) -> BackendClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return open_client(name, cfg.backends[name], "httpx", {}, httpx.MockTransport(handler))


def completion(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": "p"}}]})


def hung(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def opened_health(cfg: RouterConfig, clock: Clock, backend: str = "mock-a") -> Health:
    health = Health(lambda: cfg, clock=clock)
    health.failed(backend, "timed out waiting for the backend", kind=FailureKind.TIMEOUT)
    assert health.describe()[backend]["circuit"] == "open"
    return health


def trials_now(health: Health, clients: dict[str, BackendClient]) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            start_trials(health, clients, tg)

    anyio.run(main)


def test_a_trial_probe_is_a_one_token_chat_completion_marked_as_a_probe() -> None:
    cfg, clock = config(), Clock()
    seen: list[httpx.Request] = []
    health = opened_health(cfg, clock)
    backend = client(cfg, "mock-a", completion, seen)
    clock.advance(4.9)
    trials_now(health, {"mock-a": backend})
    assert seen == []  # not due before open_s
    clock.advance(0.1)
    trials_now(health, {"mock-a": backend})
    [request] = seen
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["x-router-probe"] == "trial"
    body = orjson.loads(request.content)
    assert body["model"] == "mock-gpt"  # the model `chat` asks of mock-a
    assert (body["max_tokens"], body["stream"]) == (1, False)
    described = health.describe()["mock-a"]
    assert described["circuit"] == "closed"
    assert (described["trial_probes"], described["last_trial_ok"]) == (1, True)
    assert described["weight_ramp"] < 1.0  # re-admitted gradually


def test_a_trial_that_times_out_opens_the_circuit_again_for_open_s() -> None:
    cfg, clock = config(), Clock()
    seen: list[httpx.Request] = []
    health = opened_health(cfg, clock)
    backend = client(cfg, "mock-a", hung, seen)
    clock.advance(5)
    trials_now(health, {"mock-a": backend})
    described = health.describe()["mock-a"]
    assert described["circuit"] == "open"
    assert described["last_failure"] == "trial probe: timed out waiting for the backend"
    assert health.next_trial_at(["mock-a"]) == clock() + 5
    # Clients are refused all along: open, then half-open, until a trial succeeds.
    assert not health.available("mock-a")
    clock.advance(5)
    assert health.describe()["mock-a"]["circuit"] == "half_open"
    assert not health.available("mock-a")


def test_a_5xx_fails_a_trial_and_a_4xx_passes_it() -> None:
    cfg, clock = config(), Clock()
    seen: list[httpx.Request] = []
    health = opened_health(cfg, clock)
    clock.advance(5)
    erring = client(cfg, "mock-a", lambda _: httpx.Response(503), seen)
    trials_now(health, {"mock-a": erring})
    assert health.describe()["mock-a"]["last_failure"] == "trial probe: HTTP 503"
    clock.advance(5)
    # A refusal of the request (the model takes no chat, a bad parameter) is a
    # prompt answer: the backend serves.
    refusing = client(cfg, "mock-a", lambda _: httpx.Response(400), seen)
    trials_now(health, {"mock-a": refusing})
    assert health.describe()["mock-a"]["circuit"] == "closed"


def test_a_cancelled_trial_leaves_the_circuit_half_open_and_due() -> None:
    cfg, clock = config(), Clock()
    health = opened_health(cfg, clock)
    clock.advance(5)
    trial = health.begin_trial("mock-a")
    assert trial is not None

    async def cancelled() -> None:
        entered = anyio.Event()

        async def never(_: httpx.Request) -> httpx.Response:
            entered.set()
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        transport = httpx.MockTransport(never)
        backend = open_client("mock-a", cfg.backends["mock-a"], "httpx", {}, transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_trial, health, backend, trial)
            await entered.wait()
            tg.cancel_scope.cancel()

    anyio.run(cancelled)
    assert health.describe()["mock-a"]["circuit"] == "half_open"
    assert health.next_trial_at(["mock-a"]) == clock()


def models_on_b_only() -> dict[str, Any]:
    data = base_config("http://a.invalid/v1", "http://b.invalid/v1")
    data["models"]["chat"]["backends"] = [{"backend": "mock-b"}]
    data["models"]["embed"]["backends"] = [{"backend": "mock-b", "model": "mock-embed"}]
    return data


def test_the_trial_model_is_the_backends_name_for_the_first_model_it_serves() -> None:
    cfg = config()
    assert trial_model(cfg, "mock-a") == "mock-gpt"
    assert trial_model(cfg, "mock-b") == "mock-gpt"
    only_b = structure(models_on_b_only())
    assert trial_model(only_b, "mock-b") == "chat"  # no mapping: the public name
    assert trial_model(only_b, "mock-a") is None


def test_a_backend_no_model_uses_is_tried_by_whether_it_answers_at_all() -> None:
    data = models_on_b_only()
    data["health"] = {"open_s": 5}
    cfg, clock = structure(data), Clock()
    seen: list[httpx.Request] = []
    health = Health(lambda: cfg, clock=clock)
    health.probed("mock-a", ok=False)
    clock.advance(5)
    listing = client(cfg, "mock-a", lambda _: httpx.Response(200, json={"data": []}), seen)
    trials_now(health, {"mock-a": listing})
    assert [r.url.path for r in seen] == ["/v1/models"]
    assert health.describe()["mock-a"]["circuit"] == "closed"


def test_an_unreachable_backend_asks_for_an_early_probe_once_per_interval() -> None:
    cfg, clock = config(failure_threshold=100, probe_interval_s=2), Clock()
    health = Health(lambda: cfg, clock=clock)
    health.failed("mock-a", "connection refused or unreachable", kind=FailureKind.CONNECT)
    health.failed("mock-b", "timed out waiting for the backend", kind=FailureKind.TIMEOUT)
    health.failed("mock-b", "HTTP 500")
    # A timeout or a 5xx is the rate's business: a listing would prove nothing.
    assert health.take_early_probes(["mock-a", "mock-b"]) == ["mock-a"]
    assert health.take_early_probes(["mock-a", "mock-b"]) == []
    clock.advance(1)
    health.failed("mock-a", "transport error (RemoteProtocolError)", kind=FailureKind.PROTOCOL)
    assert health.take_early_probes(["mock-a"]) == []  # one per probe interval
    clock.advance(1)
    health.failed("mock-a", "connection refused or unreachable", kind=FailureKind.CONNECT)
    assert health.take_early_probes(["mock-a"]) == ["mock-a"]


def test_status_shows_the_window_the_breaker_judges_by() -> None:
    cfg, clock = config(failure_threshold=100), Clock()
    health = Health(lambda: cfg, clock=clock)
    for _ in range(3):
        health.succeeded("mock-a", 10.0)
    health.failed("mock-a", "HTTP 500")
    assert health.describe()["mock-a"]["window"] == {
        "requests": 4,
        "failures": 1,
        "failure_rate": 0.25,
    }
    clock.advance(10)  # the window's length (health.window_s)
    assert health.describe()["mock-a"]["window"] == {
        "requests": 0,
        "failures": 0,
        "failure_rate": None,
    }


def test_the_loop_sends_a_trial_once_open_s_has_passed_not_at_the_next_round() -> None:
    """Probe rounds an hour apart: the circuit that opens wakes the loop, which
    sleeps until its trial is due (the real clock, open_s 50 ms)."""
    cfg = config(open_s=0.05, probe_interval_s=3600)
    seen: list[httpx.Request] = []
    health = Health(lambda: cfg)
    backend = client(cfg, "mock-a", completion, seen)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe_forever, health, lambda: {"mock-a": backend})
            await anyio.sleep(0)
            health.failed("mock-a", "timed out waiting for the backend", kind=FailureKind.TIMEOUT)
            # A bound for a loaded machine, not a measurement.
            with anyio.fail_after(30):
                while health.describe()["mock-a"]["circuit"] != "closed":
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert [r.headers["x-router-probe"] for r in seen] == ["trial"]


def test_a_client_a_reload_closed_is_not_probed_and_decides_nothing() -> None:
    """A reload closes the client it retired once idle: a probe or trial that
    meets it closed gives no verdict (the backend's new client will be tried)."""
    cfg, clock = config(), Clock()
    seen: list[httpx.Request] = []
    health = opened_health(cfg, clock)
    clock.advance(5)
    backend = client(cfg, "mock-a", completion, seen)
    anyio.run(backend.client.aclose)
    trials_now(health, {"mock-a": backend})
    anyio.run(probe_one, health, backend, 1.0)
    assert seen == []
    assert health.describe()["mock-a"]["circuit"] == "half_open"
    assert health.describe()["mock-a"]["last_probe_ok"] is None
    assert health.next_trial_at(["mock-a"]) == clock()


def test_a_probe_holds_its_client_open_while_it_runs() -> None:
    cfg, clock = config(), Clock()
    health = Health(lambda: cfg, clock=clock)
    held: list[int] = []

    def answer(_: httpx.Request) -> httpx.Response:
        held.append(backend.active)
        return httpx.Response(200, json={"data": []})

    backend = client(cfg, "mock-a", answer, [])
    anyio.run(probe_one, health, backend, 1.0)
    assert held == [1]
    assert backend.active == 0


def kinds_config() -> RouterConfig:
    data = base_config("http://mock-a.invalid/v1", "http://mock-b.invalid/v1")
    data["health"] = {"failure_threshold": 1, "open_s": 5, "probe_timeout_s": 1}
    data["backends"]["mock-a"] = {"base_url": "https://api.anthropic.invalid/v1",
                                  "kind": "anthropic", "api_key_env": "CLAUDE_KEY"}  # fmt: skip
    data["backends"]["mock-b"] = {
        "base_url": "https://res.openai.azure.invalid", "kind": "azure_openai",
        "api_key_env": "AZURE_KEY",
        "azure": {"api_version": "2024-10-21", "deployments": {"mock-gpt": "gpt4o-prod"}},
    }  # fmt: skip
    data["backends"]["mock-g"] = {"base_url": "https://gemini.invalid/v1beta", "kind": "gemini",
                                  "api_key_env": "GEMINI_KEY"}  # fmt: skip
    data["models"]["embed"] = {"backends": [{"backend": "mock-b", "model": "mock-embed"}]}
    data["models"]["flash"] = {"backends": [{"backend": "mock-g", "model": "gemini-flash"}]}
    data["backends"]["mock-w"] = {"base_url": "https://bedrock.invalid", "kind": "bedrock",
                                  "bedrock": {"region": "eu-west-1"}}  # fmt: skip
    data["models"]["sonnet"] = {"backends": [{"backend": "mock-w", "model": "claude:0"}]}
    return structure(data)


def test_each_kind_is_probed_and_tried_in_its_own_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cret",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    cfg, clock = kinds_config(), Clock()
    env = {"CLAUDE_KEY": "claude-secret", "AZURE_KEY": "azure-secret", "GEMINI_KEY": "g-secret"}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    clients = {
        name: open_client(name, cfg.backends[name], "httpx", env, httpx.MockTransport(handler))
        for name in ("mock-a", "mock-b", "mock-g", "mock-w")
    }
    health = Health(lambda: cfg, clock=clock)
    for name in clients:
        health.failed(name, "timed out waiting for the backend", kind=FailureKind.TIMEOUT)
    clock.advance(5)
    trials_now(health, clients)
    by_host = {r.url.host: r for r in seen}
    claude = by_host["api.anthropic.invalid"]
    assert claude.url.path == "/v1/messages"
    assert (claude.headers["x-api-key"], claude.headers["anthropic-version"]) == (
        "claude-secret", "2023-06-01"
    )  # fmt: skip
    assert "authorization" not in claude.headers
    body = orjson.loads(claude.content)
    assert (body["max_tokens"], body["messages"][0]["role"]) == (1, "user")
    azure = by_host["res.openai.azure.invalid"]
    assert azure.url.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert azure.url.params["api-version"] == "2024-10-21"
    assert azure.headers["api-key"] == "azure-secret"
    gemini = by_host["gemini.invalid"]
    assert gemini.url.path == "/v1beta/models/gemini-flash:generateContent"
    assert gemini.headers["x-goog-api-key"] == "g-secret"
    assert orjson.loads(gemini.content)["generationConfig"] == {"maxOutputTokens": 1}
    bedrock = by_host["bedrock.invalid"]
    assert bedrock.url.path == "/model/claude:0/converse"
    assert bedrock.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/bedrock/aws4_request" in bedrock.headers["authorization"]
    assert orjson.loads(bedrock.content)["inferenceConfig"] == {"maxTokens": 1}
    assert "s3cret" not in str(bedrock.headers)
    # The active probe lists models, in each kind's place.
    seen.clear()

    async def probe_both() -> list[bool]:
        return [await c.probe(1.0) for c in clients.values()]

    assert anyio.run(probe_both) == [True, True, True, True]
    assert sorted(r.url.path for r in seen) == [
        "/",
        "/openai/models",
        "/v1/models",
        "/v1beta/models",
    ]
    signed = next(r for r in seen if r.url.host == "bedrock.invalid")
    assert signed.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert all(r.headers.get("x-router-probe") == "active" for r in seen)
