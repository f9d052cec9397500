"""Reading self-hosted backends' own load from their Prometheus metrics.

Rules:
- One task per backend with `load_metrics`, started with the app; the set
  follows the running config (a reload adds, restarts or stops tasks; a
  backend whose settings did not change keeps its task).
- Never on a request's path: a request reads the last reading from `Health`,
  which drops it once it is older than `stale_after_s` (routing then goes by
  the router's own counts).
- Each read is bounded: `timeout_s` for the whole of it, `max_bytes` of
  body (the declared length is checked first, then the bytes as they come;
  compression is declined so the bound holds for what is parsed). No
  credential is sent: the page is the server's, not the API's.
- A failed read (timeout, unreachable, a status other than 200, too large,
  not that server's metrics) is counted by reason and logged once when the
  backend's readings start failing; the last good reading stays until it
  goes stale.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import anyio
import anyio.abc
import attrs
import httpx

from router_core.config import Backend, LoadMetricsSettings, RouterConfig
from router_core.load_metrics import MetricsError, parse
from router_server.backends import _Borrowed
from router_server.health import Health

log = logging.getLogger("router.health")

# How often the set of tasks is matched to the running config.
FOLLOW_S = 0.5
_HEADERS = {"accept-encoding": "identity", "accept": "text/plain"}


def metrics_url(backend: Backend) -> str:
    """The backend's metrics page: `load_metrics.url`, else its origin's /metrics."""
    metrics = backend.load_metrics
    if metrics is not None and metrics.url is not None:
        return metrics.url
    parts = urlsplit(backend.base_url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@attrs.define
class LoadScraper:
    health: Health
    # The transport backend calls go through (tests), else the network.
    transport: httpx.AsyncBaseTransport | None = None
    _failing: set[str] = attrs.field(factory=set, init=False)

    @property
    def config(self) -> RouterConfig:
        return self.health.config()

    async def run(self) -> None:
        """Scrape every backend that asks for it, for as long as the app runs."""
        transport = (
            httpx.AsyncHTTPTransport() if self.transport is None else _Borrowed(self.transport)
        )
        running: dict[str, tuple[tuple[LoadMetricsSettings, str], anyio.CancelScope]] = {}
        async with (
            httpx.AsyncClient(transport=transport, headers=_HEADERS, trust_env=False) as client,
            anyio.create_task_group() as tg,
        ):
            followed: RouterConfig | None = None
            while True:
                config = self.config
                if config is not followed:
                    followed = config
                    self._follow(config, running, client, tg)
                await anyio.sleep(FOLLOW_S)

    def _follow(
        self,
        config: RouterConfig,
        running: dict[str, tuple[tuple[LoadMetricsSettings, str], anyio.CancelScope]],
        client: httpx.AsyncClient,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        wanted = {
            name: (backend.load_metrics, metrics_url(backend))
            for name, backend in config.backends.items()
            if backend.load_metrics is not None
        }
        for name, (settings, scope) in list(running.items()):
            if wanted.get(name) != settings:
                scope.cancel()
                del running[name]
        for name, (metrics, url) in wanted.items():
            if name not in running:
                scope = anyio.CancelScope()
                running[name] = ((metrics, url), scope)
                tg.start_soon(self._scrape_forever, client, name, metrics, url, scope)

    async def _scrape_forever(
        self,
        client: httpx.AsyncClient,
        name: str,
        metrics: LoadMetricsSettings,
        url: str,
        scope: anyio.CancelScope,
    ) -> None:
        with scope:
            while True:
                await self.scrape(client, name, metrics, url)
                await anyio.sleep(metrics.interval_s)

    async def scrape(
        self, client: httpx.AsyncClient, name: str, metrics: LoadMetricsSettings, url: str
    ) -> None:
        """One bounded read of `name`'s metrics, reported to `Health`."""
        try:
            body = await _read(client, url, metrics)
            try:
                sample = parse(body.decode("utf-8", errors="replace"), metrics.format)
            except MetricsError as exc:
                raise _Failed("unreadable", str(exc)) from None
        except _Failed as failed:
            self.health.scrape_failed(name, failed.reason)
            if name not in self._failing:
                self._failing.add(name)
                log.warning(
                    "backend load metrics unusable",
                    extra={"backend": name, "reason": failed.reason, "detail": failed.detail},
                )
            return
        self._failing.discard(name)
        self.health.reported(name, sample)


async def _read(client: httpx.AsyncClient, url: str, metrics: LoadMetricsSettings) -> bytes:
    limit = metrics.max_bytes
    body = bytearray()
    try:
        with anyio.fail_after(metrics.timeout_s):
            async with client.stream("GET", url, timeout=metrics.timeout_s) as response:
                if response.status_code != 200:
                    raise _Failed("status", f"HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _Failed("too_large", f"{declared} bytes, over max_bytes ({limit})")
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise _Failed("too_large", f"over max_bytes ({limit})")
    except TimeoutError:
        raise _Failed("timeout", f"no whole answer within {metrics.timeout_s:g} s") from None
    except httpx.TimeoutException:
        raise _Failed("timeout", f"no whole answer within {metrics.timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        # The library's message can carry the URL: keep only the type.
        raise _Failed("unreachable", f"transport error ({type(exc).__name__})") from None
    return bytes(body)
