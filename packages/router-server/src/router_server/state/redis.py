"""The one Redis client of a process, and what every store does with it.

`open_redis` builds the client the `state.redis` section describes (standalone,
Sentinel or Cluster); every store of the state layer (limits, idempotency keys,
managed keys, nonces, overrides) shares it. It never retries a command by
itself: a retried script could charge a request twice, so a failure goes to
the caller's policy instead. Each store bounds its own calls (`redis_guard`;
limit decisions by `limits.timeout_ms`) and raises `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from router_core.backoff import Backoff, Retrying
from router_core.config import RedisSettings
from router_core.config_enums import RedisMode
from router_server.state.batch import Calls, Deadline, Orphan
from router_server.state.errors import Store, StoreUnavailable

log = logging.getLogger("router.state")

RedisClient = Redis | RedisCluster
# Waits between resubscriptions of a change feed: up to 0.1 s, doubling to 5 s.
RESUBSCRIBE_BACKOFF = Backoff(base_s=0.1, cap_s=5.0)


def open_redis(settings: RedisSettings, url: str) -> RedisClient:
    """The client for `settings`, connecting lazily (nothing is sent yet)."""
    timeout_s = settings.timeout_ms / 1000
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "max_connections": settings.max_connections,
    }
    if settings.mode == RedisMode.CLUSTER:
        # A lost master costs only the slots it served, not the whole cluster.
        return RedisCluster.from_url(
            url, require_full_coverage=False, retry=Retry(NoBackoff(), 0), **common
        )
    if settings.mode == RedisMode.SENTINEL:
        sentinels, password, db, tls = sentinel_url(url)
        secret: dict[str, Any] = {} if password is None else {"password": password}
        sentinel = Sentinel(
            sentinels,
            sentinel_kwargs={**secret, "socket_timeout": timeout_s, "ssl": tls},
            **secret,
        )
        client: SentinelMaster = sentinel.master_for(
            settings.sentinel_master,
            redis_class=SentinelMaster,
            db=db,
            ssl=tls,
            retry=Retry(NoBackoff(), 0),
            **common,
        )
        client.sentinels = sentinel
        return client
    return Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)


class SentinelMaster(Redis):
    """The master the Sentinels name (found again on every new connection, so
    after a failover too); closing it closes the connections to the Sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            for client in self.sentinels.sentinels:
                await client.aclose()


def sentinel_url(url: str) -> tuple[list[tuple[str, int]], str | None, int, bool]:
    """The Sentinels' addresses, the password, the database and whether TLS is on,
    from `redis://[:password@]host:port[,host:port...][/db]` (rediss:// for TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("a Sentinel URL starts with redis:// or rediss://")
    netloc = parts.netloc
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo) or None
    sentinels: list[tuple[str, int]] = []
    for address in netloc.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("each Sentinel is host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("the database is a number (/0)")
    return sentinels, password, int(path or 0), parts.scheme == "rediss"


class LuaScript:
    """A Lua script run by EVALSHA; a node that does not have it yet gets it whole (EVAL).

    Not redis-py's `register_script`: its fallback, SCRIPT LOAD, goes to every
    master of a cluster, so with one master lost no script could be loaded
    anywhere. EVAL goes only to the node of the script's keys (following
    MOVED), which keeps the script for the next EVALSHA. NOSCRIPT means the
    script did not run, so sending it again cannot apply it twice. With
    `calls`, the request path's caller, the script goes in its pipelines."""

    def __init__(self, client: RedisClient, source: str, calls: Calls | None = None) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        # The request path's coalescing caller (`state.batch`); None: call directly.
        self.calls = calls

    async def __call__(
        self,
        keys: Sequence[str] = (),
        args: Sequence[str | int | bytes | Deadline] = (),
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The script's reply; past `timeout_s` (None: no bound of its own),
        TimeoutError."""
        if self.calls is not None:
            return await self.calls.script(self, keys, args, on_orphan, timeout_s)
        return await self._direct(keys, args, timeout_s)

    def start(
        self,
        keys: Sequence[str] = (),
        args: Sequence[str | int | bytes | Deadline] = (),
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """As calling the script, but with `calls` it is queued before this
        returns (`Calls.start_script`); without, it is sent when awaited."""
        if self.calls is not None:
            return self.calls.start_script(self, keys, args, on_orphan, timeout_s)
        return self._direct(keys, args, timeout_s)

    async def _direct(
        self,
        keys: Sequence[str],
        args: Sequence[str | int | bytes | Deadline],
        timeout_s: float | None,
    ) -> Any:
        plain = [a for a in args if not isinstance(a, Deadline)]
        if len(plain) != len(args):
            raise TypeError("a deadline needs the coalescing caller")
        async with asyncio.timeout(timeout_s):
            try:
                return await self.client.evalsha(self.sha, len(keys), *keys, *plain)
            except NoScriptError:
                return await self.client.eval(self.source, len(keys), *keys, *plain)


@asynccontextmanager
async def redis_guard(
    store: Store, operation: str, timeout_s: float, *, timed: bool = True
) -> AsyncIterator[None]:
    """Bound a store's Redis call by `timeout_s` and turn its failures into
    `StoreUnavailable` (the error's class name only: its text may carry an address).

    `timed=False`: the call is bounded by `timeout_s` itself (a `LuaScript`
    given it), and raises TimeoutError past it."""
    try:
        # asyncio's own timeout: anyio's costs several times as much, on every
        # request-path Redis call.
        if timed:
            async with asyncio.timeout(timeout_s):
                yield
        else:
            yield
    except TimeoutError as exc:
        raise StoreUnavailable(
            store, f"{store} store {operation}: Redis did not answer within {timeout_s:g} s"
        ) from exc
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(
            store, f"{store} store {operation}: Redis failed ({type(exc).__name__})"
        ) from exc


async def follow_channel(
    client: RedisClient,
    channel: str,
    on_change: Callable[[], None],
    what: str,
    *,
    rng: random.Random | None = None,
) -> None:
    """Call `on_change` for every message on `channel`; on any failure wait,
    resubscribe, and report a change (one may have been missed meanwhile).

    The wait is jittered (`router_core.backoff`): after a Redis restart the
    replicas resubscribe spread over the window, not all at the same instant.
    On a cluster, where PUBLISH reaches every node, each subscription goes to
    the next master in turn, so a lost master costs one resubscription."""
    rng = rng or random.Random()
    retry = Retrying(RESUBSCRIBE_BACKOFF, rng)
    attempt = rng.randrange(1 << 16)
    while True:
        try:
            pubsub = await _pubsub(client, attempt)
            try:
                await pubsub.subscribe(channel)
                retry.succeeded()
                on_change()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        on_change()
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()
        except (RedisError, OSError) as exc:
            attempt += 1
            wait = retry.failed()
            log.warning(
                f"{what} change feed lost; resubscribing",
                extra={"error": type(exc).__name__, "retry_in_s": round(wait, 3)},
            )
            await anyio.sleep(wait)


async def _pubsub(client: RedisClient, attempt: int) -> PubSub:
    if not isinstance(client, RedisCluster):
        return client.pubsub(ignore_subscribe_messages=True)
    # Not the master of the channel's slot, which may be the one that is down:
    # a cluster delivers a PUBLISH on any node to the subscribers of every node.
    await client.initialize()
    primaries = sorted(client.get_primaries(), key=lambda node: node.name)
    node = primaries[attempt % len(primaries)] if primaries else None
    return client.pubsub(node=node, ignore_subscribe_messages=True)
