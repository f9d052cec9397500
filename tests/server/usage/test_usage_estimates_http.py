"""A backend that reports no usage: the record's estimate counts a prompt given as
token ids one token per id, on completions and embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import auth, with_changes
from tests.helpers.usage_support import schema_errors, wait_ledger

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]


@pytest.mark.parametrize(
    ("path", "body", "prompt_tokens"),
    [
        ("/v1/completions", {"model": "chat", "prompt": list(range(1, 41)), "max_tokens": 4}, 40),
        (
            "/v1/completions",
            {"model": "chat", "prompt": [[1, 2, 3], [4, 5, 6, 7]], "max_tokens": 4},
            7,
        ),
        ("/v1/embeddings", {"model": "embed", "input": [11] * 25}, 25),
        ("/v1/embeddings", {"model": "embed", "input": [[1, 2], [3, 4], [5]]}, 5),
    ],
)
def test_token_id_prompts_are_counted_when_the_backend_reports_no_usage(
    make_client: Any,
    config_data: dict[str, Any],
    mocks: Mocks,
    tmp_path: Path,
    path: str,
    body: dict[str, Any],
    prompt_tokens: int,
) -> None:
    for mock in mocks:
        mock.configure(omit_usage=True)
    client = make_client(with_changes(config_data, state={"dir": str(tmp_path / "usage")}))
    response = client.post(path, json=body, headers={**auth(), "x-request-id": "req-ids"})
    assert response.status_code == 200, response.text
    assert "usage" not in response.json()
    (record,) = [r for r in wait_ledger(tmp_path / "usage", 1) if r["request_id"] == "req-ids"]
    assert schema_errors(record) == []
    assert record["usage"]["estimated"] is True
    assert record["usage"]["prompt_tokens"] == prompt_tokens
    completion = record["usage"]["completion_tokens"]
    assert record["usage"]["total_tokens"] == prompt_tokens + completion
