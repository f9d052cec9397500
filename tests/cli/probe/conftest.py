"""`router smoke` and `router loadtest` against a real router process and the
session's mock backends (tests/helpers/): the configs they run on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from router_server.process import RouterProcess

from tests.helpers.support import with_changes

# Generous, so that the limit headers are there and never refuse a test's load.
RATE = {"requests": {"rate": 1000, "per": "second", "burst": 1000}}


def with_limits(config: dict[str, Any]) -> dict[str, Any]:
    organizations = {**config["organizations"]}
    organizations["acme"] = {**organizations["acme"], "limits": RATE}
    return with_changes(config, organizations=organizations)


@pytest.fixture
def live_router(
    start_router: Callable[..., RouterProcess], config_data: dict[str, Any]
) -> Callable[..., RouterProcess]:
    """A ready router on `config_data` (acme with a rate limit), or on the config given."""

    def start(
        data: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> RouterProcess:
        router = start_router(with_limits(config_data) if data is None else data, env)
        assert router.wait_ready(), "the router did not become ready"
        return router

    return start
