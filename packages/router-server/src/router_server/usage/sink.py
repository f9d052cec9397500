"""Usage accounting's services to the request pipeline: idempotency and replays.

The pipeline claims a request's idempotency key after validation and before
admission (`start_claim`: 409 or 422, a stored answer to replay, or a claim
the request then holds); the request's `Exchange` writes its one usage record and
settles the claim (`start_settle_claim`) when it finishes. Each authenticated
request gets exactly one usage record, appended to the spool before the
answer leaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any

import anyio
import attrs
from starlette.responses import Response

from router_core.accounting import idempotency as idem
from router_core.config import IdempotencySettings
from router_core.config_enums import StateStoreKind
from router_core.problems import Catalog, DependencyError
from router_core.requests import InferenceRequest
from router_server.state.errors import StoreUnavailable
from router_server.usage.idempotency_store import IdempotencyStore
from router_server.usage.recorder import Recorder
from router_server.usage.trace import Claim, UsageTrace


def replayed(stored: idem.StoredResponse) -> Response:
    """A stored answer, sent again to a retry of its request."""
    headers = {**dict(stored.headers), "idempotent-replayed": "true"}
    return Response(stored.body, stored.status, headers, media_type=stored.content_type)


def has_key(inference: InferenceRequest, headers: Mapping[str, str]) -> bool:
    """Whether the request carries an idempotency key (its own `request_id`,
    or an Idempotency-Key header), so its answer is claimed and kept."""
    return inference.request_id is not None or "idempotency-key" in headers


@attrs.define
class UsageSink:
    """Keeps no config: every setting a request needs comes from the config it
    was accepted under."""

    recorder: Recorder
    store: IdempotencyStore
    # Which store was opened at start-up (`state.store` takes effect on restart).
    store_kind: StateStoreKind
    idempotency_failures: int = 0

    def start_claim(
        self, trace: UsageTrace, headers: Mapping[str, str], settings: IdempotencySettings
    ) -> Coroutine[Any, Any, Claim | idem.StoredResponse] | None:
        """None without an idempotency key. Else the claim is under way when
        this returns (`IdempotencyStore.start_claim`: beside the limits'
        admission), and the coroutine, which must be awaited, gives the claim
        this request now holds or the stored answer to replay to it, or raises
        409, 422, 503. A malformed key raises 422 here."""
        inference, principal = trace.inference, trace.principal
        assert inference is not None
        assert principal is not None
        if not has_key(inference, headers):
            return None
        key = inference.request_id
        if key is None:
            key = idem.check_key(headers["idempotency-key"])
        trace.client_request_id = key
        claim = Claim(
            key,
            idem.scope_key(principal.organization, key),
            idem.fingerprint(trace.route, [inference.operation.value, inference.body]),
            uuid.uuid4().hex,
        )
        existing = self.store.start_claim(
            claim.scope, idem.Entry(claim.fingerprint, claim.owner), settings.in_flight_timeout_s
        )
        return self._decided(claim, existing)

    async def _decided(
        self, claim: Claim, claiming: Awaitable[idem.Entry | None]
    ) -> Claim | idem.StoredResponse:
        key = claim.key
        try:
            existing = await claiming
        except StoreUnavailable as exc:
            self.idempotency_failures += 1
            raise DependencyError(
                Catalog.IDEMPOTENCY_UNAVAILABLE,
                "The idempotency key cannot be checked right now; retry shortly.",
                headers={"retry-after": "1"},
            ) from exc
        verdict = idem.decide(existing, claim.fingerprint)
        if verdict is idem.Verdict.PROCEED:
            return claim
        if verdict is idem.Verdict.REPLAY:
            assert existing is not None
            assert existing.response is not None
            return existing.response
        raise idem.refusal(verdict, key)

    def start_settle_claim(
        self, claim: Claim, stored: idem.StoredResponse | None, settings: IdempotencySettings
    ) -> Coroutine[Any, Any, None]:
        """Keep the answer for retries (or give the key back): under way when this
        returns (beside the limits' settlement); the coroutine, which must be
        awaited, never raises."""
        if stored is not None and len(stored.body) <= settings.max_body_bytes:
            entry = idem.Entry(claim.fingerprint, claim.owner, stored)
            return self._settled(
                self.store.start_complete(claim.scope, entry, settings.retention_s)
            )
        return self._settled(self.store.start_release(claim.scope, claim.owner))

    async def _settled(self, settling: Awaitable[None]) -> None:
        try:
            await settling
        except StoreUnavailable as exc:
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
