"""The pipeline's one door to usage accounting.

`serve()` calls, in order: `trace()` when a request arrives; `claim()` after
validation and before admission (spool capacity and idempotency: 503, 409,
422, or a stored answer to replay); `answered()` with the response it is
about to return (or `relay()` for a stream, which records when the stream
ends); and `abandoned()` in its `finally`, which records a request that was
cancelled or crashed before any of those. Each authenticated request gets
exactly one usage record, appended to the spool before the answer leaves.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import attrs
from starlette.responses import Response

from router_core.accounting import idempotency as idem
from router_core.accounting.records import (
    Outcome,
    TokenCounts,
    completion_chars,
    estimate_tokens,
    estimated_counts,
    outcome_of,
    token_counts,
)
from router_core.config import IdempotencySettings, RouterConfig
from router_core.config_enums import SharedStoreKind
from router_core.problems import Catalog, DependencyError, RouterError
from router_server.dispatch import Opened
from router_server.forwarding import RelayResponse, StreamTally
from router_server.usage.idempotency_store import IdempotencyStore, IdempotencyUnavailable
from router_server.usage.recorder import Recorder
from router_server.usage.trace import Claim, UsageTrace

# The status a client that went away is recorded with (nginx's convention).
CLIENT_CLOSED = 499


def now_us() -> int:
    return time.time_ns() // 1000


@attrs.define
class UsageSink:
    """Keeps no config: every setting a request needs comes from `trace.config`,
    the config it was accepted under."""

    recorder: Recorder
    store: IdempotencyStore
    # Which store was opened at start-up (`idempotency.store` takes effect on restart).
    store_kind: SharedStoreKind
    idempotency_failures: int = 0

    def trace(
        self, request_id: str, route: str, started: float, config: RouterConfig
    ) -> UsageTrace:
        return UsageTrace(request_id, route, started, now_us(), config)

    # -- before admission --------------------------------------------------------

    async def claim(self, trace: UsageTrace, headers: Mapping[str, str]) -> Response | None:
        """Refuse (503 spool full; 409, 422 idempotency) or replay, or None to proceed."""
        spool = self.recorder.spool
        if not spool.accepting:
            spool.refused += 1
            trace.recorded = True  # refused before anything was done: nothing to account
            raise DependencyError(
                Catalog.USAGE_SPOOL_FULL,
                "Usage records cannot be delivered right now and the local spool is full; "
                "the request was not served. Retry later.",
                headers={"retry-after": "5"},
            )
        inference, principal = trace.inference, trace.principal
        assert inference is not None
        assert principal is not None
        key = inference.request_id
        if key is None:
            header = headers.get("idempotency-key")
            if header is None:
                return None
            key = idem.check_key(header)
        trace.client_request_id = key
        claim = Claim(
            key,
            idem.scope_key(principal.organization, key),
            idem.fingerprint(trace.route, [inference.operation.value, inference.body]),
            uuid.uuid4().hex,
        )
        settings = trace.config.idempotency
        try:
            existing = await self.store.claim(
                claim.scope, idem.Entry(claim.fingerprint, claim.owner),
                settings.in_flight_timeout_s,
            )  # fmt: skip
        except IdempotencyUnavailable as exc:
            self.idempotency_failures += 1
            raise DependencyError(
                Catalog.IDEMPOTENCY_UNAVAILABLE,
                "The idempotency key cannot be checked right now; retry shortly.",
                headers={"retry-after": "1"},
            ) from exc
        verdict = idem.decide(existing, claim.fingerprint)
        if verdict is idem.Verdict.PROCEED:
            trace.claim = claim
            if inference.stream:
                trace.captured = []
            return None
        if verdict is idem.Verdict.REPLAY:
            assert existing is not None
            assert existing.response is not None
            return await self._replay(trace, existing.response)
        raise idem.refusal(verdict, key)

    async def _replay(self, trace: UsageTrace, stored: idem.StoredResponse) -> Response:
        await self.recorder.usage(
            trace, stored.status, Outcome.REPLAYED, None, TokenCounts(),
            backend=dict(stored.headers).get("x-router-backend"),
        )  # fmt: skip
        headers = {**dict(stored.headers), "idempotent-replayed": "true"}
        return Response(stored.body, stored.status, headers, media_type=stored.content_type)

    # -- answers -----------------------------------------------------------------

    async def answered(
        self,
        trace: UsageTrace,
        response: Response,
        *,
        opened: Opened | None = None,
        body: Mapping[str, Any] | None = None,
        error: RouterError | None = None,
    ) -> None:
        """Record a request answered with `response` (before it is sent)."""
        if trace.recorded or trace.principal is None:
            return
        code = error.problem.code if error is not None else None
        counts = TokenCounts()
        if body is not None and trace.inference is not None:
            counts = token_counts(
                trace.inference.body, body.get("usage"), estimate_tokens(completion_chars(body))
            )
        await self.recorder.usage(
            trace, response.status_code, outcome_of(code), code, counts,
            backend=opened.candidate.backend if opened else None,
            backend_model=opened.candidate.model if opened else None,
        )  # fmt: skip
        if error is not None and "limit_type" in error.extra:
            await self.recorder.audit(trace, "limit_denied", {"code": code, **error.extra})
        if trace.claim is not None:
            stored = None
            if idem.storable(response.status_code):
                stored = idem.StoredResponse(
                    response.status_code,
                    response.headers.get("content-type", "application/json"),
                    tuple((k, v) for k, v in response.headers.items() if k == "x-router-backend"),
                    bytes(memoryview(response.body)),
                )
            await self._settle_claim(trace.claim, stored, trace.config.idempotency)

    def relay(self, trace: UsageTrace, response: RelayResponse) -> RelayResponse:
        """Time a stream's first event, keep its events for replay, record it when it ends."""
        trace.streaming = True
        inner = response.body_iterator
        limit = trace.config.idempotency.max_body_bytes

        async def observed() -> AsyncIterator[Any]:
            async for chunk in inner:
                if trace.first_byte is None:
                    trace.first_byte = time.perf_counter()
                if trace.captured is not None:
                    trace.captured_bytes += len(chunk)
                    if trace.captured_bytes <= limit:
                        trace.captured.append(
                            chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                        )
                    else:
                        trace.captured = None
                yield chunk

        response.body_iterator = observed()
        on_close = response.on_close

        async def closed(tally: StreamTally) -> None:
            try:
                await on_close(tally)
            finally:
                await self._stream_ended(trace, response.opened, tally)

        response.on_close = closed
        return response

    async def _stream_ended(self, trace: UsageTrace, opened: Opened, tally: StreamTally) -> None:
        assert trace.inference is not None
        counts = token_counts(trace.inference.body, tally.usage, tally.content_events)
        if tally.done:
            outcome, code, status = Outcome.SUCCESS, None, 200
        elif tally.broken:
            outcome, code, status = Outcome.BACKEND_ERROR, Catalog.BACKEND_ERROR.code, 200
        else:
            outcome, code, status = Outcome.CLIENT_CANCELLED, None, CLIENT_CLOSED
        await self.recorder.usage(
            trace, status, outcome, code, counts,
            backend=opened.candidate.backend, backend_model=opened.candidate.model,
        )  # fmt: skip
        if trace.claim is not None:
            stored = None
            if tally.done and trace.captured is not None:
                stored = idem.StoredResponse(
                    200, "text/event-stream",
                    (("x-router-backend", opened.candidate.backend),),
                    b"".join(trace.captured),
                )  # fmt: skip
            await self._settle_claim(trace.claim, stored, trace.config.idempotency)

    async def abandoned(self, trace: UsageTrace) -> None:
        """In the pipeline's `finally`: record a request that ended without an answer."""
        if trace.recorded or trace.streaming or trace.principal is None:
            return
        exc = sys.exc_info()[1]
        cancelled = exc is None or isinstance(exc, anyio.get_cancelled_exc_class())
        with anyio.CancelScope(shield=True):
            counts = TokenCounts()
            if trace.inference is not None:
                counts = estimated_counts(trace.inference.body, 0)
            if cancelled:
                await self.recorder.usage(
                    trace, CLIENT_CLOSED, Outcome.CLIENT_CANCELLED, None, counts
                )
            else:
                await self.recorder.usage(
                    trace, 500, Outcome.BACKEND_ERROR, Catalog.INTERNAL_ERROR.code, counts
                )
            if trace.claim is not None:
                await self._settle_claim(trace.claim, None, trace.config.idempotency)

    async def _settle_claim(
        self, claim: Claim, stored: idem.StoredResponse | None, settings: IdempotencySettings
    ) -> None:
        try:
            if stored is not None and len(stored.body) <= settings.max_body_bytes:
                entry = idem.Entry(claim.fingerprint, claim.owner, stored)
                await self.store.complete(claim.scope, entry, settings.retention_s)
            else:
                await self.store.release(claim.scope, claim.owner)
        except IdempotencyUnavailable as exc:
            # The claim then lapses after in_flight_timeout_s; retries get 409 until then.
            self.idempotency_failures += 1
            self.recorder.log.error("idempotency store failed", extra={"error": str(exc)})

    async def run(self) -> None:
        await self.recorder.run()

    async def drain(self, timeout_s: float = 5.0) -> None:
        await self.recorder.drain(timeout_s)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.recorder.aclose()
            await self.store.aclose()

    def status(self) -> dict[str, Any]:
        return {
            **self.recorder.status(),
            "idempotency": {
                "store": self.store_kind,
                "failures": self.idempotency_failures,
            },
        }
