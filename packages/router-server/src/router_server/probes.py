"""The router's own requests to its backends: active probes and trial probes.

Rules:
- Active probes list each backend's models every `health.probe_interval_s`
  (which a reload may change): "does it answer at all?". A request that could
  not reach a backend (refused, unreachable, dropped) brings that backend's
  probe forward, at most once per interval (`Health.failed`).
- A half-open circuit admits no client request; its trial probe, a one-token
  chat completion of a model the backend serves, bounded by
  `health.probe_timeout_s`, decides it: "does it serve inference?". A model
  listing would prove nothing there, as a hung backend can still list.
- The loop sleeps until the next trial is due, and wakes early when a circuit
  changes state or an early probe is wanted, so a trial goes out as soon as
  `open_s` has passed, not at the next probe round. It waits at most one
  probe interval, which picks up a reloaded `open_s`.
- Every probe carries `x-router-probe` (active or trial), for backends' logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import anyio
import anyio.abc

from router_core.config import RouterConfig
from router_server.backends import BackendClient
from router_server.health import Health


async def probe_all(health: Health, clients: Mapping[str, BackendClient], timeout_s: float) -> None:
    async with anyio.create_task_group() as tg:
        for client in clients.values():
            tg.start_soon(probe_one, health, client, timeout_s)


async def probe_one(health: Health, client: BackendClient, timeout_s: float) -> None:
    with _held(client) as usable:
        if usable:
            health.probed(client.name, await client.probe(timeout_s))


@contextlib.contextmanager
def _held(client: BackendClient) -> Iterator[bool]:
    """Keep `client` open for one probe (a reload closes a client it retired once
    no request uses it); False if it is closed already: no probe, no verdict."""
    if client.client.is_closed:
        yield False
        return
    client.active += 1
    try:
        yield True
    finally:
        client.active -= 1


async def probe_forever(health: Health, clients: Callable[[], Mapping[str, BackendClient]]) -> None:
    """Probe every backend on the interval, early where a request asks for it,
    and send each half-open circuit its trial probe as soon as it is due."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_probe_rounds, health, clients)
        while True:
            current = clients()
            timeout_s = health.settings.probe_timeout_s
            for name in health.take_early_probes(current):
                tg.start_soon(probe_one, health, current[name], timeout_s)
            start_trials(health, current, tg)
            wait = health.settings.probe_interval_s
            due = health.next_trial_at(current)
            if due is not None:
                wait = min(wait, max(0.0, due - health.clock()))
            with anyio.move_on_after(wait):
                await health.wanted()


async def _probe_rounds(health: Health, clients: Callable[[], Mapping[str, BackendClient]]) -> None:
    while True:
        await anyio.sleep(health.settings.probe_interval_s)
        await probe_all(health, clients(), health.settings.probe_timeout_s)


def start_trials(
    health: Health, clients: Mapping[str, BackendClient], tg: anyio.abc.TaskGroup
) -> None:
    """Start the trial probe of every backend whose circuit is due one."""
    for name, client in clients.items():
        trial = health.begin_trial(name)
        if trial is not None:
            tg.start_soon(run_trial, health, client, trial)


async def run_trial(health: Health, client: BackendClient, trial: int) -> None:
    """Send one trial probe and hand its result to the breaker (no verdict if cancelled)."""
    failure: str | None = None
    cancelled = True
    try:
        with _held(client) as usable:
            if not usable:
                return
            model = trial_model(health.config(), client.name)
            timeout_s = health.settings.probe_timeout_s
            if model is None:
                # No model routes here, so no client request can come either:
                # whether it answers at all is the best evidence there is.
                failure = None if await client.probe(timeout_s) else "trial probe: no answer"
            else:
                failure = await client.trial(model, timeout_s)
            cancelled = False
    finally:
        health.end_trial(client.name, trial, failure, cancelled=cancelled)


def trial_model(config: RouterConfig, backend: str) -> str | None:
    """A model name `backend` serves (as the backend knows it), for its trial
    probes: that of the first target naming it, in config order."""
    for name, model in config.models.items():
        for target in (*model.backends, *(t for r in model.routes for t in r.backends)):
            if target.backend == backend:
                return target.model or name
    return None
