"""Every alert links its runbook, the link resolves to a page, and every
runbook page is in the docs site's navigation (a page left out of the nav
would not be found by the on-call engineer browsing the site)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "examples" / "prometheus-alerts.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
FAILURE_MODES = {
    "redis-down", "kafka-down", "spool-filling", "backend-outage", "leaked-key", "bad-config",
}  # fmt: skip


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _nav_pages(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_pages(item) for item in nav))
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(value) for value in nav.values()))
    return set()


def test_every_alert_links_an_existing_runbook_page_that_names_it() -> None:
    alerts = _alerts()
    assert len(alerts) >= 11
    for rule in alerts:
        url = rule.get("annotations", {}).get("runbook_url")
        assert url, f"{rule['alert']} has no runbook_url"
        page = ROOT / url
        assert page.is_file(), f"{rule['alert']}: {url} does not exist"
        assert page.parent == RUNBOOKS
        assert page.read_text().startswith(f"# {rule['alert']}\n"), url


def test_one_page_per_alert_and_per_failure_mode_each_with_commands() -> None:
    linked = {Path(rule["annotations"]["runbook_url"]).stem for rule in _alerts()}
    pages = {page.stem for page in RUNBOOKS.glob("*.md")} - {"index"}
    assert pages == linked | FAILURE_MODES
    for name in pages:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert "```sh" in text, f"{name}: no commands to run"
        assert "**Fix.**" in text or "**Do this first.**" in text, f"{name}: no fix"


def test_every_runbook_page_is_in_the_docs_navigation() -> None:
    # mkdocs.yml has no custom tags: plain YAML.
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for page in RUNBOOKS.glob("*.md"):
        assert f"runbooks/{page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
