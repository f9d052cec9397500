"""The one error every store raises when it cannot answer: `StoreUnavailable`.

Which store failed decides the problem a client sees (503 `limits_unavailable`,
`idempotency_unavailable`, ...), and, for limits, the failure policy applied.
"""

from __future__ import annotations

import enum

from router_core.problems import Catalog, DependencyError, Problem


class Store(enum.StrEnum):
    """The stores of the state layer."""

    LIMITS = "limits"
    IDEMPOTENCY = "idempotency"
    KEYS = "keys"
    NONCES = "nonces"
    OVERRIDES = "overrides"
    # Stored OpenAI Responses (previous_response_id, GET /v1/responses/{id}).
    RESPONSES = "responses"
    # The embedded usage ledger: fed from the spool, never on a request's path.
    LEDGER = "ledger"


# The detail of the StoreUnavailable both limit stores raise for an admission
# that ran after its deadline (and so wrote nothing).
RAN_LATE = "limit store admit: ran after its deadline"

_PROBLEMS: dict[Store, Problem] = {
    Store.LIMITS: Catalog.LIMITS_UNAVAILABLE,
    Store.IDEMPOTENCY: Catalog.IDEMPOTENCY_UNAVAILABLE,
    Store.KEYS: Catalog.KEYS_UNAVAILABLE,
    Store.NONCES: Catalog.CREDENTIALS_UNAVAILABLE,
    Store.OVERRIDES: Catalog.OVERRIDES_UNAVAILABLE,
    Store.RESPONSES: Catalog.RESPONSES_UNAVAILABLE,
    Store.LEDGER: Catalog.INTERNAL_ERROR,  # no client waits on the ledger
}


class StoreUnavailable(DependencyError):
    """`store` did not answer (down, too slow, or its file unreadable); `detail`
    says what was asked and what went wrong, never a credential."""

    def __init__(self, store: Store, detail: str) -> None:
        super().__init__(_PROBLEMS[store], detail)
        self.store = store
