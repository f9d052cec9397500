"""A reader of the spool: one consumer's cursor, batches, and acknowledgements."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs

from router_core.accounting import frames

if TYPE_CHECKING:
    from router_server.usage.spool import Spool


def _read(
    path: Path, position: int, offset: int, segment_end: int, max_records: int, max_bytes: int
) -> frames.Decoded:
    """Decode up to `max_records` frames of `path` from `position` (global `offset`)."""
    with path.open("rb") as file:
        file.seek(position)
        while True:
            data = file.read(min(segment_end - offset, max_bytes))
            decoded = frames.decode(data, offset, final=False, limit=max_records)
            if decoded.frames or not decoded.incomplete or len(data) >= segment_end - offset:
                return decoded
            max_bytes *= 2  # one record larger than max_bytes
            file.seek(position)


@attrs.define(eq=False)
class SpoolReader:
    """One consumer's position in the spool: read a batch, deliver it, acknowledge it."""

    spool: Spool
    name: str
    cursor: int
    pending: int = 0
    # The unacknowledged batch in hand, oldest first.
    batch: list[frames.Frame] = attrs.field(factory=list)

    def oldest_unacked_us(self) -> int | None:
        return self.batch[0].appended_at_us if self.batch else None

    async def read(self, max_records: int, max_bytes: int = 1 << 20) -> list[frames.Frame]:
        """The next batch after the cursor (waiting for one), until acknowledged."""
        while not self.batch:
            if self.cursor >= self.spool.end:
                await self.spool.changed()
                continue
            # Where to read is decided here, on the event loop that appends and
            # collects segments; only the file read and decoding go to a thread.
            segments = self.spool.segments
            base = max(b for b in segments if b <= self.cursor)
            index = segments.index(base)
            segment_end = segments[index + 1] if index + 1 < len(segments) else self.spool.end
            path = self.spool._path(base)
            decoded = await anyio.to_thread.run_sync(
                _read, path, self.cursor - base, self.cursor, segment_end, max_records, max_bytes
            )
            if decoded.frames:
                self.batch = list(decoded.frames)
            else:
                # Only damage (reported when the spool was opened): skip it.
                self.cursor = decoded.end if decoded.end > self.cursor else segment_end
        return self.batch

    def ack(self) -> None:
        """The batch in hand is delivered: advance and persist the cursor."""
        if not self.batch:
            return
        self.pending -= len(self.batch)
        self.cursor = self.batch[-1].end
        self.batch = []
        path = self.spool.directory / f"cursor.{self.name}"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(str(self.cursor))
        os.replace(temporary, path)
        self.spool.collect()
