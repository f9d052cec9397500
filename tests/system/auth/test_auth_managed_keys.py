"""Managed keys: `router keys create|list|revoke|rotate` against the store a running
router follows, and one contract for both key stores (SQLite and Redis)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from router_cli.main import main
from router_core import key_lifecycle, keys
from router_core.auth import ManagedKey
from router_core.config_enums import RedisMode
from router_server.credentials.redis_keys import RedisKeyStore
from router_server.credentials.sqlite_keys import SqliteKeyStore
from router_server.credentials.store import KeyChange, KeyEvent, KeyStore

from tests.helpers.auth_support import auth_config
from tests.helpers.canary_fixture import Canaries
from tests.helpers.jwks_fixture import IdentityProvider
from tests.helpers.redis_server import closed, redis_client
from tests.helpers.support import CHAT, auth, eventually, write_config

AppFactory = Callable[[dict[str, Any]], TestClient]


def created_key(out: str) -> str:
    found = re.search(r"^\s+(rk_live_\w+)$", out, re.MULTILINE)
    assert found is not None, out
    return found.group(1)


def status(app: TestClient, key: str) -> tuple[int, str | None]:
    response = app.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    reason = response.json()["error"].get("reason") if response.status_code != 200 else None
    return response.status_code, reason


@pytest.fixture
def setup(
    make_client: AppFactory,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    tmp_path: Path,
) -> tuple[TestClient, Path]:
    data = auth_config(config_data, idp, tmp_path)
    return make_client(data), write_config(tmp_path / "router.yaml", data)


def test_cli_lifecycle_reaches_a_running_router(
    setup: tuple[TestClient, Path], capsys: pytest.CaptureFixture[str], canaries: Canaries
) -> None:
    app, config = setup
    assert main(["keys", "create", "--org", "acme", "--config", str(config)]) == 0
    key = canaries.add(created_key(capsys.readouterr().out), "cli-key")
    key_id = keys.parse(key).key_id  # type: ignore[union-attr]
    assert key_id[0].isalpha()
    assert eventually(lambda: status(app, key) == (200, None))

    assert main(["keys", "list", "--config", str(config), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["id"], k["state"]) for k in listed] == [(key_id, "active")]
    assert key not in json.dumps(listed)

    argv = ["keys", "rotate", key_id, "--config", str(config), "--overlap-s", "30"]
    assert main(argv) == 0
    successor = canaries.add(created_key(capsys.readouterr().out), "cli-successor")
    assert eventually(lambda: status(app, successor) == (200, None))
    assert status(app, key) == (200, None)  # still inside the overlap

    new_id = keys.parse(successor).key_id  # type: ignore[union-attr]
    argv = ["keys", "rotate", new_id, "--config", str(config), "--overlap-s", "0"]
    assert main(argv) == 0
    third = canaries.add(created_key(capsys.readouterr().out), "cli-third")
    assert eventually(lambda: status(app, successor) == (401, "key_expired"))
    assert status(app, third) == (200, None)

    assert main(["keys", "revoke", keys.parse(third).key_id, "--config", str(config),  # type: ignore[union-attr]
                 "--reason", "leaked in a test"]) == 0  # fmt: skip
    assert eventually(lambda: status(app, third) == (401, "key_revoked"))
    assert main(["keys", "revoke", "nosuchkey1", "--config", str(config), "--reason", "x"]) == 2


def test_cli_refuses_an_unknown_organization(setup: tuple[TestClient, Path]) -> None:
    _, config = setup
    assert main(["keys", "create", "--org", "initech", "--config", str(config)]) == 2


def test_expiring_key_from_the_cli(
    setup: tuple[TestClient, Path], capsys: pytest.CaptureFixture[str], canaries: Canaries
) -> None:
    app, config = setup
    argv = ["keys", "create", "--org", "acme", "--config", str(config), "--expires-in-s", "0.5"]
    assert main(argv) == 0
    key = canaries.add(created_key(capsys.readouterr().out), "expiring-key")
    assert eventually(lambda: status(app, key) == (401, "key_expired"), timeout=5)


def test_rotation_rules() -> None:
    created = key_lifecycle.create("acme", now=100.0, actor="t", choice=lambda s: s[0])
    successor, old = key_lifecycle.rotate(
        created.managed, now=200.0, overlap_s=60, actor="t", choice=lambda s: s[-1]
    )
    assert old.key.expires_at == 260.0
    assert not old.key.expired(259.9)
    assert old.key.expired(260.0)
    assert successor.managed.rotated_from == created.managed.key.id
    assert successor.managed.key.expires_at is None
    assert keys.verify(successor.key, successor.managed.key.hash)


# --- one contract for both stores ---------------------------------------------


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    if request.param == "sqlite":
        opened: KeyStore = SqliteKeyStore(tmp_path / "keys.sqlite3")
    elif request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        opened = RedisKeyStore(redis_client(url, mode=RedisMode.CLUSTER), timeout_s=2.0)
    else:
        opened = RedisKeyStore(redis_client(request.getfixturevalue("redis_url")), timeout_s=2.0)
    yield opened
    await closed(opened)


def managed(org: str = "acme") -> ManagedKey:
    return key_lifecycle.create(org, now=time.time(), actor="t", choice=lambda s: s[1]).managed


@pytest.mark.anyio
async def test_store_contract(store: KeyStore) -> None:
    assert await store.load() == []
    first = managed()
    event = KeyEvent("aud_1", 1.0, "t", KeyChange.CREATED, first.key.id, "acme", "test")
    await store.put([first], event)
    assert await store.load() == [first]
    revoked = key_lifecycle.revoke(first)
    await store.put([revoked], KeyEvent("aud_2", 2.0, "t", KeyChange.REVOKED, first.key.id,
                                        "acme", "test"))  # fmt: skip
    assert await store.load() == [revoked]
    assert [e.id for e in await store.audit(10)] == ["aud_2", "aud_1"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_sqlite_store_leaves_no_file_until_a_change(tmp_path: Path) -> None:
    store = SqliteKeyStore(tmp_path / "keys.sqlite3")
    assert anyio.run(store.load) == []
    assert not (tmp_path / "keys.sqlite3").exists()
