"""Prefix and session affinity in the request path (the policy is `router_core.affinity`).

Rules:
- Only models with `affinity` set take part; for the others nothing is
  hashed and no index is kept.
- A request's blocks (`router_core.affinity.request_blocks`, as the
  simulator's): its prompt's prefix blocks (only the first `max_blocks`
  blocks are rendered and hashed), then one session block: its session
  header's value (`affinity.session_header`) when it sends one, else its
  Responses conversation (named when its first turn is kept, the same for
  every turn), each hashed with the caller's organization. The session's
  block is looked up first, so a known session pins to where it was
  served; a new one goes where its prompt's prefix does, so sessions that
  share a system prompt keep it on one backend, and replicas that have not
  seen the session send it to the prefix's rendezvous home alike.
- One `PrefixIndex` per model per process, sized by `index_blocks`; a
  reload keeps a model's index (resized) while the model keeps affinity.
  A block is recorded once a backend has answered the request (2xx): its
  cache then holds the prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from router_core.affinity import (
    AffinityRequest,
    PrefixIndex,
    prefix_blocks,
    prompt_text,
    request_blocks,
)
from router_core.config import Model, RouterConfig
from router_core.requests import InferenceRequest


@attrs.frozen
class Pinning:
    """A request's affinity: what routing goes by, and what to record once served."""

    routing: AffinityRequest | None
    index: PrefixIndex | None = None
    recorded: tuple[str, ...] = ()


NO_PINNING = Pinning(None)


@attrs.define
class Affinity:
    # The running config (a reload swaps it): which models have affinity.
    config: Callable[[], RouterConfig]
    _indexes: dict[str, PrefixIndex] = attrs.field(factory=dict, init=False)
    _followed: Mapping[str, Model] | None = attrs.field(default=None, init=False)

    def index(self, name: str) -> PrefixIndex | None:
        """The index of model `name`, kept across reloads while it has affinity."""
        models = self.config().models
        if models is not self._followed:
            kept, self._indexes = self._indexes, {}
            for model_name, model in models.items():
                if model.affinity is None:
                    continue
                index = kept.get(model_name) or PrefixIndex(model.affinity.index_blocks)
                index.capacity = model.affinity.index_blocks
                self._indexes[model_name] = index
            self._followed = models
        return self._indexes.get(name)

    def request(
        self,
        name: str,
        model: Model,
        inference: InferenceRequest,
        headers: Mapping[str, str],
        organization: str,
        conversation: str | None = None,
    ) -> Pinning:
        """This request's affinity (routing None when its model has none or the
        request has nothing to go by: a short prompt, no session).
        `conversation`: its Responses conversation."""
        settings = model.affinity
        if settings is None:
            return NO_PINNING
        index = self.index(name)
        header = settings.session_header
        session = headers.get(header) if header else None
        if session:
            key: str | None = f"{organization}\x00session\x00{session}"
        elif conversation is not None:
            key = f"{organization}\x00conversation\x00{conversation}"
        else:
            key = None
        size = settings.block_chars
        text = prompt_text(inference.operation, inference.body, size * settings.max_blocks)
        blocks = request_blocks(prefix_blocks(text, size, settings.max_blocks), key)
        if not blocks:
            return Pinning(None, index)
        return Pinning(AffinityRequest(blocks, index, settings.load_factor), index, blocks)

    @staticmethod
    def served(pinning: Pinning, backend: str) -> None:
        """`backend` answered the request: it now holds the request's blocks."""
        if pinning.index is not None and pinning.recorded:
            pinning.index.record(pinning.recorded, backend)

    def status(self) -> dict[str, int]:
        """Blocks remembered per model, for /v1/status."""
        return {name: len(index) for name, index in self._indexes.items()}
