"""Admin API for managed keys: list, create, revoke, rotate (audit-logged).

A created or rotated key is in the answer once and nowhere else: the store
keeps its hash, the audit trail its id.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router_core.config_enums import Priority, is_member, not_one_of
from router_core.problems import Catalog, ClientError
from router_server.admin import tls
from router_server.admin.inputs import _fields, _invalid
from router_server.credentials.book import KeyBook, KeyNotFound
from router_server.credentials.store import shown, to_data
from router_server.pipeline import RouterState, read_json_body
from router_server.responses import json_response

_STR = (str,)
_NUM = (int, float)
_LIST = (list,)


def _state(request: Request) -> RouterState:
    state: RouterState = request.app.state.shared.state
    return state


def _actor() -> str:
    subject = tls.client_subject()
    if not subject:
        raise ClientError(
            Catalog.ADMIN_IDENTITY_REQUIRED, "No verified client certificate on this connection."
        )
    return subject


def _book(state: RouterState) -> KeyBook:
    return state.credentials.book


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ("*",)
    if not value or not all(isinstance(v, str) and v for v in value):
        raise _invalid([(name, "must be a non-empty list of strings")])
    return tuple(value)


def _missing(key_id: str) -> ClientError:
    return ClientError(Catalog.KEY_NOT_FOUND, f"No managed key {key_id!r}.")


async def list_keys(request: Request) -> Response:
    book = _book(_state(request))
    now = time.time()
    return json_response(
        {"keys": [shown(k, now) for k in book.managed.values()], "store": book.status()}
    )


async def create_key(request: Request) -> Response:
    state = _state(request)
    book = _book(state)
    actor = _actor()
    data = _fields(
        await read_json_body(request),
        required={"organization": _STR, "reason": _STR},
        optional={"models": _LIST, "routes": _LIST, "expires_in_s": _NUM, "priority": _STR},
    )
    organization = data["organization"]
    if organization not in state.config.organizations:
        raise _invalid([("organization", f"unknown organization {organization!r}")])
    expires_in = data.get("expires_in_s")
    if expires_in is not None and not expires_in > 0:
        raise _invalid([("expires_in_s", "must be > 0")])
    priority = data.get("priority")
    if priority is not None and not is_member(priority, Priority):
        raise _invalid([("priority", not_one_of(Priority, priority))])
    created = await book.create(
        organization, actor, data["reason"],
        models=_strings(data, "models"), routes=_strings(data, "routes"),
        expires_at=None if expires_in is None else time.time() + float(expires_in),
        priority=None if priority is None else Priority(priority),
    )  # fmt: skip
    return json_response({**shown(created.managed, time.time()), "key": created.key}, status=201)


async def revoke_key(request: Request) -> Response:
    book = _book(_state(request))
    actor = _actor()
    key_id: str = request.path_params["key_id"]
    data = _fields(await read_json_body(request), required={"reason": _STR}, optional={})
    try:
        revoked = await book.revoke(key_id, actor, data["reason"])
    except KeyNotFound:
        raise _missing(key_id) from None
    return json_response(shown(revoked, time.time()))


async def rotate_key(request: Request) -> Response:
    book = _book(_state(request))
    actor = _actor()
    key_id: str = request.path_params["key_id"]
    data = _fields(
        await read_json_body(request), required={"reason": _STR}, optional={"overlap_s": _NUM}
    )
    overlap = float(data.get("overlap_s", 3600))
    if not 0 <= overlap <= 30 * 86400:
        raise _invalid([("overlap_s", "must be between 0 and 2592000 (30 days)")])
    try:
        successor, old = await book.rotate(key_id, actor, data["reason"], overlap)
    except KeyNotFound:
        raise _missing(key_id) from None
    now = time.time()
    return json_response(
        {"new": {**shown(successor.managed, now), "key": successor.key}, "old": shown(old, now)},
        status=201,
    )


async def key_audit(request: Request) -> Response:
    book = _book(_state(request))
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise _invalid([("limit", "must be an integer from 1 to 1000")])
    return json_response({"entries": [to_data(e) for e in await book.store.audit(int(raw))]})


ROUTES = [
    Route("/admin/v1/keys", list_keys, methods=["GET"]),
    Route("/admin/v1/keys", create_key, methods=["POST"]),
    Route("/admin/v1/keys/audit", key_audit, methods=["GET"]),
    Route("/admin/v1/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/admin/v1/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
]
