"""What the pipeline learns about one request, collected for its usage record
(the request's `Exchange` writes it)."""

from __future__ import annotations

import attrs

from router_core.auth import Principal
from router_core.config import RouterConfig
from router_core.requests import InferenceRequest


@attrs.frozen
class Claim:
    """An idempotency key this request holds."""

    key: str
    scope: str
    fingerprint: str
    owner: str


@attrs.frozen
class Unrecorded:
    """A request answered without a usage record: refused before authentication
    (no organization to charge), or before anything was accounted (a full spool)."""

    route: str
    status: int
    # The problem code of the answer.
    code: str | None
    seconds: float
    organization: str | None = None


@attrs.define(eq=False)
class UsageTrace:
    request_id: str
    route: str
    # perf_counter() at accept, for latency; wall-clock µs for the record.
    started: float
    started_at_us: int
    # The config in force when the request was accepted: its record is priced,
    # and its idempotency key kept, by this one even if a reload comes first.
    config: RouterConfig
    principal: Principal | None = None
    inference: InferenceRequest | None = None
    # The caller's own id: /v1/inference's request_id, or the Idempotency-Key.
    client_request_id: str | None = None
    # perf_counter() when a stream's first event went out.
    first_byte: float | None = None
