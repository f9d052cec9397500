"""The disk spool's record framing: bytes in, bytes out, no files.

Rules:
- A frame is `header | payload`; the header is the magic `RSP1`, the record
  kind (1 usage, 2 audit), the payload length, the time it was appended (µs)
  and a CRC-32 over kind, length, time and payload. A frame is valid only if
  its magic, length bound and checksum all hold, so a torn or overwritten
  record is never taken for data.
- Decoding never guesses: bytes that do not form a valid frame are reported
  as a `Damage` (where, how long, why) and skipped up to the next valid
  frame; nothing inside them is delivered.
- At the end of the data a short frame is `incomplete` while the file may
  still grow; when the caller says the data is final (recovery after a
  crash), it is damage of kind `torn`.
"""

from __future__ import annotations

import enum
import struct
import zlib

import attrs

MAGIC = b"RSP1"
_HEADER = struct.Struct(">4sBIqI")
HEADER_SIZE = _HEADER.size
# A record is a few hundred bytes; anything this large is a corrupt length.
MAX_PAYLOAD = 1 << 20


class FrameKind(enum.IntEnum):
    """Which record a spool frame carries (the byte after the magic)."""

    USAGE = 1
    AUDIT = 2


@attrs.frozen
class Frame:
    offset: int
    kind: FrameKind
    appended_at_us: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + len(self.payload)


@attrs.frozen
class Damage:
    offset: int
    length: int
    # "torn": the data ends inside a frame; "corrupt": bad magic, length or checksum.
    reason: str


@attrs.frozen
class Decoded:
    frames: tuple[Frame, ...]
    damage: tuple[Damage, ...]
    # Where decoding stopped: the end of the last frame or damage.
    end: int
    # Bytes after `end` that may become a frame once the writer finishes it.
    incomplete: int


def _checksum(kind: int, length: int, at_us: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack(">BIq", kind, length, at_us)))


def encode(kind: FrameKind, payload: bytes, appended_at_us: int) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a spool record is at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    crc = _checksum(kind, len(payload), appended_at_us, payload)
    return _HEADER.pack(MAGIC, kind, len(payload), appended_at_us, crc) + payload


def _frame_at(data: bytes, pos: int) -> Frame | bool | None:
    """The valid frame at `pos`; False if invalid; None if the data ends inside it."""
    if len(data) - pos < HEADER_SIZE:
        return None if MAGIC.startswith(data[pos : pos + 4]) else False
    magic, kind, length, at_us, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC or kind not in (1, 2) or length > MAX_PAYLOAD:
        return False
    end = pos + HEADER_SIZE + length
    if end > len(data):
        return None
    payload = data[pos + HEADER_SIZE : end]
    if _checksum(kind, length, at_us, payload) != crc:
        return False
    return Frame(pos, FrameKind(kind), at_us, payload)


def decode(data: bytes, base: int = 0, *, final: bool, limit: int | None = None) -> Decoded:
    """The frames in `data` (which starts at offset `base` of the spool), at most `limit`."""
    frames: list[Frame] = []
    damage: list[Damage] = []
    pos = 0
    while pos < len(data) and (limit is None or len(frames) < limit):
        found = _frame_at(data, pos)
        if isinstance(found, Frame):
            frames.append(attrs.evolve(found, offset=base + pos))
            pos = found.end
            continue
        if found is None and not final:
            return Decoded(tuple(frames), tuple(damage), base + pos, len(data) - pos)
        resync = _next_valid(data, pos + 1)
        if resync is None:
            reason = "torn" if found is None or _tail_looks_torn(data, pos) else "corrupt"
            damage.append(Damage(base + pos, len(data) - pos, reason))
            pos = len(data)
        else:
            damage.append(Damage(base + pos, resync - pos, "corrupt"))
            pos = resync
    return Decoded(tuple(frames), tuple(damage), base + pos, 0)


def _tail_looks_torn(data: bytes, pos: int) -> bool:
    """A frame header whose declared length runs past the end: a write cut short."""
    if len(data) - pos < HEADER_SIZE:
        return MAGIC.startswith(data[pos : pos + 4])
    magic, kind, length, _, _ = _HEADER.unpack_from(data, pos)
    return magic == MAGIC and kind in (1, 2) and pos + HEADER_SIZE + length > len(data)


def _next_valid(data: bytes, start: int) -> int | None:
    pos = data.find(MAGIC, start)
    while pos != -1:
        if isinstance(_frame_at(data, pos), Frame):
            return pos
        pos = data.find(MAGIC, pos + 1)
    return None
