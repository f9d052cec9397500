"""The running configuration: one frozen snapshot, swapped whole on reload.

Rules:
- A `Runtime` holds the config and everything derived from it (the key
  index, the backend clients). It never changes; a reload builds a new one
  and swaps it in with one assignment (`reload.apply`).
- A request reads `state.runtime` once, when it arrives, and its exchange
  keeps that snapshot to the end, so a request never runs under two configs.
- Components keep live state only (breakers, counters, queues, the spool)
  and read their settings from a runtime when they need them.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from router_core.auth import KeyIndex
from router_core.config import RouterConfig
from router_core.protocols.wire import unable
from router_core.requests import Operation
from router_server.backends import BackendClient


@attrs.frozen
class Runtime:
    config: RouterConfig
    keys: KeyIndex
    # The clients new requests are sent with; a reload keeps those whose settings stay.
    backends: Mapping[str, BackendClient]
    # Per operation, the backends that cannot take it (routing skips them), with why.
    unable: Mapping[Operation, Mapping[str, str]] = attrs.field(factory=dict)

    @classmethod
    def build(cls, config: RouterConfig, backends: Mapping[str, BackendClient]) -> Runtime:
        cannot = {operation: unable(config, operation) for operation in Operation}
        return cls(config, KeyIndex.from_config(config), dict(backends), cannot)
