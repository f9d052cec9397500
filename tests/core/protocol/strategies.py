"""Hypothesis strategies shared by the protocol translation tests: JSON-ish
values, and chat completions (whole and as streams) to translate back."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
ids = st.from_regex(r"call_[a-z0-9]{6}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
tool_input = st.dictionaries(names, json_values, max_size=3)

tool_calls = st.lists(st.tuples(ids, names, tool_input), max_size=3, unique_by=lambda c: c[0])
completions = st.fixed_dictionaries(
    {
        "reasoning": st.one_of(st.none(), text),
        "content": st.one_of(st.none(), text),
        "calls": tool_calls,
        "finish": st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
        "prompt": st.integers(0, 10_000),
        "cached": st.integers(0, 100),
        "completion": st.integers(0, 10_000),
    }
)


def chat_answer(c: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c["content"]}
    if c["reasoning"]:
        message["reasoning_content"] = c["reasoning"]
    if c["calls"]:
        message["tool_calls"] = [
            {"id": i, "type": "function",
             "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
            for i, n, a in c["calls"]
        ]  # fmt: skip
    prompt = c["prompt"] + c["cached"]
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": c["finish"]}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": c["completion"],
                  "prompt_tokens_details": {"cached_tokens": c["cached"]}},
    }  # fmt: skip


def chat_chunks(c: dict[str, Any], cut: int) -> list[dict[str, Any]]:
    """The completion as a chat stream, each text cut into pieces of `cut` characters."""

    def pieces(s: str) -> list[str]:
        return [s[i : i + cut] for i in range(0, len(s), cut)]

    def delta(**d: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}

    chunks = [delta(role="assistant", content="")]
    chunks += [delta(reasoning_content=p) for p in pieces(c["reasoning"] or "")]
    chunks += [delta(content=p) for p in pieces(c["content"] or "")]
    for index, (i, n, a) in enumerate(c["calls"]):
        arguments = pieces(orjson.dumps(a).decode())
        chunks.append(delta(tool_calls=[{"index": index, "id": i, "type": "function",
                                         "function": {"name": n, "arguments": ""}}]))  # fmt: skip
        chunks += [delta(tool_calls=[{"index": index, "function": {"arguments": p}}])
                   for p in arguments]  # fmt: skip
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": c["finish"]}]})
    chunks.append({"choices": [], "usage": chat_answer(c)["usage"]})
    return chunks
