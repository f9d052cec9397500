"""The whole suite's rules and its shared fixtures.

The suite mirrors the code, in four levels, each with its own conftest.py:
`core/` (router_core alone: no I/O), `server/` (router_server in-process or
against one router process, with mock backends), `cli/` (the `router`
command) and `system/` (real Redis and Kafka, several routers, end to end,
the benchmark). Helpers and the fixtures more than one level uses live in
`tests/helpers/`; the plugins below make those fixtures available everywhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Mock backends (mock_a, mock_b, mocks, config_data, backend_env; in-process
# for tests marked backends_in_process), the router in-process or as a process
# (make_client, client, start_router), the admin listener's certificates
# (admin_certs), an identity provider's JWKS endpoint (idp), the canary-secret
# check over the whole session's logs, error bodies and usage records, and the
# lock that keeps tests marked `exclusive` alone on the machine.
pytest_plugins = [
    "tests.helpers.backends_fixture", "tests.helpers.router_fixture",
    "tests.helpers.tls_fixture", "tests.helpers.jwks_fixture", "tests.helpers.canary_fixture",
    "tests.helpers.exclusive_fixture",
    # A real Redis Cluster and Sentinel deployment (redis_cluster, redis_sentinel).
    "tests.helpers.redis_deployments",
]  # fmt: skip

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parent.parent
# What pytest and Hypothesis keep beside the project (.hypothesis is placed when
# Hypothesis is imported, before the working directory changes).
TOOL_CACHES = {".pytest_cache", ".hypothesis", "__pycache__"}


def _entries(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()} - TOOL_CACHES


@pytest.fixture(scope="session", autouse=True)
def _isolated_cwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole session runs in an empty working directory of its own, so a path
    left relative (the `router-data/` defaults, a ledger the CLI looks for) never
    reaches the checkout or another run's files; and the checkout and the
    directory pytest was started in must gain nothing."""
    started_in = Path.cwd()
    checked = {REPO, REPO / "tests", REPO / "examples", started_in}
    watched = {directory: _entries(directory) for directory in checked}
    cwd = tmp_path_factory.mktemp("cwd")
    os.chdir(cwd)
    yield cwd
    os.chdir(started_in)
    for directory, before in watched.items():
        if new := _entries(directory) - before:
            pytest.fail(f"the tests created {sorted(new)} in {directory}", pytrace=False)


@pytest.fixture(autouse=True)
def _writes_nothing_in_cwd(_isolated_cwd: Path) -> Iterator[None]:
    """Fails the test that leaves anything in the working directory: every path a
    test's router or CLI uses belongs under its tmp_path (see `with_data_dir`)."""
    yield
    os.chdir(_isolated_cwd)
    left = sorted(path.name for path in _isolated_cwd.iterdir())
    for name in left:  # so that the next test starts clean and is not blamed
        shutil.rmtree(_isolated_cwd / name, ignore_errors=True)
        (_isolated_cwd / name).unlink(missing_ok=True)
    if left:
        pytest.fail(
            f"the test left {left} in the working directory; put every path its "
            "router or CLI uses under tmp_path (tests.helpers.support.with_data_dir)",
            pytrace=False,
        )
