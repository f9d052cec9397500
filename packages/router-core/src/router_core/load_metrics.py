"""A backend's load, from the Prometheus metrics its own server exposes.

Rules:
- Only sample lines of the text exposition format are read (`name{labels}
  value [timestamp]`); comments, blank lines and every other series are
  skipped. Which series count depends on the server (`LoadMetricsFormat`):
  vLLM `vllm:num_requests_running`, `vllm:num_requests_waiting` and
  `vllm:kv_cache_usage_perc` (before v0.10 `vllm:gpu_cache_usage_perc`);
  SGLang `sglang:num_running_reqs`, `sglang:num_queue_reqs` and
  `sglang:token_usage`; TGI `tgi_batch_current_size` and `tgi_queue_size`
  (no cache usage).
- Request counts add up over a series' label sets (one server, several
  models or ranks: one queue in front of them); cache usage is the fullest.
- A page without a running or a waiting count, or with a value that is not
  a finite number >= 0, is not that server's metrics (an error page, another
  server): `MetricsError`, and the reading is not used.
- The load (0 = idle, 1 = full) is the fuller of the requests it holds
  (running and waiting) against the backend's `max_in_flight`, and its KV
  cache usage; at most 1.
"""

from __future__ import annotations

import math

import attrs

from router_core.config_enums import LoadMetricsFormat

_RUNNING, _WAITING, _CACHE = "running", "waiting", "cache"

_SERIES: dict[LoadMetricsFormat, dict[str, str]] = {
    LoadMetricsFormat.VLLM: {
        "vllm:num_requests_running": _RUNNING,
        "vllm:num_requests_waiting": _WAITING,
        "vllm:kv_cache_usage_perc": _CACHE,
        "vllm:gpu_cache_usage_perc": _CACHE,
    },
    LoadMetricsFormat.SGLANG: {
        "sglang:num_running_reqs": _RUNNING,
        "sglang:num_queue_reqs": _WAITING,
        "sglang:token_usage": _CACHE,
    },
    LoadMetricsFormat.TGI: {
        "tgi_batch_current_size": _RUNNING,
        "tgi_queue_size": _WAITING,
    },
}


class MetricsError(ValueError):
    """The page is not the metrics of the configured server."""


@attrs.frozen
class LoadSample:
    """What a server said of its load."""

    running: float
    waiting: float
    # Share of its KV cache in use (0..1), None when the server does not say.
    cache_usage: float | None = None

    def load(self, max_in_flight: int) -> float:
        requests = (self.running + self.waiting) / max_in_flight
        return min(1.0, max(requests, self.cache_usage or 0.0))


def parse(text: str, server: LoadMetricsFormat) -> LoadSample:
    """The load sample in a metrics page of `server`; `MetricsError` if there is none."""
    series = _SERIES[server]
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace, space = line.find("{"), line.find(" ")
        end = brace if brace != -1 and (space == -1 or brace < space) else space
        if end == -1:  # a name alone: no value
            end = len(line)
        if end == 0:
            continue
        kind = series.get(line[:end])
        if kind is None:
            continue
        rest = line[line.rfind("}") + 1 :] if end == brace else line[end:]
        fields = rest.split()
        try:
            value = float(fields[0]) if fields else math.nan
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise MetricsError(f"{line[:end]} is not a finite number >= 0")
        if kind == _CACHE:
            found[kind] = max(found.get(kind, 0.0), value)
        else:
            found[kind] = found.get(kind, 0.0) + value
    if _RUNNING not in found and _WAITING not in found:
        names = ", ".join(n for n, k in series.items() if k != _CACHE)
        raise MetricsError(f"no {names} in the page: not {server} metrics")
    return LoadSample(found.get(_RUNNING, 0.0), found.get(_WAITING, 0.0), found.get(_CACHE))
