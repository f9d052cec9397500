"""Tests marked `exclusive` run while no other test of the session runs.

A pytest plugin (`pytest_plugins` in tests/conftest.py). The suite runs on
several pytest-xdist workers; a test whose assertions bound latencies under a
load it makes itself (a thousand concurrent requests on two replicas, a killed
or hung backend under load) would otherwise share the cores with another
worker's routers, and they with it. Every test holds a shared lock on one file
of the session; an exclusive test holds it exclusively, so it waits for the
tests running on the other workers to end and they wait for it. Without xdist
(`-n 0`) nothing runs beside a test anyway, and no lock is taken.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest

MARKER = "exclusive"


@pytest.fixture(autouse=True)
def _exclusive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    # Each worker's base temp is a folder of the session's: the lock sits beside them.
    path = tmp_path_factory.getbasetemp().parent / "exclusive.lock"
    mode = fcntl.LOCK_EX if request.node.get_closest_marker(MARKER) else fcntl.LOCK_SH
    with path.open("a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
