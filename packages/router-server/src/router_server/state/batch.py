"""Request-path Redis calls, coalesced: the calls of one loop turn share one pipeline.

Rules:
- `Pipelined` (standalone and Sentinel) sends every call made while no
  pipeline is free in the next pipeline: at most `pipelines` are in flight,
  each on a connection of its own (opened by redis-py's connection class,
  then read by hiredis directly: `_Wire`). The request path therefore never needs
  more connections than that, however many requests are in flight, and
  round trips per request fall as load rises. `Direct` (Cluster, whose
  pipelines redis-py splits per node) sends each call alone, at most
  `pipelines` times `CLUSTER_CALLS_PER_PIPELINE` at once.
- A call is never abandoned once queued: its reply reaches the batcher even
  when its caller has gone (cancelled, or timed out on its side), and is then
  handed to the call's `on_orphan`, so a store can undo what its caller never
  saw (`RedisLimitStore` releases an admission nobody settles).
- Late is not down. A `Deadline(budget_us)` argument becomes, when its
  pipeline is written, the store's clock at that instant plus the budget:
  the script then refuses to decide past it, a timeout measured on the
  store's side of the call. The store's clock is estimated from `TIME` at
  the head of a pipeline (one every `OFFSET_SAMPLE_US` at most), as the
  smallest offset seen recently (a
  pipeline runs after it is written, so every sample is the offset plus a
  delay; the smallest delay is close to none). Before the first sample, and
  on a cluster (one clock per node), a deadline is sent as '' (none).
- Down is real failure: a pipeline refused, reset, or unanswered within the
  client's socket timeout (`state.redis.timeout_ms`) marks Redis down (not
  on a cluster, where a lost master costs only its own slots' calls). Calls
  then fail at once with `RedisDown` until a PING answers (tried every
  `RECHECK_S`), so a dead store costs each request nothing, and a slow loop
  (whose replies are read late, but arrive) never marks it down. A
  connection closed while idle (Redis' `timeout`, a restart) is dropped, and
  the next batch opens another: no call fails for it.
- A call's `timeout_s` bounds its caller's wait (TimeoutError), from when it
  is made, whether it is still queued or written: one timer sweeps every
  call's wait (within `SWEEP_S`), cheaper than a timeout per call. The call
  itself still goes ahead, and its reply goes to `on_orphan`.
- Errors reach callers as redis-py raised them (`RedisError`, `OSError`); each
  store's guard turns them into `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from router_server.state.redis import LuaScript, RedisClient

log = logging.getLogger("router.state")

# While Redis is down, how often a PING checks whether it is back.
RECHECK_S = 0.25
# A clock offset sample is kept this long (two epochs of it are compared).
OFFSET_EPOCH_US = 30_000_000
# How often a pipeline starts with TIME, to sample the store's clock.
OFFSET_SAMPLE_US = 100_000
# How often at most the callers' waits are checked: a wait ends up to this late.
SWEEP_S = 0.01
# Calls per pipeline at most: a bigger backlog goes in the next pipelines.
MAX_BATCH = 1024
# Concurrent single calls per pipeline slot on a cluster (no pipelining there).
CLUSTER_CALLS_PER_PIPELINE = 16

Arg = str | int | bytes


class RedisDown(RedisConnectionError):
    """Redis failed recently and has not answered a PING since."""


@attrs.frozen
class Deadline:
    """An argument replaced, when the call is written, by the store's clock
    (µs since the epoch) plus `budget_us`, or '' when that clock is unknown."""

    budget_us: int


@attrs.define
class ClockOffset:
    """The store's clock minus ours (µs): the smallest sample of the last one to
    two epochs, so it follows a clock that steps, within two epochs."""

    current: int | None = None
    previous: int | None = None
    epoch_start: int = 0
    sampled_at: int | None = None

    def due(self, ours_us: int) -> bool:
        """Whether a pipeline written now should sample the store's clock."""
        return self.sampled_at is None or ours_us - self.sampled_at >= OFFSET_SAMPLE_US

    def sample(self, ours_us: int, theirs_us: int) -> None:
        self.sampled_at = ours_us
        offset = theirs_us - ours_us
        if ours_us - self.epoch_start >= OFFSET_EPOCH_US:
            self.previous, self.current, self.epoch_start = self.current, None, ours_us
        if self.current is None or offset < self.current:
            self.current = offset

    def estimate(self) -> int | None:
        known = [v for v in (self.current, self.previous) if v is not None]
        return min(known) if known else None


class Calls(Protocol):
    """How a store sends its request-path commands."""

    async def command(
        self, *args: Arg, on_orphan: Orphan | None = None, timeout_s: float | None = None
    ) -> Any: ...

    async def script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Arg | Deadline],
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Any: ...

    def start_script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Arg | Deadline],
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Coroutine[Any, Any, Any]: ...

    def status(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


Orphan = Callable[[Any], None]


@attrs.define(eq=False)
class _Call:
    args: tuple[Arg | Deadline, ...]
    future: asyncio.Future[Any]
    # The script's source, sent whole (EVAL) where EVALSHA finds no script.
    source: str | None = None
    on_orphan: Orphan | None = None
    # How long its caller waits (None: until the reply, or the wire's timeout).
    timeout_s: float | None = None
    # The caller's wait ended (TimeoutError): the reply goes to `on_orphan`.
    expired: bool = False


def _now_us() -> int:
    return time.time_ns() // 1000


def _resolved(args: Sequence[Arg | Deadline], at_us: int | None) -> list[Arg]:
    return [
        (("" if at_us is None else at_us + a.budget_us) if isinstance(a, Deadline) else a)
        for a in args
    ]


class _Base:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.down = False
        self.failures = 0
        self.calls = 0
        self.round_trips = 0
        self._recheck: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # The callers' waits by length, each a queue of (ends at, call), swept
        # every SWEEP_S at most.
        self._waits: dict[float, deque[tuple[float, weakref.ref[_Call]]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def command(
        self, *args: Arg, on_orphan: Orphan | None = None, timeout_s: float | None = None
    ) -> Any:
        call = _Call(args, self._future(), on_orphan=on_orphan, timeout_s=timeout_s)
        return await self._submit(call)

    async def script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Arg | Deadline],
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        return await self.start_script(script, keys, args, on_orphan, timeout_s)

    def start_script(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Arg | Deadline],
        on_orphan: Orphan | None = None,
        timeout_s: float | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """As `script`, but the call is queued before this returns (in this
        loop turn's pipeline); the reply is what the coroutine returns. So a
        caller can send a script, await something else, and then read a reply
        that came in the same pipeline without another loop turn. The
        coroutine must be awaited; a caller that goes while it waits leaves
        the reply to `on_orphan`, as with `script`. Redis known down fails
        it when awaited."""
        call_args = ("EVALSHA", script.sha, len(keys), *keys, *args)
        call = _Call(
            call_args, self._future(), source=script.source, on_orphan=on_orphan,
            timeout_s=timeout_s,
        )  # fmt: skip
        try:
            self._enqueue(call)
        except RedisDown as exc:
            call.future.set_exception(exc)
        return self._wait(call)

    def _bound(self, call: _Call) -> None:
        """End the caller's wait after `call.timeout_s` (TimeoutError), within SWEEP_S.

        One timer for every call, not one each (an asyncio.timeout costs about
        5 µs a call on the request path): the waits of one length end in the
        order they began, so each length's are a queue, swept from the front."""
        timeout_s = call.timeout_s
        if timeout_s is None:
            return
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout_s
        waits = self._waits.get(timeout_s)
        if waits is None:
            waits = self._waits[timeout_s] = deque()
        # Weakly: a call answered in time is garbage long before its wait ends.
        waits.append((ends, weakref.ref(call)))
        # A wait shorter than the others may end before the next sweep.
        if self._sweeper is None or ends < self._sweeper.when():
            self._schedule_sweep(loop, ends)

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for waits in self._waits.values():
            while waits and waits[0][0] <= now:
                call = waits.popleft()[1]()
                if call is None:
                    continue
                future = call.future
                if not future.done():
                    call.expired = True
                    future.set_exception(
                        TimeoutError(f"Redis did not answer within {call.timeout_s:g} s")
                    )
            if waits and (earliest is None or waits[0][0] < earliest):
                earliest = waits[0][0]
        # Finished calls are dropped as their time comes; the next sweep is at
        # the earliest wait's end, but not sooner than SWEEP_S from now.
        self._sweeper = None
        if earliest is not None:
            self._schedule_sweep(loop, max(earliest, now + SWEEP_S))

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, call: _Call) -> Any:
        self._enqueue(call)
        return await self._wait(call)

    def _enqueue(self, call: _Call) -> None:
        """Queue `call` to be sent (or raise RedisDown at once)."""
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, call: _Call) -> Any:
        """The call's reply; a caller that goes first leaves it to `on_orphan`.

        No shield (it costs a future and two callbacks a call): a caller that
        goes cancels the call's future with it, and the batcher hands the reply
        it then reads to `on_orphan` (`_deliver`). A reply that arrived just
        before the caller went (the future done, the caller not yet woken) is
        handed over here."""
        future = call.future
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                _orphan(call, future.result())
            raise

    def _failed(self, exc: BaseException) -> None:
        """A pipeline (or call) failed on the connection: Redis is down until a PING."""
        self.failures += 1
        if isinstance(exc, RedisError | OSError) and not isinstance(exc, RedisDown):
            if not self.down:
                log.warning("redis down", extra={"error": type(exc).__name__})
            self.down = True
            if self._recheck is None or self._recheck.done():
                self._recheck = asyncio.get_running_loop().create_task(self._until_up())

    async def _until_up(self) -> None:
        while self.down:
            await asyncio.sleep(RECHECK_S)
            try:
                await self.client.ping()
            except (RedisError, OSError):
                continue
            self.down = False
            log.warning("redis up")

    def _check_up(self) -> None:
        if self.down:
            raise RedisDown("Redis failed and has not answered since")

    def status(self) -> dict[str, Any]:
        return {
            "down": self.down,
            "calls": self.calls,
            "round_trips": self.round_trips,
            "failures": self.failures,
        }

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks = [*self._tasks, *([self._recheck] if self._recheck else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _orphan(call: _Call, reply: Any) -> None:
    """Hand the reply of a call whose caller went to its `on_orphan`."""
    if call.on_orphan is None:
        return
    try:
        call.on_orphan(reply)
    except Exception:
        log.exception("orphaned reply not handled")


def _deliver(call: _Call, reply: Any) -> None:
    """Answer `call` with `reply` (a value or an exception); a caller that went
    (its future cancelled) leaves a value to `on_orphan`."""
    future = call.future
    if future.cancelled() or call.expired:
        if not isinstance(reply, Exception):
            _orphan(call, reply)
    elif future.done():
        return
    elif isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


class Pipelined(_Base):
    """Standalone and Sentinel: one pipeline per batch of calls, `pipelines` at once.

    Written from the loop callback that gathered the batch, and answered from
    the connection's `data_received`: a call costs its caller two loop turns
    (one to gather, one to wake), not a task's. Only opening a connection
    takes a task."""

    def __init__(self, client: Redis, *, pipelines: int) -> None:
        if pipelines < 1:
            raise ValueError("pipelines must be at least 1")
        super().__init__(client)
        self.pool = client.connection_pool
        self.pipelines = pipelines
        self.in_flight = 0
        self.offset = ClockOffset()
        self._pending: list[_Call] = []
        self._scheduled = False
        # Our connections not in a pipeline now (at most `pipelines` in all),
        # and every one open, to close them all.
        self._idle: list[_Wire] = []
        self._wires: set[_Wire] = set()
        self._closed = False
        self.timeout_s: float = (
            client.connection_pool.connection_kwargs.get("socket_timeout") or 2.0
        )

    def _enqueue(self, call: _Call) -> None:
        self._check_up()
        self.calls += 1
        self._bound(call)
        self._pending.append(call)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._closed:
            self._fail_pending()
            return
        while self._pending and self.in_flight < self.pipelines:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self.in_flight += 1
            if self._idle:
                self._write(self._idle.pop(), batch)
            else:
                self._spawn(self._open_then_write(batch))

    async def _open_then_write(self, batch: list[_Call]) -> None:
        try:
            wire = await self._open()
        except BaseException as exc:
            self._done(None, batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        wire.on_lost = self._forget
        self._wires.add(wire)
        self._write(wire, batch)

    def _forget(self, wire: _Wire) -> None:
        """A connection closed (by Redis, or a failure): never used again. One
        that closed while idle (Redis' `timeout`, a restart) fails no call."""
        self._wires.discard(wire)
        if wire in self._idle:
            self._idle.remove(wire)

    def _write(self, wire: _Wire, batch: list[_Call]) -> None:
        """Write `batch` at once on `wire`; `_answered` gets the replies.

        Not redis-py's Pipeline, nor its per-command `read_response`: each would
        cost several times the CPU of the call itself here (a timeout context
        per reply, retries we turned off, observability hooks, reply callbacks).
        The deadlines count from this write (a new connection may have taken a
        while to open)."""
        written_us = _now_us()
        sampling = self.offset.due(written_us)
        packed: list[Sequence[Arg]] = [("TIME",)] if sampling else []
        packed += self._resolve_all([c.args for c in batch], written_us)
        self.round_trips += 1
        wire.send(
            packed, self.timeout_s,
            lambda replies: self._answered(wire, batch, replies, written_us if sampling else None),
        )  # fmt: skip

    def _resolve_all(
        self, commands: Sequence[Sequence[Arg | Deadline]], written_us: int
    ) -> list[list[Arg]]:
        offset = self.offset.estimate()
        at_us = None if offset is None else written_us + offset
        return [_resolved(args, at_us) for args in commands]

    def _answered(
        self,
        wire: _Wire,
        batch: list[_Call],
        replies: list[Any] | Exception,
        sampled_at: int | None,
    ) -> None:
        if isinstance(replies, Exception):
            self._done(wire, batch, replies)
            return
        if sampled_at is not None:
            head, replies = replies[0], replies[1:]
            if not isinstance(head, Exception):
                self.offset.sample(sampled_at, int(head[0]) * 1_000_000 + int(head[1]))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if not missing:
            self._done(wire, batch, replies)
            return
        # NOSCRIPT: the script did not run, so sending it whole cannot apply it twice.
        again = self._resolve_all(
            [("EVAL", batch[i].source or "", *batch[i].args[2:]) for i in missing], _now_us()
        )
        self.round_trips += 1
        wire.send(
            again, self.timeout_s,
            lambda sent: self._resent(wire, batch, replies, missing, sent),
        )  # fmt: skip

    def _resent(
        self,
        wire: _Wire,
        batch: list[_Call],
        replies: list[Any],
        missing: list[int],
        sent: list[Any] | Exception,
    ) -> None:
        if isinstance(sent, Exception):
            self._done(wire, batch, sent)
            return
        for i, reply in zip(missing, sent, strict=True):
            replies[i] = reply
        self._done(wire, batch, replies)

    def _done(
        self, wire: _Wire | None, batch: list[_Call], replies: list[Any] | BaseException
    ) -> None:
        """`batch` answered (or failed): its calls get their replies, its
        connection goes back idle (or closed), and the next batch goes."""
        self.in_flight -= 1
        if isinstance(replies, BaseException):
            error = replies if isinstance(replies, Exception) else RedisDown("closed")
            if wire is not None:
                wire.fail(error)  # closed, and forgotten (`_forget`)
            if isinstance(replies, Exception):
                self._failed(replies)
            for call in batch:
                _deliver(call, error)
        else:
            assert wire is not None
            self._idle.append(wire)
            for call, reply in zip(batch, replies, strict=True):
                _deliver(call, reply)
        if self.down:
            self._fail_pending()
        elif self._pending:
            self._flush()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, []
        for call in pending:
            if not call.future.done():
                call.future.set_exception(RedisDown("Redis failed and has not answered since"))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "connections": len(self._wires)}

    async def _open(self) -> _Wire:
        """A new connection, its handshake (AUTH, SELECT, HELLO; on Sentinel,
        the master's address) made by redis-py's own connection class; it is
        ours, not the pool's, from then on."""
        pool = self.pool
        connection = pool.connection_class(**pool.connection_kwargs)
        await connection.connect()  # type: ignore[no-untyped-call]
        return _Wire.take_over(connection)

    async def aclose(self) -> None:
        # The wires first: a batch in flight then fails as closed, not later
        # as a timeout that would mark Redis down and start a recheck.
        self._closed = True
        wires, self._wires, self._idle = self._wires, set(), []
        for wire in wires:
            wire.fail(RedisDown("the caller closed"))
        await super().aclose()


Answer = Callable[[list[Any] | Exception], None]


@attrs.define(eq=False)
class _Batch:
    expected: int
    answer: Answer
    timer: asyncio.TimerHandle
    replies: list[Any] = attrs.field(factory=list)


class _Wire(asyncio.Protocol):
    """A connection whose replies hiredis reads as they arrive, a batch at once.

    Error replies become redis-py's exceptions (`NoScriptError`, `ResponseError`,
    ...), as its parser would make them; READONLY (a Sentinel master demoted
    under us) fails the connection, as redis-py's Sentinel connection does, so
    the next one asks the Sentinels again. A batch not wholly answered within
    its timeout fails the connection too: a reply read after that could not
    be told from the next batch's."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        # Kept: a StreamWriter closes its transport when collected.
        self.writer = writer
        self.transport = cast(asyncio.Transport, writer.transport)
        self.reader = hiredis.Reader()
        self.waiting: deque[_Batch] = deque()
        self.lost: Exception | None = None
        # Told once, when the connection closes.
        self.on_lost: Callable[[_Wire], None] | None = None

    @classmethod
    def take_over(cls, connection: Any) -> _Wire:
        # The stream redis-py opened, handshake done and nothing left unread;
        # the connection object forgets it (so it neither reads nor closes it).
        writer: asyncio.StreamWriter = connection._writer
        connection._reader = connection._writer = None
        wire = cls(writer)
        wire.transport.set_protocol(wire)
        return wire

    def send(self, commands: Sequence[Sequence[Arg]], timeout_s: float, answer: Answer) -> None:
        """Write `commands`; `answer` gets their replies, or the error that
        ended the connection first (at once, if it already had)."""
        if self.lost is not None:
            answer(self.lost)
            return
        pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]
        try:
            data = b"".join(pack(tuple(c)) for c in commands)
        except Exception as exc:  # an argument hiredis cannot send: nothing written
            answer(exc)
            return
        timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out, timeout_s)
        self.waiting.append(_Batch(len(commands), answer, timer))
        try:
            self.transport.write(data)
        except Exception as exc:  # closing, its connection_lost not yet run
            self.fail(RedisConnectionError(f"connection lost ({type(exc).__name__})"))

    def _timed_out(self, timeout_s: float) -> None:
        self.fail(RedisTimeoutError(f"Redis did not answer within {timeout_s:g} s"))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while waiting:
            reply = reader.gets()
            if reply is False:
                return
            if isinstance(reply, hiredis.ReplyError):
                reply = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
                if isinstance(reply, ReadOnlyError):
                    self.fail(RedisConnectionError("the master is now a replica"))
                    return
            batch = waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                waiting.popleft()
                batch.timer.cancel()
                try:
                    batch.answer(batch.replies)
                except Exception:
                    log.exception("redis replies not handled")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            RedisConnectionError(
                "Redis closed the connection"
                if exc is None
                else f"connection lost ({type(exc).__name__})"
            )
        )

    def fail(self, error: Exception) -> None:
        """Close the connection; the batches waiting on it get `error`."""
        if self.lost is None:
            self.lost = error
        self.transport.close()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)
        waiting, self.waiting = self.waiting, deque()
        for batch in waiting:
            batch.timer.cancel()
            try:
                batch.answer(error)
            except Exception:
                log.exception("redis failure not handled")


class Direct(_Base):
    """Cluster: each call on its own (EVALSHA, EVAL where the node lacks the
    script), at most `limit` at once; a deadline is sent as '' (no one clock)."""

    def __init__(self, client: RedisClient, *, pipelines: int) -> None:
        if pipelines < 1:
            raise ValueError("pipelines must be at least 1")
        super().__init__(client)
        self.limit = pipelines * CLUSTER_CALLS_PER_PIPELINE
        self._slots = asyncio.Semaphore(self.limit)

    def _enqueue(self, call: _Call) -> None:
        self._check_up()
        self.calls += 1
        self._bound(call)
        self._spawn(self._send(call))

    async def _send(self, call: _Call) -> None:
        async with self._slots:
            args = _resolved(call.args, None)
            # No "down" here: a lost master costs only its own slots' calls.
            try:
                self.round_trips += 1
                try:
                    reply = await self.client.execute_command(*args)
                except NoScriptError:
                    reply = await self.client.execute_command("EVAL", call.source or "", *args[2:])
            except Exception as exc:
                _deliver(call, exc)
                return
            _deliver(call, reply)


def calls_for(client: RedisClient, *, pipelines: int) -> Calls:
    """The request-path caller for `client`."""
    if isinstance(client, RedisCluster):
        return Direct(client, pipelines=pipelines)
    return Pipelined(client, pipelines=pipelines)
