"""A backend that reports no usage: the tokens settled against a token quota are the
usage record's tokens (one count for both, `router_core.accounting.records.token_counts`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.in_process_backend import Backend
from tests.helpers.support import CHAT, LimitedFactory, auth, with_changes
from tests.helpers.usage_support import wait_ledger

# The subject is what the router decides, not the bytes on the wire: the mock
# backends answer in-process (tests/helpers/in_process_backend.py).
pytestmark = pytest.mark.backends_in_process

Mocks = tuple[Backend, Backend]
QUOTA = 1_000


@pytest.mark.parametrize("stream", [False, True])
def test_estimated_tokens_settle_the_quota_as_the_record_counts_them(
    limited: LimitedFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    tmp_path: Path,
    stream: bool,
) -> None:
    for mock in mocks:
        mock.configure(omit_usage=True)
    data = with_changes(config_data, state={"dir": str(tmp_path / "usage")})
    data["organizations"]["acme"]["limits"] = {"quotas": {"tokens_per_month": QUOTA}}
    app = limited(data)
    body = {**CHAT, "max_tokens": 6, "stream": stream}
    headers = {**auth(), "x-request-id": "req-estimated"}
    answer = app.client.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    (record,) = [
        r for r in wait_ledger(tmp_path / "usage", 1) if r["request_id"] == "req-estimated"
    ]
    assert record["usage"]["estimated"] is True
    assert record["usage"]["total_tokens"] > 0
    # A reservation the quota cannot hold is refused with what the quota has used.
    refused = app.client.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": QUOTA}, headers=auth()
    )
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["current_usage"] == record["usage"]["total_tokens"]
