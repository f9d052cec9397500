"""The disk spool: an append-only log of framed records, drained in order by readers.

Rules:
- Every usage and audit record is appended here (one `os.write`, so a
  process crash after it loses nothing) before the request is answered;
  `fsync` follows the configured policy. The ledger and the Kafka exporter
  read it through their own cursor, and a record stays until every reader
  has acknowledged it.
- The spool is segment files named by the global byte offset they start at,
  so offsets are contiguous and a cursor is one integer (`cursor.NAME`,
  replaced atomically after each acknowledged batch). A cursor that lags
  after a crash means redelivery, never loss: readers dedupe by record id.
- On open, the spool is locked (one process per directory) and scanned from
  the oldest cursor: a torn record at the end (a write cut short) is cut
  off and moved to `quarantine/`, a corrupt region is skipped; both are
  logged loudly and counted, and nothing in them is delivered.
- Bounded: past `max_bytes` of unacknowledged records the spool stops
  accepting (the sink refuses new requests with 503); records of requests
  already admitted are still written. It warns at `warn_ratio` and every
  further tenth.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from router_core.accounting import frames
from router_core.config import SpoolSettings
from router_server.usage.spool_reader import SpoolReader

log = logging.getLogger("router.usage.spool")

_SEGMENT_SUFFIX = ".spool"


class SpoolError(RuntimeError):
    """The spool cannot be opened (locked by another process, unreadable)."""


def _segment_name(base: int) -> str:
    return f"{base:020d}{_SEGMENT_SUFFIX}"


@attrs.define
class Recovery:
    torn: int = 0
    corrupt: int = 0
    damaged_bytes: int = 0


@attrs.define
class Spool:
    directory: Path
    settings: SpoolSettings
    readers: dict[str, SpoolReader] = attrs.field(factory=dict)
    # Segment bases, oldest first; the last one is appended to.
    segments: list[int] = attrs.field(factory=list)
    end: int = 0
    recovery: Recovery = attrs.field(factory=Recovery)
    refused: int = 0
    _fd: int = -1
    _segment_size: int = 0
    _lock_fd: int = -1
    _appended: int = 0
    _synced: int = 0
    _sync_lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    _changed: anyio.Event = attrs.field(factory=anyio.Event)
    _warned_tenths: int = 0

    @classmethod
    def open(cls, directory: Path, settings: SpoolSettings, readers: Sequence[str]) -> Spool:
        """The spool in `directory`, locked for this process; `SpoolError` if it
        cannot be (the lock is released again whatever fails after taking it)."""
        spool = cls(directory, settings)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            spool._lock()
            spool._scan(readers)
        except OSError as exc:
            spool.close()
            raise SpoolError(
                f"the usage spool {directory.absolute()} cannot be opened "
                f"({exc.strerror or exc}); make it a writable directory or set state.dir "
                "to one"
            ) from None
        except BaseException:
            spool.close()
            raise
        return spool

    # -- setup ---------------------------------------------------------------

    def _scan(self, readers: Sequence[str]) -> None:
        bases = sorted(
            int(p.name.removesuffix(_SEGMENT_SUFFIX))
            for p in self.directory.glob("*" + _SEGMENT_SUFFIX)
            if p.name.removesuffix(_SEGMENT_SUFFIX).isdigit()
        )
        self.segments = bases or [0]
        last = self.segments[-1]
        self.end = last + self._size(last)
        for name in readers:
            self.readers[name] = SpoolReader(self, name, self._load_cursor(name))
        self._recover()
        self._open_segment(self.segments[-1])

    def _lock(self) -> None:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise SpoolError(
                f"the usage spool {self.directory.absolute()} is in use by another router "
                f"process{f' (pid {holder})' if holder.isdigit() else ''}; stop that router, "
                "or give this one its own state.dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        # The holder's pid, for the message a second process gets (the flock is the lock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _path(self, base: int) -> Path:
        return self.directory / _segment_name(base)

    def _size(self, base: int) -> int:
        try:
            return self._path(base).stat().st_size
        except FileNotFoundError:
            return 0

    def _load_cursor(self, name: str) -> int:
        try:
            offset = int((self.directory / f"cursor.{name}").read_text().strip())
        except (FileNotFoundError, ValueError):
            offset = self.segments[0]
        return min(max(offset, self.segments[0]), self.end)

    def _recover(self) -> None:
        """Scan what readers have yet to read; cut off a torn tail, count damage."""
        start = min((r.cursor for r in self.readers.values()), default=self.end)
        for base in [b for b in self.segments if b + self._size(b) > start]:
            data = self._path(base).read_bytes()
            skip = max(0, start - base)
            decoded = frames.decode(data[skip:], base + skip, final=True)
            for reader in self.readers.values():
                reader.pending += sum(1 for f in decoded.frames if f.offset >= reader.cursor)
            for damage in decoded.damage:
                self._report(base, damage, data)
            tail = decoded.damage[-1] if decoded.damage else None
            at_end = tail is not None and tail.offset + tail.length == base + len(data)
            if tail is not None and at_end and tail.reason == "torn" and base == self.segments[-1]:
                os.truncate(self._path(base), tail.offset - base)
                self.end = tail.offset
        for reader in self.readers.values():
            reader.cursor = min(reader.cursor, self.end)

    def _report(self, base: int, damage: frames.Damage, data: bytes) -> None:
        if damage.reason == "torn":
            self.recovery.torn += 1
        else:
            self.recovery.corrupt += 1
        self.recovery.damaged_bytes += damage.length
        quarantine = self.directory / "quarantine"
        quarantine.mkdir(exist_ok=True)
        start = damage.offset - base
        target = quarantine / f"{damage.offset:020d}.{damage.reason}"
        target.write_bytes(data[start : start + damage.length])
        log.error(
            "spool: damaged record not delivered",
            extra={
                "reason": damage.reason,
                "segment": _segment_name(base),
                "offset": damage.offset,
                "bytes": damage.length,
                "quarantined_to": str(target),
            },
        )

    def _open_segment(self, base: int) -> None:
        if self._fd >= 0:
            if self.settings.fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
        self._fd = os.open(self._path(base), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = self._size(base)

    # -- writing -------------------------------------------------------------

    @property
    def unacked_bytes(self) -> int:
        return self.end - min((r.cursor for r in self.readers.values()), default=self.end)

    @property
    def accepting(self) -> bool:
        """Whether a new request may be admitted (its record will fit)."""
        return self.unacked_bytes < self.settings.max_bytes

    def append(self, kind: frames.FrameKind, payload: bytes, now_us: int) -> None:
        frame = frames.encode(kind, payload, now_us)
        if self._segment_size >= self.settings.segment_bytes:
            self.segments.append(self.end)
            self._open_segment(self.end)
        written = os.write(self._fd, frame)
        if written != len(frame):  # a short write on a full disk: never leave half a frame
            raise OSError(f"spool: short write ({written} of {len(frame)} bytes)")
        self._segment_size += written
        self.end += written
        self._appended += 1
        for reader in self.readers.values():
            reader.pending += 1
        self._changed.set()
        self._changed = anyio.Event()
        self._check_fill()

    def _check_fill(self) -> None:
        ratio = self.unacked_bytes / self.settings.max_bytes
        tenths = int(ratio * 10)
        if ratio >= self.settings.warn_ratio and tenths > self._warned_tenths:
            self._warned_tenths = tenths
            level = logging.ERROR if ratio >= 1 else logging.WARNING
            log.log(
                level,
                "usage spool filling up: records are not being drained"
                + ("; new requests are refused (503 usage_spool_full)" if ratio >= 1 else ""),
                extra={"fill_ratio": round(ratio, 3), "bytes": self.unacked_bytes},
            )
        elif ratio < self.settings.warn_ratio:
            self._warned_tenths = 0

    async def sync(self) -> None:
        """fsync everything appended so far (one fsync in a worker thread covers
        every record appended before it started: a group commit)."""
        target = self._appended
        async with self._sync_lock:
            if self._synced >= target or self._fd < 0:
                return
            upto = self._appended
            # OSError: the segment rolled over meanwhile; rolling fsyncs the old one itself.
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(os.fsync, self._fd)
            self._synced = upto

    async def sync_forever(self) -> None:
        interval = self.settings.fsync_interval_ms / 1000
        while True:
            await anyio.sleep(interval)
            await self.sync()

    async def changed(self) -> None:
        await self._changed.wait()

    # -- readers ---------------------------------------------------------------

    def collect(self) -> None:
        """Delete segments every reader has passed (never the one being appended to)."""
        low = min((r.cursor for r in self.readers.values()), default=self.end)
        while len(self.segments) > 1 and self.segments[1] <= low:
            self._path(self.segments.pop(0)).unlink(missing_ok=True)
        self._check_fill()

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def status(self) -> dict[str, Any]:
        return {
            "bytes": self.unacked_bytes,
            "max_bytes": self.settings.max_bytes,
            "fill_ratio": round(self.unacked_bytes / self.settings.max_bytes, 4),
            "accepting": self.accepting,
            "refused_requests": self.refused,
            "records": max((r.pending for r in self.readers.values()), default=0),
            "segments": len(self.segments),
            "torn_records": self.recovery.torn,
            "corrupt_regions": self.recovery.corrupt,
        }
