"""Limit state in Redis: one Lua script per admission, atomic across every scope.

Rules:
- `RedisLimitStore` behaves exactly as `router_core.limits.ledger.MemoryLedger`
  (the contract and equivalence tests in tests/system/limits say so): one
  EVALSHA of lua/admit.lua decides a whole request with the math of
  router_core.limits, repeated in Lua, reaps the due holds of its windows
  and writes its states and holds; one EVALSHA of lua/settle.lua per settle
  batch (per hash tag) settles holds; `reap` SCANs every master for the reap
  indexes and runs lua/reap.lua on each. Each script is sent after
  lua/holds.lua, the functions they share.
- An admission with a deadline that the script runs after (on its clock)
  writes nothing and raises `StoreUnavailable` ("ran after its deadline"):
  the caller gave up on it, so it is never charged.
- The clock is the Redis server's (`TIME` inside the script), so replica
  clocks don't matter. An explicit `now_us` is for tests; it must not lie in
  the past of the server's clock, or the keys it writes expire at once.
- Keys: a spec's typed key is spelled by `ledger.storage_key`, as the
  memory ledger spells it, and only here, at the store's edge.
  `<prefix>{<tag>}:s:<state key>` holds a state (a TAT as a hash
  {us, frac}, a quota as an integer string, a budget as a hash {committed,
  reserved}); `<prefix>{<tag>}:h:<state key>` is a hash of the open holds on
  that window, request id -> amount, `:i:` the same holds in a sorted set by
  reap time, and `:r:` a hash of the reaped holds (router_core.limits.holds
  has the rules). The tag is the organization of a spec
  key shaped `org:<org>:...`, so every key of one request lives in one Redis
  Cluster slot; a key without an organization is its own tag, and a request
  whose keys span tags is refused with ValueError. The scripts build the
  window suffix `:<window id>` from the server's clock: the keys they touch
  but cannot declare share the declared keys' slot.
- Every key expires (PEXPIREAT, rounded up to the ms): a TAT once it is in
  the past, a window's state and holds at the window's end, its reaped holds
  7 days after the latest reap or at the window's end; only a `total`
  window's state never expires, and its holds and reap index live
  `total_hold_ttl_s` past the latest reap time among them (time for a
  reaper to come by).
- With `calls` (the state layer's coalescing caller, `state.batch`), the
  scripts of concurrent requests share pipelines, and a decision carries a
  deadline (`budget_s` after it is written, on the store's clock) past which
  the script charges nothing: the decision's time budget is measured on the
  store's side, not on a router loop that may read the reply late.
- Each call waits at most `timeout_s` (the router's side: the store is down
  past it); any Redis failure (refused, timed out, READONLY, LOADING, ...) is
  raised as `StoreUnavailable`, whose message names the operation and the
  failure and never the URL. A decision whose caller went (cancelled, or
  timed out) is still answered to this store, which releases its holds (a
  settlement of 0): nothing a caller never saw stays reserved.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import attrs
from redis.exceptions import RedisError, ResponseError

from router_core.limits.admission import (
    Decision,
    Denial,
    HeadersInfo,
    LimitKind,
    LimitType,
    RateInfo,
    State,
    StateWrite,
)
from router_core.limits.budget import BudgetState
from router_core.limits.gcra import Tat
from router_core.limits.holds import DEFAULT_HOLD_TTL_US, MAX_HOLD_TTL_US
from router_core.limits.integers import MAX_NOW_US, NEVER, US_PER_S, require_int
from router_core.limits.ledger import (
    Admission,
    Hold,
    QuotaSpec,
    RateSpec,
    Spec,
    bind,
    holds_for,
    state_key,
    storage_key,
)
from router_server.state.batch import Calls, Deadline
from router_server.state.errors import RAN_LATE, Store, StoreUnavailable
from router_server.state.redis import LuaScript, RedisClient

log = logging.getLogger("router.limits")

DEFAULT_PREFIX = "rl:"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_TOTAL_HOLD_TTL_S = 86_400.0
DEFAULT_HOLD_TTL_S = DEFAULT_HOLD_TTL_US / US_PER_S
# The scanning of every hold key is for tests, operators and the reaper, not
# the hot path.
OPEN_HOLDS_TIMEOUT_S = 10.0
# The reaper's SCAN asks for this many keys a call; reap.lua reaps at most
# REAP_BATCH holds a call, and runs again on a window while it does.
REAP_SCAN_COUNT = 1000
REAP_BATCH = 1000
# Spec layouts kept (a config has a bounded set of limits, but each OIDC user
# of an organization with user limits has its own): past this, started afresh.
MAX_LAYOUTS = 65_536

_DUPLICATE_KEY = "DUPLICATE_KEY"
_WINDOW_SUFFIX = re.compile(r":\d+\Z")
# The reply of admit.lua: now, allowed (or _RAN_LATE), denial (index, usage,
# retry_after_s), the requests and tokens headers (index, remaining,
# reset_after_us), then (a, b, expire_at_us) per spec when allowed.
_RAN_LATE = 2
_HEADERS_AT = 5
_WRITES_AT = 11


def _script(name: str) -> str:
    return resources.files("router_server").joinpath("lua", name).read_text(encoding="utf-8")


def hash_tag(key: str) -> str:
    """The Redis Cluster hash tag of a spec key: `acme` for `org:acme:...`, else the key."""
    if key.startswith("org:"):
        org = key[4:].split(":", 1)[0]
        tag = org or key
    else:
        tag = key
    if "{" in tag or "}" in tag:
        raise ValueError(f"limit key {key!r}: braces are reserved for Redis hash tags")
    return tag


@attrs.frozen
class _Layout:
    """A spec's part of admit.lua's keys and arguments, but its cost."""

    tag: str
    state_key: str
    # The arguments before the cost, and the one after it.
    head: tuple[str | int, ...]
    space: str


class RedisLimitStore:
    """`MemoryLedger`'s semantics, shared by every replica through one Redis."""

    def __init__(
        self,
        client: RedisClient,
        *,
        calls: Calls | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        budget_s: float | None = None,
        total_hold_ttl_s: float = DEFAULT_TOTAL_HOLD_TTL_S,
        hold_ttl_s: float = DEFAULT_HOLD_TTL_S,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} must not contain braces")
        if not timeout_s > 0 or (budget_s is not None and not budget_s > 0):
            raise ValueError("timeout_s and budget_s must be positive")
        self._client = client
        self._prefix = prefix
        self._timeout_s = timeout_s
        # A decision's budget becomes its deadline on the store's clock, which
        # only the coalescing caller knows (`state.batch.Deadline`).
        self._budget_us = None if budget_s is None or calls is None else round(budget_s * 1e6)
        self._total_hold_ttl_us = _duration_us("total_hold_ttl_s", total_hold_ttl_s)
        self._hold_ttl_us = _duration_us("hold_ttl_s", hold_ttl_s)
        holds = _script("holds.lua")
        self._admit_script = LuaScript(client, holds + _script("admit.lua"), calls)
        self._settle_script = LuaScript(client, holds + _script("settle.lua"), calls)
        # The reaper is no request's: it calls Redis directly.
        self._reap_script = LuaScript(client, holds + _script("reap.lua"))
        self._layouts: dict[tuple[object, ...], _Layout] = {}
        # Admissions answered after their caller went, released since.
        self.released = 0
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> RedisClient:
        return self._client

    async def aclose(self) -> None:
        # The client is the process's one, closed by the state layer; releases
        # still under way finish first.
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def admit(
        self,
        request_id: str,
        specs: Sequence[Spec],
        now_us: int | None = None,
        *,
        deadline_us: int | None = None,
    ) -> Admission:
        """Admit `specs` all at once or deny them by the first that fails; write on admit.

        With `deadline_us` (µs since the epoch, on the server's clock), or else
        with `budget_s` and `calls` a deadline `budget_s` after the call is
        written, an admission that runs after it writes nothing and raises
        StoreUnavailable.
        """
        if now_us is not None:
            require_int("now", now_us, 0, MAX_NOW_US)
        if deadline_us is not None:
            require_int("deadline", deadline_us, 0, MAX_NOW_US)
        layouts = [self._layout(spec) for spec in specs]
        tags = {layout.tag for layout in layouts}
        if len(tags) > 1:
            raise ValueError(
                f"one request's limit keys must share one organization (Redis hash tag), "
                f"got {sorted(tags)}"
            )
        keys = [layout.state_key for layout in layouts]
        deadline: str | int | Deadline = "" if deadline_us is None else deadline_us
        if deadline_us is None and self._budget_us is not None:
            deadline = Deadline(self._budget_us)
        args: list[str | int | Deadline] = ["" if now_us is None else now_us, request_id]
        args += [self._total_hold_ttl_us, deadline, self._hold_ttl_us]
        for spec, layout in zip(specs, layouts, strict=True):
            require_int("cost", spec.cost, 0)  # the layout checked the rest
            args += layout.head
            args += (spec.cost, layout.space)

        def orphaned(reply: list[int]) -> None:
            if reply[1] != _RAN_LATE:  # (one that ran late holds nothing)
                self._release(_admission(request_id, specs, reply))

        async with self._guard("admit", timed=False):
            reply = await self._admit_script(
                keys=keys, args=args, on_orphan=orphaned, timeout_s=self._timeout_s
            )
        return _admission(request_id, specs, reply)

    def _release(self, admission: Admission) -> None:
        """Settle at 0 the holds of an admission whose caller never saw it."""
        if not admission.holds:
            return
        self.released += 1
        holds = admission.holds
        task = asyncio.get_running_loop().create_task(self._settle_quietly(holds))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _settle_quietly(self, holds: Sequence[Hold]) -> None:
        try:
            await self.settle(holds, [0] * len(holds))
        except StoreUnavailable as exc:  # the hold's lifetime ends it then
            log.warning("release failed", extra={"error": str(exc), "holds": len(holds)})

    async def settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> None:
        """Replace each open hold by its actual amount; a hold already settled is skipped."""
        await self.start_settle(holds, actuals, now_us)

    def start_settle(
        self, holds: Sequence[Hold], actuals: Sequence[int], now_us: int | None = None
    ) -> Awaitable[None]:
        """`settle`, queued in this loop turn's pipeline before this returns (beside
        the idempotency claim's end); applied when awaited. Bad input raises here."""
        if len(holds) != len(actuals):
            raise ValueError(f"{len(holds)} holds but {len(actuals)} actual amounts")
        if now_us is not None:
            require_int("now", now_us, 0, MAX_NOW_US)
        batches: dict[str, tuple[list[str], list[str | int]]] = {}
        for hold, actual in zip(holds, actuals, strict=True):
            require_int("actual", actual, 0)
            if hold.kind not in (LimitKind.QUOTA, LimitKind.BUDGET):
                raise ValueError(f"a hold is on a quota or a budget, not {hold.kind}")
            tag = self._hold_tag(hold.key)
            keys, args = batches.setdefault(tag, ([], ["" if now_us is None else now_us]))
            keys += self._window_keys(tag, hold.key)
            args += [hold.id, hold.kind.value, hold.amount, hold.expire_at_us, actual]
        replies = [
            self._settle_script.start(keys=keys, args=args, timeout_s=self._timeout_s)
            for keys, args in batches.values()
        ]
        return self._settled(replies)

    async def _settled(self, replies: list[Coroutine[Any, Any, Any]]) -> None:
        try:
            for reply in replies:
                async with self._guard("settle", timed=False):
                    await reply
        finally:
            for reply in replies:  # those not read, after a failure: sent all the same
                reply.close()

    async def reap(self, now_us: int | None = None) -> int:
        """Reap every hold past its lifetime, on every master (SCAN); returns how many.

        For a background reaper; admissions reap the windows they touch already.
        """
        if now_us is not None:
            require_int("now", now_us, 0, MAX_NOW_US)
        pattern = _glob_escape(self._prefix) + "{*}:i:*"
        async with self._guard("reap", OPEN_HOLDS_TIMEOUT_S):
            found = self._client.scan_iter(match=pattern, count=REAP_SCAN_COUNT)
            names = {name async for name in found}
        windows = [w for w in (self._indexed_window(name) for name in names) if w is not None]
        args: list[str | int] = ["" if now_us is None else now_us, REAP_BATCH]
        reaped = 0
        for tag, key in sorted(windows):
            keys = self._window_keys(tag, key)
            while True:
                async with self._guard("reap"):
                    reply = await self._reap_script(keys=keys, args=args)
                reaped += reply[1]
                if reply[1] < REAP_BATCH:
                    break
        return reaped

    async def open_holds(self) -> int:
        """How many holds are not settled yet. Scans every hold key: not for the hot path."""
        pattern = _glob_escape(self._prefix) + "{*}:h:*"
        async with self._guard("open_holds", OPEN_HOLDS_TIMEOUT_S):
            names = {name async for name in self._client.scan_iter(match=pattern, count=1000)}
            counts = [await self._client.hlen(name) for name in names]
        return sum(counts)

    async def get(self, key: str, now_us: int | None = None) -> State | None:
        """The state under a state key (`state_key(spec, now)`), for tests and operators.

        With `now_us`, a state that has expired by then is deleted and None
        returned, exactly as `MemoryLedger.get` does.
        """
        async with self._guard("get"):
            for name in self._names_for_get(key):
                state, expire_ms = await self._read(name)
                if state is None:
                    continue
                if isinstance(state, Tat):
                    expire_at = state.us + (1 if state.frac > 0 else 0)
                else:
                    expire_at = NEVER if expire_ms < 0 else expire_ms * 1000
                if now_us is not None and expire_at != NEVER and expire_at <= now_us:
                    await self._client.delete(name)
                    return None
                return state
        return None

    async def _read(self, name: str) -> tuple[State | None, int]:
        kind = await self._client.type(name)
        expire_ms = int(await self._client.pexpiretime(name))
        if kind == b"string":
            value = await self._client.get(name)
            return (None if value is None else int(value)), expire_ms
        if kind != b"hash":
            return None, expire_ms
        fields = await self._client.hgetall(name)
        if b"us" in fields:
            return Tat(int(fields[b"us"]), int(fields[b"frac"])), expire_ms
        return BudgetState(int(fields[b"committed"]), int(fields[b"reserved"])), expire_ms

    def _name(self, tag: str, space: str, key: str) -> str:
        return f"{self._prefix}{{{tag}}}:{space}:{key}"

    def _window_keys(self, tag: str, key: str) -> list[str]:
        """A window's state key, hold hash, reap index and reaped hash, in that order."""
        return [self._name(tag, space, key) for space in ("s", "h", "i", "r")]

    def _indexed_window(self, name: str | bytes) -> tuple[str, str] | None:
        """(tag, state key) of a reap index's key name, or None for another key
        the SCAN pattern matched (a brace inside a later part of some name)."""
        text = name.decode() if isinstance(name, bytes) else name
        rest = text.removeprefix(self._prefix)
        close = rest.find("}")
        if not rest.startswith("{") or rest[close + 1 : close + 4] != ":i:":
            return None
        return rest[1:close], rest[close + 4 :]

    @staticmethod
    def _hold_tag(key: str) -> str:
        # A hold is on a window: its key is the spec key plus ':<window id>'.
        return hash_tag(key if key.startswith("org:") else _WINDOW_SUFFIX.sub("", key))

    def _names_for_get(self, key: str) -> list[str]:
        if key.startswith("org:"):
            return [self._name(hash_tag(key), "s", key)]
        # Without an organization the tag is the spec key, which a window's
        # state key extends by ':<window id>': try both readings.
        names = [self._name(hash_tag(key), "s", key)]
        if _WINDOW_SUFFIX.search(key):
            names.append(self._name(self._hold_tag(key), "s", key))
        return names

    def _layout(self, spec: Spec) -> _Layout:
        """What admit.lua is sent for `spec`, but its cost: fixed by the config,
        so made once per limit (validated as MemoryLedger would) and kept."""
        static = (
            type(spec), spec.key, spec.limit,
            spec.kind if isinstance(spec, RateSpec) else spec.window,
        )  # fmt: skip
        layout = self._layouts.get(static)
        if layout is not None:
            return layout
        name = storage_key(spec.key)
        bind(spec, name, None)  # validates as MemoryLedger would
        tag = hash_tag(name)
        head: tuple[str | int, ...]
        if isinstance(spec, RateSpec):
            limit = spec.limit
            head, space = (spec.kind.value, limit.rate, limit.period_us, limit.burst), ""
        else:
            kind = "quota" if isinstance(spec, QuotaSpec) else "budget"
            head, space = (kind, spec.limit, spec.window.value, 0), f"{self._prefix}{{{tag}}}:"
        layout = _Layout(tag, self._name(tag, "s", name), head, space)
        if len(self._layouts) >= MAX_LAYOUTS:  # (users' scopes are unbounded)
            self._layouts.clear()
        self._layouts[static] = layout
        return layout

    @asynccontextmanager
    async def _guard(
        self, operation: str, timeout_s: float | None = None, *, timed: bool = True
    ) -> AsyncIterator[None]:
        """Bound the wait, and turn every Redis failure into StoreUnavailable.

        `timed=False`: the script call is given the timeout itself (one timer
        for every call in the batching caller, not one each)."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        try:
            if timed:
                async with asyncio.timeout(timeout_s):
                    yield
            else:
                yield
        except TimeoutError as exc:
            raise StoreUnavailable(
                Store.LIMITS, f"limit store {operation}: no answer within {timeout_s:g} s"
            ) from exc
        except ResponseError as exc:
            # redis-py strips the codes it maps to classes (READONLY: ReadOnlyError).
            code = str(exc).split(" ", 1)[0]
            if code == _DUPLICATE_KEY:
                raise ValueError("each limit check needs its own key") from None
            if type(exc) is not ResponseError or not code.isupper():
                code = type(exc).__name__
            raise StoreUnavailable(
                Store.LIMITS, f"limit store {operation}: Redis answered {code}"
            ) from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(
                Store.LIMITS, f"limit store {operation}: {type(exc).__name__}"
            ) from exc


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _duration_us(name: str, seconds: float) -> int:
    """`seconds` in whole µs, refused (ValueError) unless in 1 µs to MAX_HOLD_TTL_US."""
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{name} must be positive, not {seconds}")
    us = round(seconds * US_PER_S)
    require_int(name, us, 1, MAX_HOLD_TTL_US)
    return us


def _admission(request_id: str, specs: Sequence[Spec], reply: list[int]) -> Admission:
    """Rebuild, from admit.lua's reply, the Admission MemoryLedger would return."""
    now = reply[0]
    if reply[1] == _RAN_LATE:
        raise StoreUnavailable(Store.LIMITS, RAN_LATE)
    keys = [state_key(spec, now) for spec in specs]
    requests, tokens = (
        _rate_info(specs, keys, reply[at : at + 3]) for at in (_HEADERS_AT, _HEADERS_AT + 3)
    )
    headers = HeadersInfo(requests, tokens)
    if reply[1] == 0:
        index, usage, retry_after_s = reply[2] - 1, reply[3], reply[4]
        spec = specs[index]
        if isinstance(spec, RateSpec):
            kind, limit_type, limit = spec.kind, LimitType.RATE_LIMIT, spec.limit.burst
        elif isinstance(spec, QuotaSpec):
            kind, limit_type, limit = LimitKind.QUOTA, LimitType.QUOTA, spec.limit
        else:
            kind, limit_type, limit = LimitKind.BUDGET, LimitType.BUDGET, spec.limit
        denial = Denial(keys[index], kind, limit_type, usage, limit, retry_after_s, spec.key)
        return Admission(Decision(False, denial, (), headers), now)
    writes = []
    for index, spec in enumerate(specs):
        if spec.cost == 0:
            continue
        a, b, expire_at = reply[_WRITES_AT + 3 * index : _WRITES_AT + 3 * index + 3]
        state: State
        if isinstance(spec, RateSpec):
            state = Tat(a, b)
        elif isinstance(spec, QuotaSpec):
            state = a
        else:
            state = BudgetState(a, b)
        writes.append(StateWrite(keys[index], state, expire_at))
    decision = Decision(True, None, tuple(writes), headers)
    return Admission(decision, now, holds_for(request_id, specs, now))


def _rate_info(specs: Sequence[Spec], keys: list[str], fields: list[int]) -> RateInfo | None:
    index, remaining, reset_after_us = fields
    if index == 0:
        return None
    spec = specs[index - 1]
    if not isinstance(spec, RateSpec):
        raise StoreUnavailable(Store.LIMITS, "limit store admit: malformed reply")
    return RateInfo(keys[index - 1], spec.kind, spec.limit.burst, remaining, reset_after_us)


__all__: list[str] = [
    "DEFAULT_HOLD_TTL_S",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT_S",
    "RedisLimitStore",
    "hash_tag",
]
