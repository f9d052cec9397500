"""Prefix affinity: send a prompt to the backend that likely holds its prefix in cache.

Rules:
- A prompt is hashed in fixed-size blocks of its canonical text (system
  prompt, then each message or input item in order, then the prompt of a
  completion). Block i's hash covers blocks 0..i (a chain), so two prompts
  share block i's hash exactly when their first i + 1 blocks are equal. Only
  whole blocks count, up to `max_blocks`; a prompt shorter than one block has
  no prefix worth keeping in a cache and gets none.
- A session (the `x-session-id` header, or the conversation of Responses'
  `previous_response_id`) is one block of its own, hashed from its id, so a
  session's turns go to one backend. A request's blocks are its prompt's,
  then its session's (`request_blocks`): the session's block, the last, is
  looked up first, so a known session pins; a new session's first turn goes
  where its prompt's prefix does (by the prompt's first block), so that
  sessions sharing a system prompt do not scatter it over every backend.
- The home of a request is the backend that served the longest known prefix
  of it (a bounded `PrefixIndex` of recent requests, per process); when none
  is known, it is the first block's rendezvous (highest random weight) pick
  among the candidates, so replicas agree on a new prefix without
  coordination.
- Bounded load (Mirrokni et al., "Consistent Hashing with Bounded Loads"):
  the home is kept only while its load is at most `load_factor` times the
  mean load of the candidates plus one request's share; otherwise the request
  spills to the next backend in the first block's rendezvous order that is
  within the bound. A hot prefix so spreads over more backends as it heats.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from router_core.requests import Operation

# Digest bytes per block hash: 64 bits, hex-encoded. Collisions only cost a
# cache miss.
_DIGEST_BYTES = 8


# One encoder for every part: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prompt_text(operation: Operation, body: Mapping[str, Any], limit: int | None = None) -> str:
    """The canonical text of a request's prompt, in the order a model server
    would see (and cache) it; '' for an operation with no prompt to cache.

    With `limit`, parts past the first `limit` characters are not rendered
    (the text may be longer, never shorter than `limit` when the prompt is):
    only the prefix worth hashing is paid for."""
    parts: list[object]
    if operation is Operation.CHAT:
        parts = list(_items(body.get("tools"))) + list(_items(body.get("messages")))
    elif operation is Operation.MESSAGES:
        parts = [body.get("system"), *_items(body.get("tools")), *_items(body.get("messages"))]
    elif operation is Operation.RESPONSES:
        given = body.get("input")
        items = given if isinstance(given, list) else [given]
        parts = [body.get("instructions"), *_items(body.get("tools")), *items]
    elif operation is Operation.COMPLETION:
        parts = [body.get("prompt")]
    else:
        return ""
    # One JSON text per part, so that a later part never changes an earlier
    # part's text: a conversation's next turn extends its previous prompt.
    rendered: list[str] = []
    length = 0
    for part in parts:
        if part is None:
            continue
        if limit is not None and length >= limit:
            break
        text = _CANONICAL.encode(part)
        rendered.append(text)
        length += len(text)
    return "".join(rendered)


def _items(value: object) -> Iterable[object]:
    return value if isinstance(value, list) else ()


def prefix_blocks(text: str, block_chars: int, max_blocks: int) -> tuple[str, ...]:
    """The chain hashes of the text's whole blocks, at most `max_blocks`."""
    whole = min(len(text) // block_chars, max_blocks)
    hashes: list[str] = []
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for i in range(whole):
        digest.update(text[i * block_chars : (i + 1) * block_chars].encode())
        hashes.append(digest.copy().hexdigest())
    return tuple(hashes)


def session_blocks(session: str) -> tuple[str, ...]:
    """A session's single block: its id, hashed apart from any prompt's."""
    digest = hashlib.blake2b(session.encode(), digest_size=_DIGEST_BYTES, person=b"session")
    return (digest.hexdigest(),)


def request_blocks(prompt: Sequence[str], session: str | None) -> tuple[str, ...]:
    """A request's blocks for affinity: its prompt's, then its session's (if any)."""
    if not session:
        return tuple(prompt)
    return (*prompt, *session_blocks(session))


def rendezvous_order(block: str, backends: Sequence[str]) -> list[str]:
    """The backends in highest-random-weight order for one block: stable for a
    block, independent of the order given, and only the removed backend's
    blocks move when one goes away."""

    def weight(backend: str) -> bytes:
        return hashlib.blake2b(f"{block}\x00{backend}".encode(), digest_size=8).digest()

    return sorted(backends, key=weight, reverse=True)


@attrs.define
class PrefixIndex:
    """The backend that last served each recent block, for at most `capacity`
    blocks (least recently used dropped first). Per process; nothing is lost
    when it forgets: the request then goes to the block's rendezvous home."""

    capacity: int = 100_000
    _served: collections.OrderedDict[str, str] = attrs.field(
        factory=collections.OrderedDict, init=False
    )

    def __len__(self) -> int:
        return len(self._served)

    def lookup(self, blocks: Sequence[str]) -> tuple[str | None, int]:
        """The backend holding the longest known prefix, and how many blocks long it is."""
        served = self._served
        for depth in range(len(blocks), 0, -1):
            backend = served.get(blocks[depth - 1])
            if backend is not None:
                served.move_to_end(blocks[depth - 1])
                return backend, depth
        return None, 0

    def record(self, blocks: Sequence[str], backend: str) -> None:
        """`backend` now holds every block of this prompt."""
        served = self._served
        for block in blocks:
            served[block] = backend
            served.move_to_end(block)
        while len(served) > self.capacity:
            served.popitem(last=False)


@attrs.frozen
class AffinityRequest:
    """What routing needs for one request's affinity: its blocks and where they were served."""

    blocks: tuple[str, ...]
    index: PrefixIndex | None = None
    load_factor: float = 1.25


@attrs.frozen
class AffinityChoice:
    """Where affinity sent a request, and why: for the decision's explanation."""

    home: str
    # How many blocks of the prompt the home was known to hold (0: its
    # rendezvous pick for a prefix never seen).
    depth: int
    chosen: str
    # The backends passed over for being loaded past the bound, home first.
    spilled: tuple[str, ...] = ()

    def explain(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "depth": self.depth,
            "chosen": self.chosen,
            "spilled": list(self.spilled),
        }


def choose(
    request: AffinityRequest, loads: Mapping[str, float], capacity_share: Mapping[str, float]
) -> AffinityChoice | None:
    """The backend affinity prefers among `loads`' backends (each with its
    load, 0 = idle, 1 = full), or None when the request has no blocks.

    `capacity_share` is one request's share of each backend's capacity (so
    the bound admits one more request even on an idle fleet)."""
    if not request.blocks or not loads:
        return None
    order = rendezvous_order(request.blocks[0], list(loads))
    known, depth = request.index.lookup(request.blocks) if request.index else (None, 0)
    home = order[0]
    if known is not None and known in loads:
        home = known
    else:
        depth = 0
    mean = sum(loads.values()) / len(loads)
    spilled: list[str] = []
    for backend in (home, *(b for b in order if b != home)):
        bound = request.load_factor * (mean + capacity_share.get(backend, 0.0))
        if loads[backend] < 1.0 and loads[backend] <= bound:
            return AffinityChoice(home, depth, backend, tuple(spilled))
        spilled.append(backend)
    # Every backend is past the bound: the least loaded takes it.
    chosen = min(order, key=lambda b: loads[b])
    return AffinityChoice(home, depth, chosen, tuple(b for b in spilled if b != chosen))
