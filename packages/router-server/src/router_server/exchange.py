"""One request's resources, and their one release path.

Rules:
- An `Exchange` is made when a request arrives and owns what the request
  takes, in the order it takes them: its in-flight slot (taken first, so an
  overloaded router refuses before any store is asked), its idempotency
  claim, its limit ticket, and (for a stream) the backend response it relays.
- `finish(ending)` gives all of them back (the limit ticket and the claim
  settled together) and then writes the usage record, once
  (later calls do nothing), shielded from cancellation: a JSON answer, an
  error, a stream's end (however it ends) and a client that went away all
  end this way. The pipeline decides the `Ending`; nothing here guesses it
  from the exception being handled.
- anyio's shield holds anyio's cancellation, not asyncio's own
  (`task.cancel()`, which hypercorn sends the requests still running past
  its graceful timeout). Such a cancel arriving while the limits settle
  puts the settlement in the outbox (replayed, applied once whether or not
  the first attempt reached the store); the record is then written and the
  cancel raised again. One arriving while the claim ends leaves the claim
  to its lease.
- The limits settle `ending.counts` and the usage record carries the same
  counts (`router_core.accounting.records.token_counts`), so they agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import anyio
import attrs

from router_core.accounting import idempotency as idem
from router_core.accounting.records import Outcome, TokenCounts
from router_core.problems import RouterError
from router_server.backpressure import Backpressure, Slot, Tenant
from router_server.dispatch import Dispatcher, Opened
from router_server.limits import LimitGate, Ticket
from router_server.runtime import Runtime
from router_server.usage.sink import UsageSink
from router_server.usage.trace import Claim, UsageTrace

# The status a client that went away is recorded with (nginx's convention).
CLIENT_CLOSED = 499


@attrs.frozen
class Ending:
    """How a request ended: what its record says and what its limits settle."""

    status: int
    outcome: Outcome
    reason: str | None = None
    counts: TokenCounts = attrs.field(factory=TokenCounts)
    # It counts against request limits (a backend did the work).
    served: bool = False
    backend: str | None = None
    backend_model: str | None = None
    # How the relayed backend failed, for its health (None: it did not).
    broken: str | None = None
    # The answer kept for an idempotent retry (None: the key is released).
    stored: idem.StoredResponse | None = None
    # The error answered, for the audit trail of limit denials.
    error: RouterError | None = None
    # False only for a request refused before anything was done (spool full).
    record: bool = True


@attrs.define(eq=False)
class Exchange:
    runtime: Runtime
    trace: UsageTrace
    usage: UsageSink
    limits: LimitGate
    dispatch: Dispatcher
    claim: Claim | None = None
    ticket: Ticket | None = None
    # A relayed stream's backend response, given back when the stream ends.
    opened: Opened | None = None
    _backpressure: Backpressure | None = None
    _slot: Slot | None = None
    _finished: bool = False

    async def enter(self, backpressure: Backpressure) -> None:
        """Take an in-flight slot for the authenticated caller (or raise 503
        overloaded); `finish` gives it back."""
        principal = self.trace.principal
        assert principal is not None
        self._slot = await backpressure.enter(Tenant.of(principal))
        self._backpressure = backpressure

    def routed(self) -> None:
        """The router's own part is done (a backend is called next): its latency
        feeds the adaptive limit."""
        if self._backpressure is not None and self._slot is not None:
            self._backpressure.routed(self._slot)

    async def finish(self, ending: Ending) -> None:
        """Release everything the request holds and write its record (once)."""
        if self._finished:
            return
        self._finished = True
        cancelled: asyncio.CancelledError | None = None
        with anyio.CancelScope(shield=True):
            try:
                if self.opened is not None:
                    self.dispatch.done(self.opened, ending.broken)
                try:
                    await self._settle(ending)
                except asyncio.CancelledError as exc:  # asyncio's own: see the rules
                    cancelled = exc
                if ending.record and self.trace.principal is not None:
                    await self._record(ending)
                else:  # no record (refused before authentication, or for a full
                    # spool); the metrics and the ops page count the answer still
                    self.usage.recorder.unrecorded(self.trace, ending.status, ending.reason)
            finally:
                if self._backpressure is not None and self._slot is not None:
                    self._backpressure.leave(self._slot)
        if cancelled is not None:
            raise cancelled

    async def _settle(self, ending: Ending) -> None:
        """Settle the limits and the idempotency claim, together: both are sent
        before either is awaited, so with Redis they share one pipeline (one
        round trip), with no task (a task, or a gather of two, cost a loop turn
        to start and another to end). Both end before the usage record is
        written: a settlement Redis refused is then in the outbox. Neither
        raises, but for asyncio's own cancel (see the rules)."""
        settling: list[Coroutine[Any, Any, None]] = []
        if self.ticket is not None:
            limits = self.limits.start_settle(self.ticket, ending.counts, ending.served)
            if limits is not None:
                settling.append(limits)
        if self.claim is not None:
            config = self.runtime.config.idempotency
            settling.append(self.usage.start_settle_claim(self.claim, ending.stored, config))
        try:
            for each in settling:
                await each
        finally:
            for each in settling:  # after a failure, those not awaited: sent all the same
                each.close()

    async def _record(self, ending: Ending) -> None:
        recorder = self.usage.recorder
        await recorder.usage(
            self.trace, ending.status, ending.outcome, ending.reason, ending.counts,
            backend=ending.backend, backend_model=ending.backend_model,
        )  # fmt: skip
        error = ending.error
        if error is not None and "limit_type" in error.extra:
            await recorder.audit(
                self.trace, "limit_denied", {"code": error.problem.code, **error.extra}
            )
