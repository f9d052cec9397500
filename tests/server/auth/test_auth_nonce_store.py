"""The embedded nonce store: first use wins, replays lose, expiry frees a nonce."""

from __future__ import annotations

from pathlib import Path

import anyio

from router_server.credentials.nonces import SqliteNonces


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sqlite_nonces_refuse_replays_until_they_expire(tmp_path: Path) -> None:
    wall = Wall()

    async def main() -> list[bool]:
        store = SqliteNonces(tmp_path / "nonces.sqlite3", clock=wall)
        seen = [
            await store.claim("k1", "n1", 600),
            await store.claim("k1", "n1", 600),  # a replay
            await store.claim("k2", "n1", 600),  # another key's nonce is its own
        ]
        wall.now += 601
        seen.append(await store.claim("k1", "n1", 600))  # expired: usable again
        await store.aclose()
        reopened = SqliteNonces(tmp_path / "nonces.sqlite3", clock=wall)
        seen.append(await reopened.claim("k1", "n1", 600))  # remembered after a restart
        await reopened.aclose()
        return seen

    assert anyio.run(main) == [True, False, True, True, False]
