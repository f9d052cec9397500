"""Fixtures for the operator surfaces: an app with an ops token, headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from router_core.config_codec import structure
from router_server.app import create_app

from support import with_changes, with_data_dir

OPS_TOKEN = "ops-token-" + "O" * 24
OPS_TOKEN_ENV = "ROUTER_TEST_OPS_TOKEN"
OPS_AUTH = {"authorization": f"Bearer {OPS_TOKEN}"}

OpsAppFactory = Callable[[dict[str, Any]], TestClient]


def with_ops_token(data: dict[str, Any]) -> dict[str, Any]:
    observability = {**(data.get("observability") or {}), "ops_token_env": OPS_TOKEN_ENV}
    return with_changes(data, observability=observability)


@pytest.fixture
def ops_env(backend_env: dict[str, str]) -> dict[str, str]:
    return {**backend_env, OPS_TOKEN_ENV: OPS_TOKEN}


@pytest.fixture
def make_ops_client(ops_env: dict[str, str], tmp_path: Path) -> Iterator[OpsAppFactory]:
    """The app in-process, with the ops token configured."""
    opened: list[TestClient] = []

    def make(data: dict[str, Any]) -> TestClient:
        data = with_data_dir(with_ops_token(data), tmp_path / f"ops-{len(opened)}-data")
        client = TestClient(create_app(structure(data), env=ops_env), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (`.ci/run` installs it; locally the tests skip without it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "chromium is not installed (CI installs Debian's package: apt-get install chromium)"
    )


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
