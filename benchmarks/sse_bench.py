"""Cost of splitting a relayed SSE stream into events, measured in isolation.

    python benchmarks/sse_bench.py [--streams 20000]

Feeds `router_core.sse.EventSplitter` a streamed chat answer of 16 tokens as
the mock backend writes it (one event per chunk), with each line ending the
SSE spec allows, and the LF stream as a few large chunks (what a reader that
coalesces chunks, like aiohttp's, hands the relay under load) and one byte
at a time (the worst case).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from router_core.sse import EventSplitter
from router_server.mock_backend.payloads import Completion, with_line_ending


def events(line_ending: str) -> list[bytes]:
    completion = Completion("chat", "mock-gpt", 16, 12, stream=True, include_usage=True)
    return [with_line_ending(event, line_ending) for event, _ in completion.events()]


def per_stream_us(chunks: Sequence[bytes], streams: int) -> float:
    started = time.perf_counter()
    for _ in range(streams):
        splitter = EventSplitter()
        for chunk in chunks:
            splitter.feed(chunk)
    return (time.perf_counter() - started) / streams * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=20_000)
    streams = parser.parse_args().streams
    whole = b"".join(events("lf"))
    cases = {
        "lf, an event a chunk": events("lf"),
        "crlf, an event a chunk": events("crlf"),
        "cr, an event a chunk": events("cr"),
        "lf, 4 coalesced chunks": [
            whole[i : i + len(whole) // 4 + 1] for i in range(0, len(whole), len(whole) // 4 + 1)
        ],
    }
    for name, chunks in cases.items():
        us = per_stream_us(chunks, streams)
        print(f"{name:26} {us:7.2f} µs a stream ({len(chunks)} chunks)")
    byte_chunks = [whole[i : i + 1] for i in range(len(whole))]
    us = per_stream_us(byte_chunks, max(1, streams // 100))
    print(f"{'lf, a byte a chunk':26} {us:7.2f} µs a stream ({len(byte_chunks)} chunks)")


if __name__ == "__main__":
    main()
