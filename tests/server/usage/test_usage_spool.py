"""The disk spool on real files: order, cursors, crash recovery, torn records, bounds."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from router_core.accounting.frames import FrameKind, encode
from router_core.config import SpoolSettings
from router_core.config_enums import Fsync
from router_server.usage.spool import Spool, SpoolError

SMALL = SpoolSettings(max_bytes=1 << 16, segment_bytes=4096, fsync=Fsync.NEVER)


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(fn)


def payload(i: int) -> bytes:
    return b'{"record_id": "%d", "pad": "%s"}' % (i, b"x" * 100)


async def drain(spool: Spool, name: str = "ledger") -> list[bytes]:
    reader = spool.readers[name]
    got: list[bytes] = []
    while reader.pending:
        with anyio.fail_after(5):
            batch = await reader.read(50)
        got.extend(f.payload for f in batch)
        reader.ack()
    return got


def test_records_come_back_in_order_across_segments_and_are_collected(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SMALL, ["ledger", "kafka"])
        for i in range(200):
            spool.append(FrameKind.USAGE, payload(i), i)
        assert len(spool.segments) > 5
        assert await drain(spool, "ledger") == [payload(i) for i in range(200)]
        # The kafka reader has not read: every segment stays.
        assert len(list(tmp_path.glob("*.spool"))) == len(spool.segments) > 5
        assert await drain(spool, "kafka") == [payload(i) for i in range(200)]
        assert len(list(tmp_path.glob("*.spool"))) == 1
        assert spool.unacked_bytes == 0
        spool.close()

    run(main)


def test_unacknowledged_records_survive_a_crash(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SMALL, ["ledger"])
        for i in range(10):
            spool.append(FrameKind.USAGE, payload(i), i)
        reader = spool.readers["ledger"]
        await reader.read(4)
        reader.ack()  # 4 delivered
        await reader.read(3)  # 3 sent, never acknowledged: the process dies here
        spool.close()
        again = Spool.open(tmp_path, SMALL, ["ledger"])
        assert again.readers["ledger"].pending == 6
        assert await drain(again) == [payload(i) for i in range(4, 10)]
        again.close()

    run(main)


def test_a_torn_last_record_is_cut_off_quarantined_and_never_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync=Fsync.NEVER), ["ledger"])
        for i in range(3):
            spool.append(FrameKind.USAGE, payload(i), i)
        spool.close()
        segment = next(tmp_path.glob("*.spool"))
        good_size = segment.stat().st_size
        torn = encode(FrameKind.USAGE, b'{"record_id": "torn"}', 99)
        with segment.open("ab") as file:
            file.write(torn[: len(torn) // 2])
        again = Spool.open(tmp_path, SpoolSettings(fsync=Fsync.NEVER), ["ledger"])
        assert again.recovery.torn == 1
        assert again.status()["torn_records"] == 1
        assert segment.stat().st_size == good_size
        quarantined = list((tmp_path / "quarantine").iterdir())
        assert [q.read_bytes() for q in quarantined] == [torn[: len(torn) // 2]]
        again.append(FrameKind.USAGE, payload(3), 3)
        delivered = await drain(again)
        assert delivered == [payload(i) for i in range(4)]
        assert all(b"torn" not in p for p in delivered)
        again.close()

    run(main)


def test_corruption_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync=Fsync.NEVER), ["ledger"])
        for i in range(5):
            spool.append(FrameKind.USAGE, payload(i), i)
        spool.close()
        segment = next(tmp_path.glob("*.spool"))
        data = bytearray(segment.read_bytes())
        frame = len(data) // 5
        data[2 * frame + 30] ^= 0xFF  # inside record 2's payload
        segment.write_bytes(bytes(data))
        again = Spool.open(tmp_path, SpoolSettings(fsync=Fsync.NEVER), ["ledger"])
        assert again.recovery.corrupt == 1
        assert await drain(again) == [payload(i) for i in (0, 1, 3, 4)]
        again.close()

    run(main)


def test_full_spool_stops_accepting_until_drained(tmp_path: Path, caplog: Any) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SMALL, ["kafka"])
        appended = 0
        while spool.accepting:
            spool.append(FrameKind.USAGE, payload(appended), appended)
            appended += 1
        assert spool.unacked_bytes >= SMALL.max_bytes
        assert spool.status()["accepting"] is False
        # Records of requests already admitted are still written, never dropped.
        spool.append(FrameKind.USAGE, payload(appended), appended)
        assert await drain(spool, "kafka") == [payload(i) for i in range(appended + 1)]
        assert spool.status()["accepting"] is True
        spool.close()

    with caplog.at_level("WARNING", logger="router.usage.spool"):
        run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any("filling up" in m for m in messages)
    assert any("refused" in m for m in messages)
    # The first warning comes at warn_ratio, well before full.
    first = next(r for r in caplog.records if "filling up" in r.getMessage())
    assert 0.5 <= first.fill_ratio < 0.7


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    async def main() -> None:
        spool = Spool.open(tmp_path, SMALL, ["ledger"])
        with pytest.raises(SpoolError, match="in use by another router process"):
            Spool.open(tmp_path, SMALL, ["ledger"])
        spool.close()
        Spool.open(tmp_path, SMALL, ["ledger"]).close()

    run(main)


def test_a_second_process_is_told_which_directory_and_who_holds_it(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, SMALL, ["ledger"])
    try:
        with pytest.raises(SpoolError) as refused:
            Spool.open(tmp_path, SMALL, ["ledger"])
    finally:
        spool.close()
    message = str(refused.value)
    assert str(tmp_path.absolute()) in message
    assert f"(pid {os.getpid()})" in message
    assert "stop that router, or give this one its own state.dir" in message


def test_an_unopenable_spool_is_a_spool_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    with pytest.raises(SpoolError, match="cannot be opened") as refused:
        Spool.open(tmp_path / "spool", SMALL, ["ledger"])
    assert str((tmp_path / "spool").absolute()) in str(refused.value)
    assert "state.dir" in str(refused.value)


def test_a_spool_that_fails_after_locking_releases_the_lock(tmp_path: Path) -> None:
    # A segment that cannot be read fails the scan, after the lock is taken.
    (tmp_path / "00000000000000000000.spool").mkdir()
    with pytest.raises(SpoolError, match="cannot be opened"):
        Spool.open(tmp_path, SMALL, ["ledger"])
    (tmp_path / "00000000000000000000.spool").rmdir()
    # Not "in use by another router process": the failed open let the lock go.
    Spool.open(tmp_path, SMALL, ["ledger"]).close()
