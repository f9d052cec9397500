"""What every provider's system tests share: where the mock's root is, the
OpenAI SDK pointed at the router, and how many requests a mock path got."""

from __future__ import annotations

import openai

from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY


def root(mock: MockBackendProcess) -> str:
    """The mock's root: providers' paths start at the host, not at /v1."""
    return mock.url.removesuffix("/v1")


def oai(router: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=ACME_KEY, base_url=router.url + "/v1", max_retries=0, timeout=30)


def served(mock: MockBackendProcess, path: str) -> int:
    count: int = mock.stats()["by_path"].get(path, 0)
    return count
