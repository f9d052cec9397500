"""examples/signed_client.py signs a request a real router process accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.helpers.support import ACME_KEY, CHAT

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_client_is_served(start_router: Any, config_data: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location(
        "signed_client", ROOT / "examples/signed_client.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    router = start_router(config_data)
    response = module.signed_post(router.url, ACME_KEY, "/v1/chat/completions", CHAT)
    assert response.status_code == 200, response.text
    assert response.json()["choices"]
