"""Spool framing: what is written is read back; damage is reported, never decoded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router_core.accounting import frames
from router_core.accounting.frames import HEADER_SIZE, FrameKind, decode, encode

payloads = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=20)


@given(payloads)
def test_frames_round_trip(items: list[bytes]) -> None:
    data = b"".join(encode(FrameKind.USAGE, p, i) for i, p in enumerate(items))
    decoded = decode(data, 1000, final=True)
    assert [f.payload for f in decoded.frames] == items
    assert [f.appended_at_us for f in decoded.frames] == list(range(len(items)))
    assert decoded.frames[0].offset == 1000
    assert decoded.end == 1000 + len(data)
    assert decoded.damage == ()


@given(payloads, st.data())
def test_a_torn_last_frame_is_reported_not_decoded(items: list[bytes], data: st.DataObject) -> None:
    whole = b"".join(encode(FrameKind.AUDIT, p, 7) for p in items)
    last = encode(FrameKind.USAGE, b'{"record_id": "torn"}', 8)
    cut = data.draw(st.integers(1, len(last) - 1))
    decoded = decode(whole + last[:cut], 0, final=True)
    assert [f.payload for f in decoded.frames] == items
    assert decoded.damage == (frames.Damage(len(whole), cut, "torn"),)
    # While the writer may still be writing, the same bytes are just incomplete.
    live = decode(whole + last[:cut], 0, final=False)
    assert live.damage == ()
    assert live.incomplete == cut
    assert live.end == len(whole)


@given(payloads, st.data())
def test_a_flipped_bit_is_corruption_and_the_rest_is_still_read(
    items: list[bytes], data: st.DataObject
) -> None:
    encoded = [encode(FrameKind.USAGE, p, 1) for p in items]
    victim = data.draw(st.integers(0, len(encoded) - 1))
    position = data.draw(st.integers(0, len(encoded[victim]) - 1))
    broken = bytearray(encoded[victim])
    broken[position] ^= 0x01
    blob = b"".join(encoded[:victim]) + bytes(broken) + b"".join(encoded[victim + 1 :])
    decoded = decode(blob, 0, final=True)
    survivors = [f.payload for f in decoded.frames]
    assert items[victim] not in survivors or items.count(items[victim]) > 1
    assert survivors == items[:victim] + items[victim + 1 :]
    assert len(decoded.damage) == 1
    assert decoded.damage[0].offset == sum(len(e) for e in encoded[:victim])


def test_garbage_alone_is_all_damage() -> None:
    decoded = decode(b"\x00" * 100, 0, final=True)
    assert decoded.frames == ()
    assert decoded.damage == (frames.Damage(0, 100, "corrupt"),)


def test_limit_stops_early() -> None:
    data = b"".join(encode(FrameKind.USAGE, b"x" * 10, i) for i in range(5))
    decoded = decode(data, 0, final=True, limit=2)
    assert len(decoded.frames) == 2
    assert decoded.end == 2 * (HEADER_SIZE + 10)
