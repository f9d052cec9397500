"""A simulated model server: batch slots, a queue, prefill and decode costs, a prefix cache.

Rules (each parameter is a field of `faults.ServerModel`):
- The server runs at most `slots` requests at once; the others wait in its
  queue, first come first served. A request leaves the queue when a slot
  frees, or when the router stops waiting for it (its read timeout or the
  request's deadline): the router has gone, so the server drops it.
- A request's time on a slot is its prefill then its decode, both divided
  by `speed`:
  - prefill: `prefill_ms_per_token` for each prompt token not in the cache.
    The prompt's text is cut in blocks of `cache_block_chars` characters,
    hashed as a chain (`router_core.affinity.prefix_blocks`), and the cache
    holds the leading blocks the server has seen: the hit is the run of
    the prompt's first blocks found there, as a share of its text, applied
    to its prompt tokens. A prompt's blocks go into the cache when its
    prefill starts, and those of its answer after the prompt (when the trace
    names it: `answer`) when its decode ends, as vLLM's and SGLang's caches
    keep generated tokens (least recently used evicted past `cache_blocks`).
  - decode: `decode_ms_per_token` per output token, times
    1 + `batch_slowdown` x (requests on the other slots when it starts):
    a decode step of a fuller batch takes longer. The rate is fixed when the
    request starts (a request does not speed up when others leave).
- Time to first token is the wait in the queue plus the prefill (plus any
  added latency of a fault); the answer ends after the decode.
- Utilisation is the slot-time in use over `slots` x the simulated span.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, NamedTuple

from router_cli.simulate.faults import ServerModel
from router_core.affinity import prefix_blocks


class Job:
    """One attempt waiting for, or running on, a server's slot."""

    __slots__ = (
        "blocks", "cancelled", "completion", "enqueued_us", "give_up_us", "prompt_tokens",
        "request", "started", "text_chars",
    )  # fmt: skip

    def __init__(
        self,
        request: Any,
        enqueued_us: int,
        give_up_us: int,
        prompt_tokens: int,
        completion: int,
        text: str,
        blocks: Sequence[str],
    ) -> None:
        # The engine's request whose attempt this is.
        self.request = request
        self.enqueued_us = enqueued_us
        # When the router stops waiting for it (its read timeout or deadline).
        self.give_up_us = give_up_us
        self.prompt_tokens = prompt_tokens
        self.completion = completion
        self.text_chars = len(text)
        self.blocks = blocks
        self.started = False
        self.cancelled = False


class Run(NamedTuple):
    """A job started on a slot: when, what the cache spared, and when it ends."""

    start_us: int
    cached_tokens: int
    first_token_us: int
    end_us: int
    # It would end past `give_up_us`: the router has gone by then, and the
    # server drops it at `end_us` (= then).
    given_up: bool


class Server:
    def __init__(self, model: ServerModel) -> None:
        self.model = model
        self.running = 0
        self.queue: collections.deque[Job] = collections.deque()
        self._cache: collections.OrderedDict[str, None] = collections.OrderedDict()

    def blocks(self, text: str) -> tuple[str, ...]:
        """The prompt's blocks as this server's cache keys them."""
        size = self.model.cache_block_chars
        return prefix_blocks(text, size, len(text) // size) if self.model.cache_blocks else ()

    def cached(self, blocks: Sequence[str]) -> int:
        """How many of the prompt's leading blocks are in the cache (marked used)."""
        cache = self._cache
        hit = 0
        for block in blocks:
            if block not in cache:
                break
            cache.move_to_end(block)
            hit += 1
        return hit

    def remember(self, blocks: Sequence[str]) -> None:
        cache = self._cache
        for block in blocks:
            cache[block] = None
            cache.move_to_end(block)
        while len(cache) > self.model.cache_blocks:
            cache.popitem(last=False)

    def hit_tokens(self, prompt_tokens: int, text_chars: int, hit_blocks: int) -> int:
        """The prompt tokens the cache spares: the hit's share of the text."""
        if not text_chars or not hit_blocks:
            return 0
        chars = min(text_chars, hit_blocks * self.model.cache_block_chars)
        return min(prompt_tokens, round(prompt_tokens * chars / text_chars))

    def prefill_us(self, prompt_tokens: int, hit_tokens: int) -> int:
        model = self.model
        return round((prompt_tokens - hit_tokens) * model.prefill_ms_per_token * 1000 / model.speed)

    def decode_us(self, completion: int, others: int) -> int:
        """The decode of `completion` tokens with `others` requests on the other slots."""
        model = self.model
        per_token = model.decode_ms_per_token * (1 + model.batch_slowdown * others)
        return round(completion * per_token * 1000 / model.speed)

    def free(self) -> bool:
        return self.running < self.model.slots

    def next_job(self) -> Job | None:
        """The first job still waiting, taken off the queue."""
        queue = self.queue
        while queue:
            job = queue.popleft()
            if not job.cancelled:
                return job
        return None

    def start_next(self, now_us: int) -> tuple[Job, Run] | None:
        """Start the next job waiting, if a slot is free: its blocks go into the cache."""
        if not self.free():
            return None
        job = self.next_job()
        if job is None:
            return None
        job.started = True
        at = max(now_us, job.enqueued_us)
        hit = self.cached(job.blocks)
        self.remember(job.blocks)
        cached = self.hit_tokens(job.prompt_tokens, job.text_chars, hit)
        first_token = at + self.prefill_us(job.prompt_tokens, cached)
        end = first_token + self.decode_us(job.completion, self.running)
        self.running += 1
        given_up = end > job.give_up_us
        if given_up:
            end = max(at, job.give_up_us)
        return job, Run(at, cached, first_token, end, given_up)
