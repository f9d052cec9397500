"""Sending an embeddings request as its provider's calls, and answering as one backend.

Rules:
- The calls (`router_core.protocols.embeddings_over_providers.calls`) go to
  the backend concurrently, at most `FAN_OUT` at a time per request: a list
  of texts to Titan is one InvokeModel call per text, and a request of a
  thousand texts must not take a thousand of the backend's connections.
  Each call is signed or authenticated on its own, as any call is.
- To the dispatcher the calls are one attempt on one backend, answered by
  one response: 200 with every call's answer in order
  (`embeddings_over_providers.combined`) when all succeed, else the first
  failing call's own status, headers and body, so its 429 or 503 (and
  Retry-After) fails the request over exactly as a single call's would. The
  calls still running are cancelled then. A transport failure of any call
  is that attempt's failure (`BackendFailure`).
- A 2xx call whose body is not JSON is kept as null: the translation back
  refuses it as a backend error.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx
import orjson

from router_core.protocols import embeddings_over_providers as embeddings
from router_server.backends import BackendClient, BackendFailure

# Calls in flight at once for one request.
FAN_OUT = 4
# What a failed call's answer keeps: what failover reads (its body was decoded).
_KEPT = frozenset({"content-type", "retry-after", "retry-after-ms", "x-amzn-errortype"})


async def send_calls(
    client: BackendClient,
    family: embeddings.Family,
    calls: Sequence[embeddings.EmbedCall],
    model: str,
) -> httpx.Response:
    """Every call's answer as one response (see the rules)."""
    answers: list[object] = [None] * len(calls)
    failed: list[httpx.Response] = []
    broken: list[BackendFailure] = []
    limiter = anyio.CapacityLimiter(FAN_OUT)

    async def one(index: int, call: embeddings.EmbedCall, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                response = await client.open(client.call_path(call.method, model), call.body)
                raw = await client.read(response)
            except BackendFailure as failure:
                broken.append(failure)
                scope.cancel()
                return
        if not 200 <= response.status_code < 300:
            kept = {k: v for k, v in response.headers.items() if k.lower() in _KEPT}
            failed.append(httpx.Response(response.status_code, headers=kept, content=raw))
            scope.cancel()
            return
        try:
            answers[index] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answers[index] = None

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(one, index, call, group.cancel_scope)
    if broken:
        raise broken[0]
    if failed:
        return failed[0]
    body = orjson.dumps(embeddings.combined(family, answers))
    return httpx.Response(200, headers={"content-type": "application/json"}, content=body)
