"""Model servers in the simulator: the cost model's arithmetic, queueing, the
prefix cache, and the routing inputs the engine feeds the core."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_cli.simulate import FaultsInvalid, Simulation, TraceRecord, parse_world
from router_cli.simulate.prompts import prompt_of
from router_core.config import RouterConfig
from router_core.config_codec import structure

from tests.helpers.sim_support import T0, S, config_data, run

# One server: a slot, 1 ms a prompt token, 10 ms an output token, a cache.
SERVER = """
default:
  server: {slots: 1, prefill_ms_per_token: 1, decode_ms_per_token: 10, batch_slowdown: 0,
           cache_blocks: 1000, cache_block_chars: 256}
"""


def srec(
    t_s: float,
    prompt: int,
    completion: int,
    segments: tuple[tuple[str, int], ...] = (),
    *,
    line: int = 0,
    model: str = "a-only",
    session: str | None = None,
) -> TraceRecord:
    return TraceRecord(
        T0 * S + round(t_s * S), "acme1", None, model, prompt, completion, None, "chat",
        line, segments, session,
    )  # fmt: skip


def one_backend() -> RouterConfig:
    return structure(config_data())


def hit_tokens(record: TraceRecord, block_chars: int = 256) -> int:
    """What the cache spares of a prompt whose every whole block is cached,
    worked out from the text rather than by the server's code."""
    text = prompt_of(record)
    whole = len(text) // block_chars * block_chars
    return round(record.prompt_tokens * whole / len(text))


def test_prefill_then_decode_and_a_cache_hit_shortens_the_prefill() -> None:
    first = srec(0, 1000, 10, (("system", 1000),), line=1)
    again = srec(10, 1000, 10, (("system", 1000),), line=2)
    result = run(one_backend(), [first, again], SERVER)
    assert result.served_total == 2
    # Cold: 1,000 prompt tokens at 1 ms, then 10 output tokens at 10 ms.
    assert result.ttft_ms["a"][0] == 1000.0
    assert result.latencies_ms["a"][0] == 1100.0
    # Warm: only the tokens past the last whole cached block are prefilled.
    spared = hit_tokens(again)
    assert 900 < spared < 1000
    assert result.ttft_ms["a"][1] == 1000.0 - spared
    assert result.latencies_ms["a"][1] == 1000.0 - spared + 100.0
    assert result.cached_tokens["a"] == spared
    assert result.prompt_tokens["a"] == 2000
    assert result.cache_hit_rate() == round(spared / 2000, 4)


def test_a_generated_answer_is_cached_for_the_next_turn() -> None:
    first = TraceRecord(
        T0 * S, "acme1", None, "a-only", 1000, 100, None, "chat", 1, (("system", 1000),),
        None, "answer-1",
    )  # fmt: skip
    turn = (("system", 1000), ("answer-1", 100), ("user-2", 100))
    second = srec(30, 1200, 1, turn, line=2)
    result = run(one_backend(), [first, second], SERVER)
    # The second prompt starts with the first turn and its answer: every
    # whole block of those is cached, and spares its share of the prompt.
    answered = prompt_of(srec(0, 1100, 1, turn[:2]))
    second_text = prompt_of(second)
    assert second_text.startswith(answered)
    cached_chars = len(answered) // 256 * 256
    assert result.cached_tokens["a"] == round(1200 * cached_chars / len(second_text))
    assert result.cached_tokens["a"] > 1050
    # Without the answer's id, only the first turn's prompt is cached.
    forgotten = run(one_backend(), [first._replace(answer=None), second], SERVER)
    assert forgotten.cached_tokens["a"] < 1000


def test_a_different_prefix_misses_and_speed_scales_every_token() -> None:
    faults = SERVER.replace("cache_block_chars: 256}", "cache_block_chars: 256, speed: 0.5}")
    records = [srec(0, 400, 5, (("one", 400),), line=1), srec(10, 400, 5, (("two", 400),), line=2)]
    result = run(one_backend(), records, faults)
    # Half the speed: every token takes twice as long; nothing shared, nothing spared.
    assert result.ttft_ms["a"] == [800.0, 800.0]
    assert result.latencies_ms["a"] == [900.0, 900.0]
    assert result.cache_hit_rate() == 0.0


def test_the_least_recently_used_blocks_are_evicted() -> None:
    # Room for 20 blocks: a 4,000-character prompt takes 15 or so.
    faults = SERVER.replace("cache_blocks: 1000", "cache_blocks: 20")
    records = [
        srec(0, 1000, 1, (("old", 1000),), line=1),
        srec(10, 1000, 1, (("new", 1000),), line=2),
        srec(20, 1000, 1, (("old", 1000),), line=3),
    ]
    result = run(one_backend(), records, faults)
    assert result.ttft_ms["a"] == [1000.0, 1000.0, 1000.0]
    assert result.cached_tokens["a"] == 0


def test_a_full_server_queues_and_ttft_includes_the_wait() -> None:
    records = [srec(0, 100, 10, line=1), srec(0, 200, 10, line=2), srec(0, 50, 10, line=3)]
    result = run(one_backend(), records, SERVER)
    # One slot: each waits for the ones before (200 ms, then 300 ms more).
    assert result.ttft_ms["a"] == [100.0, 400.0, 550.0]
    explained: list[dict[str, Any]] = []
    config = one_backend()
    Simulation(config, parse_world(SERVER, config), explain=explained.append).run(records)
    assert [x["queued_ms"] for x in explained] == [0.0, 200.0, 500.0]
    assert [x["cached_tokens"] for x in explained] == [0, 0, 0]
    assert result.latencies_ms["a"] == [200.0, 500.0, 650.0]
    # Busy all the time from the first arrival to the last answer.
    assert result.utilisation("a") == 1.0


def test_a_fuller_batch_decodes_slower() -> None:
    faults = SERVER.replace("slots: 1", "slots: 2").replace(
        "batch_slowdown: 0", "batch_slowdown: 0.5"
    )
    records = [srec(0, 100, 10, line=1), srec(0, 100, 10, line=2)]
    result = run(one_backend(), records, faults)
    # The second starts with one other in the batch: 10 tokens at 15 ms.
    assert result.latencies_ms["a"] == [200.0, 250.0]
    assert result.utilisation("a") == round((200 + 250) / (2 * 250), 4)


def test_a_wait_past_the_read_timeout_times_out_and_frees_the_slot() -> None:
    data = config_data()
    data["backends"]["a"]["read_timeout_s"] = 1
    config = structure(data)
    # The first holds the slot for 990 ms; the second starts then and would
    # answer at 1,010 ms, past the router's 1 s: the router gives up at 1 s
    # and the server drops it, so the third starts at 1 s.
    records = [srec(0, 0, 99, line=1), srec(0, 10, 1, line=2), srec(0.5, 10, 1, line=3)]
    result = run(config, records, SERVER)
    assert result.denials["backend_timeout"] == 1
    assert result.failed_attempts["a"] == 1
    assert result.latencies_ms["a"] == [990.0, 520.0]
    assert result.ttft_ms["a"] == [0.0, 510.0]


def test_faults_still_apply_to_a_server() -> None:
    faults = SERVER + "faults:\n  - {backend: a, kind: latency, start_s: 0, added_ms: 500}\n"
    result = run(one_backend(), [srec(0, 100, 10)], faults)
    assert result.ttft_ms["a"] == [600.0]
    assert result.latencies_ms["a"] == [700.0]
    down = SERVER + "faults:\n  - {backend: a, kind: error, start_s: 0}\n"
    result = run(one_backend(), [srec(0, 100, 10)], down)
    assert result.served_total == 0
    assert result.denials["backend_error"] == 1


def test_a_down_server_fails_over_and_a_trial_probe_readmits_it() -> None:
    faults = SERVER.replace("slots: 1", "slots: 8") + (
        "faults:\n  - {backend: a, kind: down, start_s: 10, end_s: 20}\n"
    )
    records = [srec(i * 0.5, 10, 5, line=i, model="chat") for i in range(1, 121)]
    decisions: list[dict[str, Any]] = []
    config = one_backend()
    result = Simulation(config, parse_world(faults, config), 0, explain=decisions.append).run(
        records
    )
    assert result.served_total == 120  # b takes what a refuses
    assert all(d["backend"] == "b" for d in decisions if T0 + 11 <= d["ts"] < T0 + 20)
    # Once up again, a trial probe (one token, not queued) closes its circuit.
    assert any(d["backend"] == "a" for d in decisions if d["ts"] >= T0 + 30)


def two_servers(strategy: str, affinity: dict[str, Any] | None = None) -> RouterConfig:
    data = copy.deepcopy(config_data())
    model: dict[str, Any] = {
        "backends": [{"backend": "a"}, {"backend": "b"}],
        "strategy": strategy,
    }
    if affinity is not None:
        model["affinity"] = affinity
    data["models"]["pair"] = model
    data["prices"]["pair"] = {"input": 1, "output": 1}
    return structure(data)


def test_least_load_sees_the_in_flight_counts() -> None:
    faults = SERVER.replace("slots: 1", "slots: 100")
    # Long requests, all at once: least_load splits them evenly; weighted by chance.
    records = [srec(i * 0.001, 10, 100, line=i, model="pair") for i in range(40)]
    decisions: list[dict[str, Any]] = []
    config = two_servers("least_load")
    Simulation(config, parse_world(faults, config), 3, explain=decisions.append).run(records)
    assert len(decisions) == 40
    served = [d["backend"] for d in decisions]
    assert abs(served.count("a") - served.count("b")) <= 1  # weighted, seed 3: 18 and 22
    loads = [c["load"] for d in decisions for c in d["route"]["candidates"]]
    assert max(loads) > 0  # the views carried the counts


def test_affinity_follows_the_index_and_keeps_a_prefix_on_one_server() -> None:
    faults = SERVER.replace("slots: 1", "slots: 100")
    records = [
        srec(i * 5.0, 1000, 5, (("system", 900),), line=i, model="pair") for i in range(1, 11)
    ]
    decisions: list[dict[str, Any]] = []
    config = two_servers("least_load", {"block_chars": 256})
    result = Simulation(config, parse_world(faults, config), 0, explain=decisions.append).run(
        records
    )
    homes = {d["backend"] for d in decisions}
    assert len(homes) == 1
    first, *rest = decisions
    assert first["route"]["affinity"]["depth"] == 0  # never seen: its rendezvous home
    assert all(d["route"]["affinity"]["depth"] > 0 for d in rest)  # then the index knows it
    # Each after the first finds the system prompt's whole blocks.
    rate = result.cache_hit_rate()
    assert rate is not None
    assert rate > 0.75


def test_a_session_pins_its_turns() -> None:
    faults = SERVER.replace("slots: 1", "slots: 100")
    records = [srec(i * 5.0, 100, 5, line=i, model="pair", session="chat-7") for i in range(1, 11)]
    decisions: list[dict[str, Any]] = []
    config = two_servers("least_load", {})
    Simulation(config, parse_world(faults, config), 0, explain=decisions.append).run(records)
    assert len({d["backend"] for d in decisions}) == 1


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("{slots: 0}", "default.server.slots: must be an integer from 1 to 100,000, not 0"),
        ("{slots: 2.5}", "default.server.slots: must be an integer from 1 to 100,000, not 2.5"),
        ("{speed: 0}", "default.server.speed: must be a number from 0.001 to 1,000, not 0"),
        ("{batch_slowdown: -1}", "default.server.batch_slowdown: must be a number from 0 to 10"),
        ("{cache_block_chars: 8}", "default.server.cache_block_chars: must be an integer from 16"),
        ("{prefill_ms_per_token: true}", "default.server.prefill_ms_per_token: must be a number"),
        ("{slot: 4}", "default.server.slot: unknown field; allowed: slots, prefill_ms_per_token"),
        ("[1]", "default.server: must be a mapping like {slots: 16, speed: 1}"),
    ],
)
def test_out_of_range_server_parameters_are_named(server: str, message: str) -> None:
    with pytest.raises(FaultsInvalid) as raised:
        parse_world(f"default:\n  server: {server}\n", one_backend(), "f.yaml")
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("f.yaml:")
    assert message in raised.value.problems[0]


def test_a_server_takes_no_fixed_latency_and_backends_inherit_the_default() -> None:
    with pytest.raises(FaultsInvalid, match=r"backends.a.latency_ms: is for backends without"):
        parse_world("backends:\n  a: {latency_ms: 5, server: {}}\n", one_backend())
    world = parse_world(
        "default: {server: {slots: 4, speed: 2}}\nbackends: {b: {server: {speed: 0.5}}}\n",
        one_backend(),
    )
    a, b = world.model_of("a").server, world.model_of("b").server
    assert a is not None
    assert b is not None
    assert (a.slots, a.speed, b.slots, b.speed) == (4, 2.0, 4, 0.5)


arrivals = st.lists(
    st.tuples(
        st.floats(0, 20),  # arrival, s
        st.integers(0, 3000),  # prompt tokens
        st.integers(0, 300),  # output tokens
        st.sampled_from(["sys-a", "sys-b", None]),  # a shared prefix, or none
        st.sampled_from(["pair", "a-only"]),
    ),
    min_size=1,
    max_size=60,
)


@given(
    arrivals,
    st.integers(1, 4),
    st.sampled_from(["weighted", "least_latency", "least_load"]),
    st.booleans(),
)
def test_the_server_model_keeps_its_books(
    trace: list[tuple[float, int, int, str | None, str]],
    slots: int,
    strategy: str,
    with_affinity: bool,
) -> None:
    records = []
    for n, (t_s, prompt, completion, prefix, model) in enumerate(
        sorted(trace, key=lambda r: r[0]), 1
    ):
        segments = ((prefix, prompt),) if prefix is not None and prompt else ()
        records.append(srec(t_s, prompt, completion, segments, line=n, model=model))
    faults = SERVER.replace("slots: 1", f"slots: {slots}").replace(
        "cache_blocks: 1000", "cache_blocks: 40"
    )
    config = two_servers(strategy, {"block_chars": 256} if with_affinity else None)
    explained: list[dict[str, Any]] = []
    simulation = Simulation(config, parse_world(faults, config), 1, explain=explained.append)
    result = simulation.run(records)
    # Every request ends once, served or denied with a reason.
    assert len(explained) == len(records)
    assert result.served_total + sum(result.denials.values()) == len(records)
    for line in explained:
        if line["outcome"] == "served":
            # Its first token comes after its wait and before its last.
            assert 0 <= line["queued_ms"] <= line["ttft_ms"] <= line["latency_ms"]
    for backend in ("a", "b"):
        utilisation = result.utilisation(backend)
        assert utilisation is not None
        assert 0 <= utilisation <= 1
        assert 0 <= result.cached_tokens[backend] <= result.prompt_tokens[backend]
    # Nothing is left running, queued or counted in flight.
    backends = simulation.backends
    assert all(s.running == 0 and s.next_job() is None for s in backends.servers.values())
    assert set(backends.in_flight.values()) == {0}
    assert set(backends.outstanding.values()) == {0}
