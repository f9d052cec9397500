"""An idempotency store that goes away: keyed requests get 503, others are served."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.redis_server import RedisServer
from tests.helpers.support import auth, with_changes

Mocks = tuple[MockBackendProcess, MockBackendProcess]
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


def test_idempotency_store_down_is_503_for_keyed_requests_only(
    start_router: Any, config_data: dict[str, Any], mocks: Mocks, redis_server: RedisServer,
    redis_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    if not redis_server.controllable:
        pytest.skip("REDIS_URL points at a shared server: it cannot be stopped")
    data = with_changes(config_data, state={"store": "redis"})
    router: RouterProcess = start_router(data, {"ROUTER_REDIS_URL": redis_url})
    redis_server.stop()
    try:
        keyed = httpx.post(
            router.url + "/v1/chat/completions", json=CHAT,
            headers={**auth(), "idempotency-key": uuid.uuid4().hex}, timeout=10,
        )  # fmt: skip
        plain = httpx.post(router.url + "/v1/chat/completions", json=CHAT, headers=auth())
        status = httpx.get(router.url + "/v1/status").json()["usage"]
    finally:
        redis_server.start()
    assert keyed.status_code == 503
    assert keyed.json()["error"]["code"] == "idempotency_unavailable"
    assert keyed.headers["retry-after"] == "1"
    assert plain.status_code == 200
    assert status["idempotency"]["failures"] >= 1
