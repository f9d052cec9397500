"""The affinity component's indexes follow the running config: one per model
with affinity, kept (resized) across a reload while the model keeps it."""

from __future__ import annotations

import copy
from typing import Any

from router_core.config import RouterConfig
from router_core.config_codec import structure
from router_core.requests import Operation, validate_openai
from router_server.affinity import Affinity

SYSTEM = "a long and shared system prompt " * 40


def config(**affinity: Any) -> dict[str, Any]:
    targets = [{"backend": "a"}, {"backend": "b"}]
    return {
        "backends": {"a": {"base_url": "http://a/v1"}, "b": {"base_url": "http://b/v1"}},
        "models": {
            "chat": {"backends": targets, "affinity": {"block_chars": 64, **affinity}},
            "plain": {"backends": targets},
        },
        "organizations": {"acme": {"models": ["*"]}},
    }


def chat(question: str) -> Any:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return validate_openai(Operation.CHAT, {"model": "chat", "messages": messages})


def test_a_reload_keeps_a_models_index_while_it_keeps_affinity() -> None:
    running: list[RouterConfig] = [structure(config())]
    affinity = Affinity(lambda: running[0])
    model = running[0].models["chat"]
    pinning = affinity.request("chat", model, chat("hi"), {}, "acme")
    assert pinning.routing is not None
    affinity.served(pinning, "b")
    index = affinity.index("chat")
    assert index is not None
    assert index.lookup(pinning.routing.blocks) == ("b", len(pinning.routing.blocks))
    assert affinity.index("plain") is None  # no affinity, no index

    running[0] = structure(config(index_blocks=5))  # a reload that resizes it
    assert affinity.index("chat") is index
    assert index.capacity == 5

    off = copy.deepcopy(config())
    del off["models"]["chat"]["affinity"]
    running[0] = structure(off)
    assert affinity.index("chat") is None
    running[0] = structure(config())
    fresh = affinity.index("chat")
    assert fresh is not None
    assert fresh is not index
    assert len(fresh) == 0


def test_what_a_request_goes_by() -> None:
    """Its prompt's blocks, then one session block: the session header's, else
    the conversation's; a short prompt with neither has nothing to go by."""
    affinity = Affinity(lambda: running)
    running = structure(config())
    model = running.models["chat"]
    prompt = affinity.request("chat", model, chat("hi"), {}, "acme")
    session = affinity.request("chat", model, chat("hi"), {"x-session-id": "s1"}, "acme")
    other_org = affinity.request("chat", model, chat("hi"), {"x-session-id": "s1"}, "globex")
    talk = affinity.request("chat", model, chat("hi"), {}, "acme", "conv_1")
    both = affinity.request("chat", model, chat("hi"), {"x-session-id": "s1"}, "acme", "conv_1")
    assert prompt.routing is not None
    assert session.routing is not None
    assert talk.routing is not None
    assert other_org.routing is not None
    assert both.routing is not None
    blocks = prompt.routing.blocks
    # The prompt's blocks first, the session's last (looked up first: it pins).
    assert session.routing.blocks[:-1] == blocks
    assert talk.routing.blocks[:-1] == blocks
    assert len(session.routing.blocks) == len(blocks) + 1
    assert session.routing.blocks != other_org.routing.blocks
    assert talk.routing.blocks != session.routing.blocks
    assert both.routing.blocks == session.routing.blocks  # the header wins
    assert talk.recorded == talk.routing.blocks
    short = validate_openai(
        Operation.CHAT, {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert affinity.request("chat", model, short, {}, "acme").routing is None
    started = affinity.request("chat", model, short, {}, "acme", "conv_2")
    assert started.routing is not None
    assert len(started.routing.blocks) == 1
    plain = affinity.request("plain", running.models["plain"], chat("hi"), {}, "acme")
    assert plain.routing is None
    assert not plain.recorded
