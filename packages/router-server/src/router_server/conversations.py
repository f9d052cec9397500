"""OpenAI Responses' conversation state, kept by the router for any replica.

Rules:
- The router, not the backend, keeps every response it served with
  `store` not false: the response object and the whole conversation up to it
  (its input items, history included, then its output items), per
  organization, for `responses.retention_s`, in the state layer (SQLite
  under `state.dir`, or Redis shared by every replica).
- `previous_response_id` is resolved here, before limits: the request's
  `input` becomes the stored conversation followed by its own input, so the
  limits see the whole prompt, and any backend (native or translated, on any
  replica) gets the conversation whole. An id that is not the caller's
  organization's (never stored, expired, deleted, another tenant's) is 404
  `response_not_found`: one organization can never read another's.
- Each stored response names its conversation: the id of the conversation's
  first response, the same for every turn (`expand` returns it), so that
  affinity can pin a conversation's turns to one backend.
- A response that cannot be kept (the store down or the conversation over
  `responses.max_bytes`) is still answered; it is counted (`not_kept`) and
  logged, and a later `previous_response_id` to it is 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from router_core.config import ResponsesSettings
from router_core.problems import Catalog, ClientError
from router_core.protocols import responses
from router_core.requests import InferenceRequest
from router_server.state.errors import StoreUnavailable
from router_server.state.responses import ResponseStore, StoredResponse, TooLarge

log = logging.getLogger("router.responses")


def _not_found(response_id: str, param: str | None = None) -> ClientError:
    return ClientError(
        Catalog.RESPONSE_NOT_FOUND,
        f"No stored response {response_id!r}: it was never stored (store: false), "
        "has expired or was deleted, or belongs to another organization.",
        param=param,
    )


@attrs.define
class Conversations:
    store: ResponseStore
    settings: Callable[[], ResponsesSettings]
    clock: Callable[[], float]
    kept: int = 0
    not_kept: int = 0

    async def expand(
        self, organization: str, request: InferenceRequest
    ) -> tuple[InferenceRequest, str | None]:
        """`request` with its `previous_response_id`'s conversation before its
        input, and that conversation's id (None: a request that starts one)."""
        previous = request.body.get("previous_response_id")
        if not isinstance(previous, str):
            return request, None
        stored = await self.store.get(organization, previous)
        if stored is None:
            raise _not_found(previous, "previous_response_id")
        body = {**responses.expand(request.body, stored.items), "previous_response_id": previous}
        # A response kept before conversations were named starts its own.
        return attrs.evolve(request, body=body), stored.conversation or previous

    async def keep(
        self,
        organization: str,
        request: InferenceRequest,
        response: Mapping[str, Any],
        conversation: str | None = None,
    ) -> None:
        """Keep `response` (answered to `request`, already expanded, in
        `conversation`: None when it starts one) for later turns."""
        if request.body.get("store") is False or not isinstance(response.get("id"), str):
            return
        items = [*responses.input_items(request.body), *responses.output_items(response)]
        stored = StoredResponse(
            dict(response), items, int(self.clock()), conversation or response["id"]
        )
        try:
            await self.store.put(organization, response["id"], stored, self.settings().retention_s)
        except (StoreUnavailable, TooLarge) as exc:
            self.not_kept += 1
            log.warning(
                "response not kept",
                extra={"organization": organization, "response_id": response["id"],
                       "reason": str(exc)},
            )  # fmt: skip
            return
        self.kept += 1

    async def get(self, organization: str, response_id: str) -> StoredResponse:
        stored = await self.store.get(organization, response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored

    async def delete(self, organization: str, response_id: str) -> None:
        if not await self.store.delete(organization, response_id):
            raise _not_found(response_id)

    def status(self) -> dict[str, int]:
        return {"kept": self.kept, "not_kept": self.not_kept}


def input_items_page(stored: StoredResponse) -> dict[str, Any]:
    """`GET /v1/responses/{id}/input_items`: the conversation before the response's output."""
    output = responses.output_items(stored.response)
    items = stored.items[: len(stored.items) - len(output)]
    return {
        "object": "list",
        "data": items,
        "first_id": items[0].get("id") if items else None,
        "last_id": items[-1].get("id") if items else None,
        "has_more": False,
    }
