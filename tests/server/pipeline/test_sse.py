"""SSE splitting: the same events come out however a stream's bytes are chunked."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core.sse import EventSplitter
from router_server.mock_backend.payloads import (
    LINE_ENDINGS,
    Completion,
    CompletionKind,
    with_line_ending,
)

BOM = b"\xef\xbb\xbf"
KINDS: list[CompletionKind] = ["chat", "text"]


def mock_stream(kind: CompletionKind, n_out: int, line_ending: str) -> bytes:
    """A whole streamed answer as the mock backend writes it."""
    completion = Completion(kind, "mock-gpt", n_out, 7, stream=True, include_usage=True)
    return b"".join(with_line_ending(event, line_ending) for event, _ in completion.events())


def reference_events(stream: bytes) -> list[bytes]:
    """The events of a whole stream, read line by line as the SSE spec reads them."""
    stream = stream.removeprefix(BOM)
    # The text after the last line end is an unfinished line of an unfinished event.
    *lines, _ = re.split(rb"\r\n|\r|\n", stream)
    events: list[bytes] = []
    current: list[bytes] = []
    for line in lines:
        if line:
            current.append(line)
        elif current:
            events.append(b"\n".join(current))
            current = []
    return events


def fed(chunks: Sequence[bytes]) -> list[bytes]:
    splitter = EventSplitter()
    return [event for chunk in chunks for event in splitter.feed(chunk)]


def split_at(stream: bytes, offsets: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(offsets), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("line_ending", list(LINE_ENDINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_mock_stream_split_at_every_offset(kind: CompletionKind, line_ending: str) -> None:
    stream = mock_stream(kind, 3, line_ending)
    whole = fed([stream])
    # Only `id` and `created` differ between two renderings: compare the count.
    assert len(whole) == len(fed([mock_stream(kind, 3, "lf")]))
    assert whole == reference_events(stream)
    assert all(b"\r" not in event and not event.endswith(b"\n") for event in whole)
    assert whole[-1] == b"data: [DONE]"
    for offset in range(len(stream) + 1):
        assert fed(split_at(stream, [offset])) == whole, offset


@given(
    kind=st.sampled_from(KINDS),
    n_out=st.integers(0, 6),
    line_ending=st.sampled_from(list(LINE_ENDINGS)),
    data=st.data(),
)
def test_a_mock_stream_split_at_random_offsets(
    kind: CompletionKind, n_out: int, line_ending: str, data: st.DataObject
) -> None:
    stream = mock_stream(kind, n_out, line_ending)
    offsets = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    assert fed(split_at(stream, offsets)) == fed([stream]) == reference_events(stream)


# Streams of SSE's own vocabulary: fields, comments, empty lines, every line end.
_LINE = st.sampled_from(
    [b"data: x", b"data:{}", b"event: e", b"id: 1", b": keep-alive", b"retry: 5", b"data"]
)
_END = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    parts = [BOM] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 3)):
            parts.append(draw(_LINE))
        parts.append(draw(_END))
    if draw(st.booleans()):
        parts.append(draw(_LINE))  # an unfinished last line
    return b"".join(parts)


@given(stream=sse_streams(), data=st.data())
def test_any_stream_any_split_reads_as_the_spec_says(stream: bytes, data: st.DataObject) -> None:
    offsets = data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))
    assert fed(split_at(stream, offsets)) == reference_events(stream)


def test_byte_by_byte() -> None:
    stream = mock_stream("chat", 4, "crlf")
    assert fed([stream[i : i + 1] for i in range(len(stream))]) == reference_events(stream)


def test_a_crlf_split_between_its_cr_and_lf_is_one_line_end() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\n\r") == [b"data: a"]
    # The LF completes the CRLF above; it is not an empty line of its own.
    assert splitter.feed(b"\ndata: b\r") == []
    assert splitter.feed(b"") == []
    assert splitter.feed(b"\n\r\n") == [b"data: b"]


def test_empty_lines_and_a_bom() -> None:
    splitter = EventSplitter()
    assert splitter.feed(BOM[:1]) == []
    assert splitter.feed(BOM[1:] + b"\n\n: hi\n\n\n\nevent: e\ndata: 1\n") == [b": hi"]
    assert splitter.feed(b"\n") == [b"event: e\ndata: 1"]
    # A BOM anywhere else is content.
    assert EventSplitter().feed(b"data: " + BOM + b"\n\n") == [b"data: " + BOM]
