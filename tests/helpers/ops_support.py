"""Helpers of the operator-surface tests: the ops token, and the page rendered in headless
Chromium (the fixtures `make_ops_client` and `chromium` are in tests/server/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from tests.helpers.support import with_changes

OPS_TOKEN = "ops-token-" + "O" * 24
OPS_TOKEN_ENV = "ROUTER_TEST_OPS_TOKEN"
OPS_AUTH = {"authorization": f"Bearer {OPS_TOKEN}"}

OpsAppFactory = Callable[[dict[str, Any]], TestClient]


def with_ops_token(data: dict[str, Any]) -> dict[str, Any]:
    observability = {**(data.get("observability") or {}), "ops_token_env": OPS_TOKEN_ENV}
    return with_changes(data, observability=observability)


# Set to a directory to keep the page's screenshot there (the test writes it in
# its own tmp_path, and copies it only when asked).
ARTIFACTS_ENV = "ROUTER_TEST_ARTIFACTS"


def keep_artifact(path: Path) -> None:
    directory = os.environ.get(ARTIFACTS_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(directory) / path.name)


def render_page(chromium: str, url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (and a screenshot), in headless Chromium."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
        # Let the page's fetch and render finish before the DOM is taken.
        "--virtual-time-budget=4000", "--run-all-compositor-stages-before-draw",
    ]  # fmt: skip
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [chromium, *flags, f"--screenshot={screenshot}", url],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    done = subprocess.run(
        [chromium, *flags, "--dump-dom", url], check=True, capture_output=True, timeout=60
    )
    return done.stdout.decode()
