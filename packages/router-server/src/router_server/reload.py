"""Reloading the config file on SIGHUP or when it changes, without dropping requests.

Rules:
- The new file is loaded and checked exactly as at start-up; if it is not
  valid the old config stays in force and every problem is logged.
- A reload builds a new `Runtime` (config, key index, backend clients) and
  swaps it in with one assignment. Each request reads `state.runtime` once,
  when it is accepted, and passes that snapshot to everything it calls
  (limits, dispatch, the usage record and its price), so it runs under one
  config from start to end. Backends whose settings did not change keep
  their client; a changed or removed backend's old client is closed only
  when the last request using it has finished.
- The components every request shares (health and its breakers, the retry
  budget, backpressure) keep live state only and read their settings from
  the running runtime, so the swap reaches them with nothing patched;
  backpressure is told, so that waiters get in if its caps grew.
- Some settings only take effect on restart (listeners, workers, the
  stores, the usage spool, the body limit); a change to them is logged as such.
- Under `router serve --workers N` each worker reloads on its own: the
  supervisor passes SIGHUP to every worker, and each watches the file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import anyio
import attrs
import httpx

from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server import config_file
from router_server.backends import BackendClient, open_client
from router_server.pipeline import RouterState
from router_server.runtime import Runtime

log = logging.getLogger("router.config")

# Settings read once at start-up.
_RESTART_ONLY = (
    # One state layer, opened with the app: its store, Redis client and data directory.
    "state", "listeners", "limits.timeout_ms",
    "server.workers", "server.max_body_bytes", "server.gc_young_threshold",
    # The spool, ledger, exporter and idempotency store are opened with the app.
    "usage",
    # The tracer and the ops token are set up with the app (log_content reloads).
    "observability.ops_token_env", "observability.tracing", "observability.tracing_exporter",
)  # fmt: skip


@attrs.define
class Reloader:
    path: Path
    env: Mapping[str, str]
    # The transport the app was given for its backends (tests), else None.
    backend_transport: httpx.AsyncBaseTransport | None = None
    reloads: int = 0
    rejected: int = 0
    last_error: list[str] = attrs.field(factory=list)
    _fingerprint: bytes = b""
    _wake: anyio.Event | None = None

    def request(self) -> None:
        """Reload now (from a signal handler on the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def watch(self, state: RouterState, task_group: anyio.abc.TaskGroup) -> None:
        self._fingerprint = self._read_fingerprint()
        while True:
            self._wake = anyio.Event()
            with anyio.move_on_after(state.config.server.config_watch_s):
                await self._wake.wait()
            forced = self._wake.is_set()
            fingerprint = self._read_fingerprint()
            if forced or fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                self.reload(state, task_group)

    def _read_fingerprint(self) -> bytes:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return b""

    def reload(self, state: RouterState, task_group: anyio.abc.TaskGroup) -> bool:
        try:
            new = config_file.load(self.path, self.env)
        except ConfigInvalid as exc:
            self.rejected += 1
            self.last_error = [str(p) for p in exc.problems]
            log.error(
                "config reload refused; the running config stays in force",
                extra={"path": str(self.path), "problems": self.last_error},
            )
            return False
        retired = apply(state, new, self.env, self.backend_transport)
        for client in retired:
            task_group.start_soon(close_when_idle, client)
        self.reloads += 1
        self.last_error = []
        log.warning(
            "config reloaded",
            extra={"path": str(self.path), "version": new.version, "reloads": self.reloads},
        )
        return True

    def status(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "reloads": self.reloads,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }


def apply(
    state: RouterState,
    new: RouterConfig,
    env: Mapping[str, str],
    backend_transport: httpx.AsyncBaseTransport | None = None,
) -> list[BackendClient]:
    """Switch `state` to `new`; returns the clients no longer used for new requests.
    New clients send through `backend_transport` when one is given."""
    old = state.config
    for setting in _RESTART_ONLY:
        if _get(old, setting) != _get(new, setting):
            log.warning("%s changed: it takes effect on restart", setting)
    backends: dict[str, BackendClient] = {}
    retired: list[BackendClient] = []
    for name, settings in new.backends.items():
        current = state.backends.get(name)
        if (
            current is not None
            and current.settings == settings
            and old.server.transport == new.server.transport
        ):
            backends[name] = current
        else:
            backends[name] = open_client(
                name, settings, new.server.transport, env, backend_transport
            )
            if current is not None:
                retired.append(current)
    retired.extend(c for n, c in state.backends.items() if n not in new.backends)
    # Health (breakers, the backend set) and the retry budget read the new
    # settings from the runtime: nothing to patch in them.
    state.runtime = Runtime.build(new, backends)
    state.backpressure.reconfigured()  # it reads the new caps; grown ones let waiters in
    return retired


def _get(config: RouterConfig, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


async def close_when_idle(client: BackendClient, poll_s: float = 0.5) -> None:
    """Close a retired client once no request uses it (streams may run for minutes)."""
    # A poll, not an event: it runs only after a reload, and keeps dispatch's
    # hot path free of wake-up bookkeeping.
    while client.active > 0:  # noqa: ASYNC110
        await anyio.sleep(poll_s)
    await client.client.aclose()
