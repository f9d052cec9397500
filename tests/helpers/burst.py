"""Requests truly in flight at once: every connection is opened before any
request is written, and every request is written before any answer is read.

An HTTP client pool (httpx's included) sends no more requests at once than it
has connections, and opens them as it goes: a "1,000 concurrent requests"
test built on one may never have more than a pool's worth in flight. Here all
N connections are open together, so the router holds N requests at once.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson


def allow_open_files(needed: int) -> None:
    """Raise this process's soft limit of open files to at least `needed` (up
    to the hard limit): N client sockets need N descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any] | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # chunked or to the end: read what is there
        body = await reader.read()
    try:
        parsed = orjson.loads(body) if body[:1] in (b"{", b"[") else None
    except orjson.JSONDecodeError:
        parsed = None
    return status, parsed


async def burst(
    url: str,
    path: str,
    requests: Sequence[tuple[Mapping[str, Any], Mapping[str, str]]],
    *,
    urls: Sequence[str] | None = None,
    timeout_s: float = 120.0,
) -> list[tuple[int, dict[str, Any] | None]]:
    """POST each (body, headers) of `requests` to `path`, on its own connection,
    all at once; the i-th goes to `urls[i % len(urls)]` (default: `url`).
    Returns (status, JSON body or None) per request, in order."""
    targets = list(urls or [url])
    allow_open_files(len(requests) + 256)

    async def connect(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(targets[i % len(targets)])
        return await asyncio.open_connection(parts.hostname, parts.port)

    async with asyncio.timeout(timeout_s):
        connections = await asyncio.gather(*(connect(i) for i in range(len(requests))))
        try:
            for (_, writer), (body, headers) in zip(connections, requests, strict=True):
                payload = orjson.dumps(body)
                host = urlsplit(targets[0]).netloc
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(
                    f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\nconnection: close\r\n{head}\r\n".encode()
                    + payload
                )
            await asyncio.gather(*(writer.drain() for _, writer in connections))
            return list(await asyncio.gather(*(_answer(reader) for reader, _ in connections)))
        finally:
            for _, writer in connections:
                writer.close()
