"""Incremental splitting of a Server-Sent Events stream into events.

Rules (the WHATWG HTML "event stream" grammar, as far as a relay needs it):
- A line ends at LF, CRLF or a lone CR; an empty line ends the event. A CR
  that ends one chunk may be the first half of a CRLF whose LF opens the
  next chunk: that pair is one line end, never two.
- A UTF-8 byte order mark at the very start of the stream is dropped.
- Events are returned whole and in order, as soon as their empty line has
  arrived, each as its lines joined by LF with no line end after the last
  (`data: x` or `event: e\\ndata: x`), whatever the backend used. Runs of
  empty lines yield nothing. Lines are not interpreted: comments, fields and
  their values pass through as they came.
- How the bytes were split into chunks never changes the events that come
  out. An event still open when the stream ends is never returned (the spec
  discards it too).

This runs once per backend chunk of every relayed stream, so the common case
(LF line ends, whole events in a chunk) is a few scans in C and one split.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"
_LF = b"\n"
_CR = b"\r"
_BLANK = b"\n\n"


class EventSplitter:
    """Feed it the stream's chunks; each `feed` returns the events they completed."""

    __slots__ = ("_after_cr", "_at_start", "_pending")

    def __init__(self) -> None:
        # Chunks (already LF-normalised) of the event not yet complete.
        self._pending: list[bytes] = []
        # The previous chunk ended in CR, so an LF opening this one is its CRLF.
        self._after_cr = False
        self._at_start = True

    def feed(self, chunk: bytes) -> list[bytes]:
        # `find` rather than `in`: for bytes it is the faster of the two. And
        # `rfind` for the empty line: a chunk usually ends with one.
        if chunk.find(_CR) >= 0 or self._after_cr or self._at_start:
            chunk = self._normalised(chunk)
        pending = self._pending
        if pending:
            # An event ends inside this chunk, or where the last one left a
            # line end and this one opens with the empty line.
            if chunk.rfind(_BLANK) < 0 and not (pending[-1][-1:] == _LF and chunk[:1] == _LF):
                if chunk:
                    pending.append(chunk)
                return []
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
        elif chunk.rfind(_BLANK) < 0:
            if chunk:
                pending.append(chunk)
            return []
        events = chunk.split(_BLANK)
        rest = events.pop()
        if rest:
            pending.append(rest)
        for event in events:
            if not event or event[0] == 10:  # LF
                # A run of empty lines: "a\n\n\n\nb\n\n" splits into "a", "", "b",
                # and "a\n\n\nb\n\n" into "a", "\nb".
                return [e[1:] if e[:1] == _LF else e for e in events if e]
        return events

    def _normalised(self, chunk: bytes) -> bytes:
        """`chunk` with LF line ends only, and without the stream's leading BOM."""
        if self._after_cr and chunk[:1] == _LF:
            chunk = chunk[1:]
        if chunk:
            # An empty chunk leaves a CR before it free to pair with an LF after it.
            self._after_cr = chunk[-1] == 13  # CR
            chunk = chunk.replace(b"\r\n", _LF)
            if chunk.find(_CR) >= 0:
                chunk = chunk.replace(_CR, _LF)
        if self._at_start:
            # The BOM may itself arrive split; hold its first bytes until it is whole.
            seen = b"".join(self._pending) + chunk
            if len(seen) < len(_BOM) and _BOM.startswith(seen):
                self._pending = [seen] if seen else []
                return b""
            self._at_start = False
            self._pending = []
            chunk = seen[len(_BOM) :] if seen.startswith(_BOM) else seen
        return chunk
