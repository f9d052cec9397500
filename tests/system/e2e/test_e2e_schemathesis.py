"""Property-based tests of a real router process against its own OpenAPI document.

Schemathesis generates requests (valid and invalid) from the document the
router serves at `/openapi.json` and sends them over HTTP to a router process
(hypercorn on uvloop) in front of the two real, healthy mock backends. With
healthy backends no response may be a 5xx: every 5xx is the router failing on
client input.

Why the schema is built from `router_server.openapi.document()` at import
time rather than fetched from the live process: `schema.parametrize()` needs
the schema when pytest collects, before any fixture can start a router
(`schemathesis.pytest.from_fixture` would fit, but it is broken on pytest 9,
which removed `Node._nodeid`). `test_served_document_is_the_tested_one`
proves that the live router serves exactly this document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from requests.structures import CaseInsensitiveDict
from schemathesis import checks as st_checks
from schemathesis.core.result import Ok

from router_server import openapi
from router_server.app import ROUTES
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import (
    ACME_KEY,
    BACKEND_SECRET,
    BACKEND_SECRET_ENV,
    base_config,
    with_data_dir,
    write_config,
)

DOCUMENT = openapi.document()
MAX_EXAMPLES = 50

_GENERATION: dict[str, Any] = {
    "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
    # Read streamed answers to the end (the mock caps completions at 4096 tokens).
    "max-stream-events": 10_000,
}
# Requests as schemathesis generates them: no credential, or a random one.
anonymous = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict(_GENERATION)
)
# Requests carrying a valid key (organization acme, which may use every model).
# Messages and Responses bodies are held to the official SDKs instead (see
# router_server.openapi): their document names only the required fields, so
# they take part in the conformance runs but not in the validation one.
PROTOCOL_PATHS = "^/v1/(messages|responses)"
keyed = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {**_GENERATION, "auth": {"openapi": {"bearer": {"bearer": ACME_KEY}}}}
    ),
)

Check = Callable[..., Any]
# The response is not a 5xx, and its status, content type, body and headers are
# the ones the document declares for the operation; wrong methods get 405 + Allow.
CONFORMANCE: list[Check] = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.unsupported_method,
    st_checks.allow_header_conformance,
]
# Secured operations refuse requests without a valid credential.
AUTH: list[Check] = [st_checks.ignored_auth, st_checks.missing_required_header]
# The router accepts what the document allows and rejects what it forbids.
VALIDATION: list[Check] = [st_checks.positive_data_acceptance, st_checks.negative_data_rejection]

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
MOCK_DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "chunk_delay_ms": 0,
    "error_rate": 0,
    "error_status": 500,
    "hang": False,
    "truncate_after": None,
    "line_ending": "lf",
    "split_tail_bytes": None,
    "omit_usage": False,
}


@pytest.fixture(scope="module")
def live_router(
    mock_a: MockBackendProcess,
    mock_b: MockBackendProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RouterProcess]:
    """One router process for the whole module, in front of healthy mock backends."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    for mock in (mock_a, mock_b):
        if not mock.running:
            mock.start()
        mock.configure(**MOCK_DEFAULTS)
    data = with_data_dir(base_config(mock_a.url, mock_b.url), tmp / "data")
    config = write_config(tmp / "router.yaml", data)
    with (tmp / "router.log").open("wb") as log:
        router = RouterProcess(config, env={BACKEND_SECRET_ENV: BACKEND_SECRET}, log=log)
        with router:
            assert router.wait_ready(), "the router never became ready"
            yield router


def with_served_model(case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """`case` for a model that exists, if its model is a valid (non-empty string) name.

    Generated model names are almost never real ones, so such requests stop
    at 404 (or 422). The copy makes the generated body also go through
    routing, a backend and the answer. Only a valid name is replaced, so a
    case generated to be invalid stays invalid in the same way.
    """
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return case
    served = case.derive(keep_auth=True)
    assert isinstance(served.body, dict)
    embedding = case.operation.path == "/v1/embeddings" or body.get("operation") == "embedding"
    served.body["model"] = "embed" if embedding else "chat"
    return served


def as_new_request(case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """`case` as a request never sent before.

    Generated request ids and idempotency keys repeat across cases, and a key
    reused for a different body is rightly refused (422 idempotency_key_reused),
    which the positive-data check would take for a rejection of valid data.
    """
    body = case.body
    headers = dict(case.headers or {})
    has_id = isinstance(body, dict) and isinstance(body.get("request_id"), str)
    key_names = [k for k in headers if k.lower() == "idempotency-key"]
    if not has_id and not key_names:
        return case
    if key_names:
        headers = {k: v for k, v in headers.items() if k not in key_names}
        headers["Idempotency-Key"] = uuid.uuid4().hex
    fresh = case.derive(keep_auth=True, headers=CaseInsensitiveDict(headers))
    if has_id:
        assert isinstance(fresh.body, dict)
        try:
            uuid.UUID(str(fresh.body["request_id"]))
        except ValueError:
            return fresh  # generated invalid: it stays invalid
        fresh.body["request_id"] = str(uuid.uuid4())
    return fresh


def send(case: schemathesis.Case[Any], base_url: str, checks: list[Check]) -> None:
    """Send `case` to the router and run `checks` on the response."""
    response = case.call(base_url=base_url)
    content_type = next(
        (values[0] for name, values in response.headers.items() if name.lower() == "content-type"),
        "",
    )
    streamed = content_type.startswith("text/event-stream")
    case.validate_response(
        response,
        checks=checks,
        # A 3.1 document has no standard way to describe one SSE event (schemathesis
        # reads `schema` as one event's), so streams are checked below instead.
        excluded_checks=[st_checks.response_schema_conformance] if streamed else [],
        transport_kwargs={"base_url": base_url},
    )
    if streamed:
        assert isinstance(case.body, dict)
        path = case.operation.path
        if path == "/v1/messages":
            assert_complete_protocol_stream(response.content, b"message_stop")
        elif path == "/v1/responses":
            assert_complete_protocol_stream(response.content, b"response.completed")
        else:
            assert_complete_event_stream(response.content, str(case.body["model"]))


def assert_complete_protocol_stream(content: bytes, last: bytes) -> None:
    """A Messages or Responses stream: named events, the last one `last`, no error."""
    events = [event for event in content.split(b"\n\n") if event.strip()]
    assert events, content
    assert events[-1].startswith(b"event: " + last + b"\n"), events[-1]
    for event in events:
        assert event.startswith(b"event: "), event
        assert not event.startswith((b"event: error", b"event: response.failed")), event


def assert_complete_event_stream(content: bytes, model: str) -> None:
    """Every event is a JSON chunk for the public model name, and the stream ends with [DONE]."""
    events = [event for event in content.split(b"\n\n") if event.strip()]
    assert events, content
    assert events[-1] == b"data: [DONE]", events[-1]
    for event in events[:-1]:
        assert event.startswith(b"data: "), event
        chunk = json.loads(event.removeprefix(b"data: "))
        assert "error" not in chunk, chunk
        assert chunk["model"] == model, chunk


@SETTINGS
@anonymous.parametrize()
def test_without_a_key(case: schemathesis.Case[Any], live_router: RouterProcess) -> None:
    """No credential, or a random one: never a 5xx, and secured routes answer 401."""
    send(case, live_router.url, CONFORMANCE + AUTH)
    credentials = {"authorization", "x-api-key"}
    if any(name.lower() in credentials for name in case.headers):
        # And once more with whatever credential was generated taken away.
        kept = {k: v for k, v in case.headers.items() if k.lower() not in credentials}
        send(case.derive(headers=CaseInsensitiveDict(kept)), live_router.url, CONFORMANCE + AUTH)
    send(with_served_model(case), live_router.url, CONFORMANCE + AUTH)


@SETTINGS
@keyed.parametrize()
def test_with_a_key(case: schemathesis.Case[Any], live_router: RouterProcess) -> None:
    """A valid key: never a 5xx (backends are healthy), and every answer is as documented."""
    send(case, live_router.url, CONFORMANCE + AUTH)
    served = with_served_model(case)
    if served is not case:
        send(served, live_router.url, CONFORMANCE + AUTH)


@SETTINGS
@keyed.exclude(path_regex=PROTOCOL_PATHS).parametrize()
def test_validation_matches_the_document(
    case: schemathesis.Case[Any], live_router: RouterProcess
) -> None:
    """What the document allows is not refused as invalid, and what it forbids is refused."""
    send(as_new_request(with_served_model(case)), live_router.url, CONFORMANCE + VALIDATION)


def test_served_document_is_the_tested_one(live_router: RouterProcess) -> None:
    response = httpx.get(live_router.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1")


def test_document_covers_every_route() -> None:
    """Each route the app serves is documented with exactly its methods, and nothing else is."""
    served: dict[str, set[str]] = {}
    for route in ROUTES:
        served[route.path] = {m.lower() for m in route.methods or ()} - {"head"}
    documented = {
        path: set(item) & {"get", "put", "post", "delete", "patch", "options", "head"}
        for path, item in DOCUMENT["paths"].items()
    }
    assert documented == served
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                assert response.get("content"), (method, path, status)


def test_every_operation_is_exercised() -> None:
    """The property tests above run for every documented operation, none skipped."""
    results = list(keyed.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "some operations could not be loaded"
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    expected = {
        f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item
    }
    assert labels == expected
    assert len(labels) == sum(len(set(route.methods or ()) - {"HEAD"}) for route in ROUTES)
