"""The operator page in headless Chromium, against a real router with traffic,
including a burst of backend errors, of rate-limit denials and of refusals
before authentication."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from router_server.mock_backend import MockBackendProcess

from tests.helpers.ops_support import (
    OPS_AUTH,
    OPS_TOKEN,
    OPS_TOKEN_ENV,
    keep_artifact,
    render_page,
    with_ops_token,
)
from tests.helpers.router_fixture import RouterFactory
from tests.helpers.support import CHAT, GLOBEX_KEY, auth, with_changes

Mocks = tuple[MockBackendProcess, MockBackendProcess]


def _metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def _row(dom: str, row_id: str) -> list[str]:
    """The text of each cell of the table row with this id."""
    match = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', dom, re.S)
    assert match is not None, f"no row {row_id} in the page"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def test_page_shows_health_rates_spend_denials_and_the_spikes(
    start_router: RouterFactory,
    config_data: dict[str, Any],
    mocks: Mocks,
    chromium: str,
    tmp_path: Path,
) -> None:
    data = with_ops_token(with_changes(config_data, prices={"chat": {"input": 1, "output": 2}}))
    data["organizations"]["globex"]["limits"] = {"requests": {"rate": 2, "per": "minute"}}
    router = start_router(data, env={OPS_TOKEN_ENV: OPS_TOKEN})
    _, mock_b = mocks
    with httpx.Client(base_url=router.url, timeout=10) as http:
        for _ in range(4):  # ordinary traffic, spend for acme
            assert http.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
        # A burst of backend errors: b-only's one backend answers 500 to everything.
        mock_b.configure(error_rate=1.0, error_status=500)
        errors = [http.post("/v1/chat/completions", json={**CHAT, "model": "b-only"},
                            headers=auth()).status_code for _ in range(3)]  # fmt: skip
        mock_b.configure(error_rate=0.0)
        assert errors == [502, 502, 502]
        # A burst of rate-limit denials: globex may send two a minute.
        statuses = [http.post("/v1/chat/completions", json=CHAT, headers=auth(GLOBEX_KEY))
                    .status_code for _ in range(6)]  # fmt: skip
        assert statuses == [200, 200, 429, 429, 429, 429]
        # A burst of refusals before authentication: a key nobody issued.
        bogus = auth("rk_bogus_" + "x" * 32)
        refused = [http.post("/v1/chat/completions", json=CHAT, headers=bogus).status_code
                   for _ in range(5)]  # fmt: skip
        assert refused == [401] * 5
        text = http.get("/metrics", headers=OPS_AUTH).text

    # The spikes in /metrics, under their categories.
    assert _metric(text, "router_request_errors_total", code="backend_error", model="b-only") == 3
    assert _metric(text, "router_request_errors_total", code="rate_limit_exceeded") == 4
    assert _metric(text, "router_limit_denials_total", organization="globex",
                   limit_type="rate_limit") == 4  # fmt: skip
    assert _metric(text, "router_requests_total", model="b-only", status_class="5xx") == 3
    assert _metric(text, "router_request_errors_total", code="invalid_api_key") == 5

    shot = tmp_path / "ops-page.png"
    dom = render_page(chromium, f"{router.url}/ops#token={OPS_TOKEN}", tmp_path / "p", shot)
    keep_artifact(shot)
    assert 'data-loaded="true"' in dom, dom[-2000:]
    assert shot.stat().st_size > 10_000
    # Backends and their health.
    assert _row(dom, "backend-mock-a")[:3] == ["mock-a", "ok", "closed"]
    assert _row(dom, "backend-mock-b")[0] == "mock-b"
    # Request and error rates by category over the last minutes.
    assert _row(dom, "rate-ok")[1] == "6"  # 4 acme + 2 globex, all in the last minute
    assert _row(dom, "rate-backend_error")[1] == "3"
    assert _row(dom, "rate-rate_limit_exceeded")[1] == "4"
    assert _row(dom, "rate-invalid_api_key")[1] == "5"
    # Top organizations by spend, limit denials, export.
    spend = _row(dom, "spend-acme")
    assert spend[0] == "acme"
    assert float(spend[1]) > 0
    assert _row(dom, "denial-globex-rate_limit") == ["globex", "rate_limit", "4"]
    assert _row(dom, "export-spool")[1] in ("ok", "degraded")
    assert _row(dom, "export-kafka")[1] == "disabled"
