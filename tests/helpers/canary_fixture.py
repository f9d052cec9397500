"""The canary-secret check: no key, secret or token used by the suite may show up
in a log line, an error body, a metric or a usage record.

A pytest plugin (`pytest_plugins` in tests/conftest.py). For the whole session it
- keeps the canaries: the suite's keys and backend secret (support.py), and
  every credential a test registers with `canaries.add(...)`;
- records every log record emitted in-process (message and every extra field),
  and the body and headers of every HTTP answer with status >= 400 that any
  httpx client of the suite received (TestClient and the OpenAI SDK included);
- at the end of the session scans those, plus the router processes' logs,
  the usage ledgers and spools under pytest's base temp directory, and the
  `/v1/status` and `/metrics` answers recorded, and fails (an error in the
  session's teardown) naming where each canary leaked, never the secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, GLOBEX_KEY, REVOKED_KEY

# Answers to these paths are scanned whatever their status (metrics, status).
WATCHED_PATHS = ("/metrics", "/v1/status")
# Files under the base temp directory that hold logs, usage or audit records.
SCANNED_SUFFIXES = (".log", ".jsonl", ".seg", ".spool")


class Canaries:
    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.seen: list[tuple[str, str]] = []

    def add(self, secret: str, label: str | None = None) -> str:
        if len(secret) >= 16:
            self.secrets.setdefault(secret, label or f"canary-{len(self.secrets)}")
        return secret

    def record(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def leaks(self, extra: Iterable[tuple[str, str]] = ()) -> list[str]:
        """`label in where` for every canary found."""
        found = []
        for where, text in [*self.seen, *extra]:
            for secret, label in self.secrets.items():
                if secret in text:
                    found.append(f"{label} in {where}")
        return found


def scanned_files(root: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        usage_store = path.name.startswith(("usage", "ledger", "idempotency"))
        in_spool = "spool" in path.parts
        if path.suffix in SCANNED_SUFFIXES or usage_store or in_spool:
            yield str(path.relative_to(root)), path.read_bytes().decode("utf-8", "replace")


class _Recorder(logging.Handler):
    def __init__(self, canaries: Canaries) -> None:
        super().__init__(logging.NOTSET)
        self.canaries = canaries

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in record.__dict__.items() if k not in ("args", "exc_info")}
            text = json.dumps(fields, default=repr) + record.getMessage()
            if record.exc_info:
                text += logging.Formatter().formatException(record.exc_info)
        except Exception:  # a log record we cannot render is no leak of ours
            return
        self.canaries.record(f"log {record.name}", text)


def _watch(canaries: Canaries, response: Any) -> None:
    request_path = response.request.url.path
    if response.status_code < 400 and not request_path.endswith(WATCHED_PATHS):
        return
    try:
        body = response.text
    except Exception:  # a stream the test has not read (ResponseNotRead): nothing seen yet
        return
    headers = json.dumps(dict(response.headers))
    canaries.record(f"HTTP {response.status_code} {request_path}", headers + body)


def _watched(canaries: Canaries, send: Any, *, asynchronous: bool) -> Any:
    if asynchronous:

        async def watched_async(self: Any, request: Any, **kwargs: Any) -> Any:
            response = await send(self, request, **kwargs)
            _watch(canaries, response)
            return response

        return watched_async

    def watched(self: Any, request: Any, **kwargs: Any) -> Any:
        response = send(self, request, **kwargs)
        _watch(canaries, response)
        return response

    return watched


@pytest.fixture(scope="session")
def canaries() -> Canaries:
    return _CANARIES


_CANARIES = Canaries()


@pytest.fixture(scope="session", autouse=True)
def canary_watch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canaries]:
    canaries = _CANARIES
    known = {"ACME_KEY": ACME_KEY, "GLOBEX_KEY": GLOBEX_KEY, "REVOKED_KEY": REVOKED_KEY}
    for name, secret in {**known, "BACKEND_SECRET": BACKEND_SECRET}.items():
        canaries.add(secret, name)
    handler = _Recorder(canaries)
    logging.getLogger().addHandler(handler)
    # Observing, not mocking: the real send runs and its answer is recorded.
    # Starlette's TestClient is built on httpx2, the SDKs and tests on httpx.
    clients: list[Any] = [httpx.Client, httpx.AsyncClient]
    with contextlib.suppress(ImportError):
        import httpx2

        clients += [httpx2.Client, httpx2.AsyncClient]
    originals = [(cls, cls.send) for cls in clients]
    for cls, send in originals:
        cls.send = _watched(canaries, send, asynchronous="Async" in cls.__name__)
    try:
        yield canaries
    finally:
        for cls, send in originals:
            cls.send = send
        logging.getLogger().removeHandler(handler)
    leaks = canaries.leaks(scanned_files(tmp_path_factory.getbasetemp()))
    assert not leaks, "secrets leaked: " + "; ".join(sorted(set(leaks)))
