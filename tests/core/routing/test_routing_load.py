"""`least_load` and prefix affinity: load scores, full backends last, bounded load."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from router_core import affinity
from router_core.affinity import AffinityRequest, PrefixIndex
from router_core.config import Model, ModelTarget
from router_core.config_enums import Strategy
from router_core.requests import Operation
from router_core.routing import BackendView, decide, load_score

NAMES = ["b0", "b1", "b2", "b3"]


def model(strategy: Strategy = Strategy.LEAST_LOAD, **kwargs: object) -> Model:
    return Model(tuple(ModelTarget(n) for n in NAMES), strategy, **kwargs)  # type: ignore[arg-type]


views_st = st.dictionaries(
    st.sampled_from(NAMES),
    st.builds(
        lambda cap, frac, tokens, reported: BackendView(
            in_flight=int(cap * frac),
            max_in_flight=cap,
            outstanding_tokens=tokens,
            max_outstanding_tokens=10_000,
            reported_load=reported,
        ),
        st.integers(1, 64),
        st.floats(0, 0.999),
        st.integers(0, 20_000),
        st.none() | st.floats(0, 2),
    ),
)


def test_load_score_is_the_fullest_signal() -> None:
    assert load_score(BackendView(in_flight=2, max_in_flight=8)) == 0.25
    tokens = BackendView(
        in_flight=2, max_in_flight=8, outstanding_tokens=600, max_outstanding_tokens=1000
    )
    assert load_score(tokens) == 0.6
    assert load_score(BackendView(in_flight=2, max_in_flight=8, reported_load=0.9)) == 0.9


@given(views=views_st, seed=st.integers(0, 2**32))
def test_least_load_never_puts_a_full_backend_before_a_free_one(
    views: dict[str, BackendView], seed: int
) -> None:
    d = decide("pub", model(), "org", None, random.Random(seed), views)
    scores = [load_score(views.get(c.backend, BackendView())) for c in d.candidates]
    first_full = next((i for i, s in enumerate(scores) if s >= 1), len(scores))
    assert all(s >= 1 for s in scores[first_full:])
    assert set(d.loads) == {c.backend for c in d.candidates}


def test_least_load_prefers_the_less_loaded_of_two_choices() -> None:
    views = {
        "b0": BackendView(in_flight=9, max_in_flight=10),
        "b1": BackendView(in_flight=1, max_in_flight=10),
    }
    m = Model((ModelTarget("b0"), ModelTarget("b1")), Strategy.LEAST_LOAD)
    firsts = Counter(
        decide("pub", m, "org", None, random.Random(i), views).candidates[0].backend
        for i in range(200)
    )
    assert firsts == {"b1": 200}


def test_least_load_spreads_an_idle_fleet_by_weight() -> None:
    firsts = Counter(
        decide("pub", model(), "org", None, random.Random(i)).candidates[0].backend
        for i in range(4000)
    )
    assert set(firsts) == set(NAMES)
    assert min(firsts.values()) > 700


def test_prefix_blocks_chain_covers_every_block_before() -> None:
    a = affinity.prefix_blocks("x" * 100 + "a" * 100, 50, 10)
    b = affinity.prefix_blocks("x" * 100 + "b" * 100, 50, 10)
    assert len(a) == 4
    assert a[:2] == b[:2]
    assert a[2] != b[2]
    assert a[3] != b[3]
    assert affinity.prefix_blocks("x" * 49, 50, 10) == ()
    assert len(affinity.prefix_blocks("x" * 1000, 50, 3)) == 3


def test_a_conversations_next_turn_extends_its_prefix() -> None:
    turn1 = {
        "messages": [{"role": "system", "content": "s" * 900}, {"role": "user", "content": "q"}]
    }
    turn2 = {"messages": [*turn1["messages"], {"role": "assistant", "content": "a" * 600}]}
    one = affinity.prefix_blocks(affinity.prompt_text(Operation.CHAT, turn1), 256, 64)
    two = affinity.prefix_blocks(affinity.prompt_text(Operation.CHAT, turn2), 256, 64)
    assert one
    assert two[: len(one)] == one
    assert len(two) > len(one)
    assert affinity.prompt_text(Operation.EMBEDDING, {"input": "x" * 1000}) == ""


def test_rendezvous_order_is_stable_and_moves_only_the_removed_backend() -> None:
    moved = 0
    for i in range(500):
        block = f"block{i}"
        full = affinity.rendezvous_order(block, NAMES)
        assert affinity.rendezvous_order(block, list(reversed(NAMES))) == full
        fewer = affinity.rendezvous_order(block, [n for n in NAMES if n != "b3"])
        if full[0] != "b3":
            assert fewer[0] == full[0]
        else:
            moved += 1
    assert 60 < moved < 190  # about a quarter of the blocks had b3 as home


def test_index_finds_the_longest_known_prefix_and_forgets_the_oldest() -> None:
    index = PrefixIndex(capacity=3)
    index.record(("a", "b"), "b0")
    index.record(("a", "b", "c"), "b1")
    assert index.lookup(("a", "b", "c", "d")) == ("b1", 3)
    index.record(("z",), "b2")
    assert len(index) == 3
    assert index.lookup(("a",)) == (None, 0)  # the oldest block went first


def test_affinity_sends_a_known_prefix_home() -> None:
    index = PrefixIndex()
    blocks = ("p1", "p2")
    index.record(blocks, "b2")
    d = decide(
        "pub", model(Strategy.WEIGHTED), "org", None, random.Random(3),
        affinity=AffinityRequest(blocks, index),
    )  # fmt: skip
    assert d.candidates[0].backend == "b2"
    assert d.affinity is not None
    assert d.affinity.depth == 2
    assert d.explain()["affinity"] == {"home": "b2", "depth": 2, "chosen": "b2", "spilled": []}


def test_a_new_prefix_goes_to_its_rendezvous_home_on_every_replica() -> None:
    blocks = ("fresh",)
    home = affinity.rendezvous_order("fresh", NAMES)[0]
    for seed in range(20):  # each seed a replica with its own randomness
        d = decide(
            "pub", model(), "org", None, random.Random(seed),
            affinity=AffinityRequest(blocks, PrefixIndex()),
        )  # fmt: skip
        assert d.candidates[0].backend == home


@given(views=views_st, seed=st.integers(0, 2**32), block=st.text(min_size=1, max_size=8))
def test_affinity_keeps_the_load_bound(
    views: dict[str, BackendView], seed: int, block: str
) -> None:
    request = AffinityRequest((block,), PrefixIndex(), load_factor=1.25)
    d = decide("pub", model(), "org", None, random.Random(seed), views, affinity=request)
    assert d.affinity is not None
    loads = d.loads
    chosen = d.candidates[0].backend
    assert chosen == d.affinity.chosen
    mean = sum(loads.values()) / len(loads)
    cap = views.get(chosen, BackendView()).max_in_flight
    within = [b for b, load in loads.items() if load < 1 and load <= 1.25 * (mean + 1 / cap)]
    if within or loads[chosen] < 1:
        assert loads[chosen] < 1
        assert loads[chosen] <= 1.25 * (mean + 1 / cap)
    else:  # every backend past the bound: the least loaded
        assert loads[chosen] == min(loads.values())


def test_a_hot_prefix_spills_from_its_loaded_home() -> None:
    home = affinity.rendezvous_order("hot", NAMES)[0]
    views = {home: BackendView(in_flight=9, max_in_flight=10)}
    d = decide(
        "pub", model(Strategy.WEIGHTED), "org", None, random.Random(1), views,
        affinity=AffinityRequest(("hot",)),
    )  # fmt: skip
    assert d.candidates[0].backend != home
    assert d.affinity is not None
    assert d.affinity.spilled == (home,)


def test_sessions_hash_apart_from_prompts() -> None:
    assert affinity.session_blocks("s1") == affinity.session_blocks("s1")
    assert affinity.session_blocks("s1") != affinity.session_blocks("s2")


def test_a_session_pins_and_a_new_one_follows_its_prompt() -> None:
    prompt = affinity.prefix_blocks("x" * 64, 16, 8)
    blocks = affinity.request_blocks(prompt, "s1")
    assert blocks == (*prompt, *affinity.session_blocks("s1"))
    assert affinity.request_blocks(prompt, None) == prompt
    assert affinity.request_blocks(prompt, "") == prompt
    backends = ["a", "b", "c", "d"]
    idle = dict.fromkeys(backends, 0.0)
    share = dict.fromkeys(backends, 0.01)
    index = affinity.PrefixIndex()
    # Never seen: the prompt's first block decides, as without a session.
    first = affinity.choose(affinity.AffinityRequest(blocks, index), idle, share)
    assert first is not None
    assert first.chosen == affinity.rendezvous_order(prompt[0], backends)[0]
    # The prompt was served elsewhere, the session here: the session wins.
    other = next(b for b in backends if b != first.chosen)
    index.record(prompt, other)
    index.record(affinity.session_blocks("s1"), first.chosen)
    again = affinity.choose(affinity.AffinityRequest(blocks, index), idle, share)
    assert again is not None
    assert again.chosen == first.chosen
    # Another session of the same prompt goes where the prompt was served.
    new = affinity.request_blocks(prompt, "s2")
    third = affinity.choose(affinity.AffinityRequest(new, index), idle, share)
    assert third is not None
    assert third.chosen == other
