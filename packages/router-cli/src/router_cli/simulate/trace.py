"""Reading a traffic trace: one JSON object per line.

Fields of a line (anything else is an error, so a typo is not silently ignored):

- `ts` (required): when the request arrived, in seconds since the Unix epoch
  (a number, fractions allowed) or an ISO 8601 string with a time zone
  (`2026-03-02T09:00:00.250Z`).
- `key` or `org` (exactly one): the API key id (the `id` in the config, not
  the secret), so the key's organization and the key's own limits apply; or
  an organization, for traces that do not know keys.
- `model` (required): the public model name asked for.
- `prompt_tokens`, `completion_tokens` (required): integers >= 0; the
  completion is what the backend generated (capped at the max_tokens the
  router holds the request to).
- `max_tokens` (optional): integer >= 1, the request's own; without it the
  router reserves `limits.default_max_tokens` when a token or spend limit applies.
- `operation` (optional): `chat` (default), `completion` or `embedding`.
- `segments` (optional): what the prompt starts with, for the backends'
  prefix caches and affinity: a list of `[id, tokens]` pairs, each one
  message of that many tokens whose text is derived from its id alone (so
  two requests with a segment of the same id share that text: a system
  prompt, or a conversation's earlier turns). Their tokens add up to at most
  `prompt_tokens`; the rest of the prompt is text of this request's own.
  Without it the whole prompt is the request's own.
- `answer` (optional): the segment id the completion has where a later
  prompt repeats it (a conversation's next turn): the server that generated
  it keeps it in its prefix cache after the prompt.
- `session` (optional): a non-empty string, the conversation the request
  belongs to (the live router reads it from the model's `session_header`).
- `id` (optional): a label, ignored.

Timestamps must not go backwards. A bad line stops the run with every
problem found (up to `MAX_PROBLEMS`), each as `FILE:LINE: what is wrong`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import NamedTuple

import orjson

MAX_PROBLEMS = 20
# Token counts above this are mistakes, and would overflow the limits' exact integers.
MAX_TOKENS = 10**9
OPERATIONS = ("chat", "completion", "embedding")
FIELDS = frozenset(
    ("ts", "key", "org", "model", "prompt_tokens", "completion_tokens", "max_tokens", "operation",
     "segments", "session", "answer")
)  # fmt: skip
# Segments of one prompt at most (a conversation of this many messages is a mistake).
MAX_SEGMENTS = 1000
_ALLOWED = FIELDS | {"id"}
# Latest instant the limits accept (2**52 µs after the epoch, in 2112).
_MAX_TS_S = 2**52 / 1_000_000


class TraceRecord(NamedTuple):
    ts_us: int
    # Exactly one of key and org is set.
    key: str | None
    org: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int | None
    operation: str
    line: int
    # The prompt's leading segments, (id, tokens) each; () when it has none.
    segments: tuple[tuple[str, int], ...] = ()
    session: str | None = None
    answer: str | None = None


class TraceInvalid(Exception):
    """The trace cannot be replayed; `problems` lists `SOURCE:LINE: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _LineError(ValueError):
    pass


def _count(data: dict[str, object], name: str, low: int, *, required: bool = True) -> int | None:
    value = data.get(name)
    if value is None and not required and name not in data:
        return None
    if type(value) is not int or not low <= value <= MAX_TOKENS:
        raise _LineError(
            f"{name} must be an integer from {low} to {MAX_TOKENS:,}, not {_show(value)}"
        )
    return value


def _show(value: object) -> str:
    if value is None:
        return "missing (or null)"
    text = orjson.dumps(value).decode() if isinstance(value, str | int | float | bool) else None
    return text if text is not None else type(value).__name__


def _timestamp(value: object) -> int:
    if type(value) is float or type(value) is int:
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _LineError(f"ts {value!r} is not an ISO 8601 date and time") from None
        if parsed.tzinfo is None:
            raise _LineError(f"ts {value!r} needs a time zone (e.g. 'Z' or '+00:00')")
        seconds = parsed.timestamp()
    else:
        raise _LineError(
            f"ts must be seconds since the epoch or an ISO 8601 string, not {_show(value)}"
        )
    if not 0 <= seconds < _MAX_TS_S:
        raise _LineError(f"ts {value!r} is out of range (seconds since 1970, before 2112)")
    return round(seconds * 1_000_000)


def parse_line(raw: bytes | str, line: int) -> TraceRecord:
    """One record; raises `_LineError` with the reason."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if type(data) is not dict:
        raise _LineError("must be a JSON object")
    if not data.keys() <= _ALLOWED:
        unknown = ", ".join(sorted(data.keys() - _ALLOWED))
        raise _LineError(f"unknown field(s) {unknown}; allowed: {', '.join(sorted(_ALLOWED))}")
    ts_us = _timestamp(data.get("ts"))
    key, org = data.get("key"), data.get("org")
    if (key is None) == (org is None):
        raise _LineError("needs exactly one of 'key' (a key id) and 'org' (an organization)")
    for name, value in (("key", key), ("org", org)):
        if value is not None and (type(value) is not str or not value):
            raise _LineError(f"{name} must be a non-empty string, not {_show(value)}")
    model = data.get("model")
    if type(model) is not str or not model:
        raise _LineError(f"model must be a non-empty string, not {_show(model)}")
    operation = data.get("operation", "chat")
    if operation not in OPERATIONS:
        raise _LineError(
            f"operation must be one of {', '.join(OPERATIONS)}, not {_show(operation)}"
        )
    prompt = _count(data, "prompt_tokens", 0)
    completion = _count(data, "completion_tokens", 0)
    max_tokens = _count(data, "max_tokens", 1, required=False)
    assert prompt is not None
    assert completion is not None
    segments = _segments(data.get("segments"), prompt) if "segments" in data else ()
    session, answer = data.get("session"), data.get("answer")
    for name, value in (("session", session), ("answer", answer)):
        if value is not None and (type(value) is not str or not value):
            raise _LineError(f"{name} must be a non-empty string, not {_show(value)}")
    return TraceRecord(
        ts_us,
        key,
        org,
        model,
        prompt,
        completion,
        max_tokens,
        str(operation),
        line,
        segments,
        session,
        answer,
    )


def _segments(value: object, prompt_tokens: int) -> tuple[tuple[str, int], ...]:
    shape = 'a list of [id, tokens] pairs like [["system-1", 1200], ["turn-1", 80]]'
    if type(value) is not list or len(value) > MAX_SEGMENTS:
        raise _LineError(f"segments must be {shape} (at most {MAX_SEGMENTS}), not {_show(value)}")
    segments: list[tuple[str, int]] = []
    total = 0
    for i, item in enumerate(value):
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not str
            or not item[0]
            or type(item[1]) is not int
            or not 1 <= item[1] <= MAX_TOKENS
        ):
            raise _LineError(
                f"segments[{i}] must be [id, tokens] with a non-empty id and tokens from 1 "
                f"to {MAX_TOKENS:,}, not {_show(item)}"
            )
        segments.append((item[0], item[1]))
        total += item[1]
    if total > prompt_tokens:
        raise _LineError(
            f"segments add up to {total:,} tokens, more than prompt_tokens ({prompt_tokens:,})"
        )
    return tuple(segments)


def read_trace(lines: Iterable[bytes | str], source: str = "trace") -> Iterator[TraceRecord]:
    """The records of a trace, in order. On the first bad line, keeps reading only
    to list further problems (up to MAX_PROBLEMS), then raises `TraceInvalid`."""
    problems: list[str] = []
    last_ts = -1
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = parse_line(raw, number)
            if record.ts_us < last_ts:
                raise _LineError(
                    f"ts goes backwards ({record.ts_us / 1e6:.6f} after {last_ts / 1e6:.6f}); "
                    "sort the trace by ts"
                )
        except _LineError as exc:
            problems.append(f"{source}:{number}: {exc}")
            if len(problems) >= MAX_PROBLEMS:
                break
            continue
        last_ts = record.ts_us
        if not problems:
            yield record
    if problems:
        raise TraceInvalid(problems)
