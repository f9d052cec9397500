"""The simulated world: how fast each backend answers, and when it breaks.

A faults file is YAML; every section is optional:

```yaml
default: {latency_ms: 200, per_token_ms: 0}     # every backend not listed below
backends:
  mock-a: {latency_ms: 150, per_token_ms: 2}    # 150 ms + 2 ms per completion token
refused_ms: 1          # what a refused connection costs before the next backend is tried
faults:
  - {backend: mock-b, kind: down, start_s: 600, end_s: 900}
  - {backend: mock-a, kind: latency, start_s: 1200, end_s: 1500, added_ms: 2000}
```

Fault kinds, each from `start_s` (inclusive) to `end_s` (exclusive; omitted:
to the end), in seconds after the trace's first request:
- `down`: the backend refuses connections; an attempt costs `refused_ms`.
- `hang`: it accepts and never answers; an attempt costs its `read_timeout_s`.
- `error`: it answers 503 after its usual latency.
- `latency`: `added_ms` more per request (past the backend's `read_timeout_s`,
  an attempt times out).
Active probes fail while a backend is down, hung or erroring.

A backend with a `server` mapping (its own, or the default's, which its own
fields override) is modelled as a model server instead of a fixed latency
(`latency_ms` and `per_token_ms` do not apply to it):

```yaml
default:
  server: {slots: 16, prefill_ms_per_token: 0.1, decode_ms_per_token: 20,
           batch_slowdown: 0.01, cache_blocks: 4096, cache_block_chars: 256, speed: 1}
backends:
  gpu-old: {server: {speed: 0.5}}                # every token takes twice as long
```

See `backends.Server` for what each field represents.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from router_core.config import RouterConfig


class FaultKind(enum.Enum):
    DOWN = "down"
    HANG = "hang"
    ERROR = "error"
    LATENCY = "latency"


@attrs.frozen
class ServerModel:
    """A model server (vLLM, SGLang, TGI): batch slots, a queue, per-token costs
    and a prefix cache. Defaults: an 8B-class model on one GPU."""

    # Requests it runs at once (its batch); the rest wait in its queue, first come first served.
    slots: int = 16
    # Prefill: ms per prompt token not found in its prefix cache.
    prefill_ms_per_token: float = 0.1
    # Decode: ms per output token of a request running alone.
    decode_ms_per_token: float = 20.0
    # Each other request in the batch when it starts makes its decode this much slower.
    batch_slowdown: float = 0.01
    # Its prefix (KV) cache: how many blocks it holds (least recently used
    # evicted; 0: no cache), and how many characters of the prompt's text a block is.
    cache_blocks: int = 4096
    cache_block_chars: int = 256
    # Its speed relative to the others (0.5: every token takes twice as long).
    speed: float = 1.0


# Each field's type and range: (integer, low, high).
SERVER_FIELDS: dict[str, tuple[bool, float, float]] = {
    "slots": (True, 1, 100_000),
    "prefill_ms_per_token": (False, 0, 10_000),
    "decode_ms_per_token": (False, 0, 100_000),
    "batch_slowdown": (False, 0, 10),
    "cache_blocks": (True, 0, 100_000_000),
    "cache_block_chars": (True, 16, 1_000_000),
    "speed": (False, 0.001, 1000),
}


@attrs.frozen
class BackendModel:
    latency_ms: float = 200.0
    per_token_ms: float = 0.0
    # A model server instead of a fixed latency (None: a fixed latency).
    server: ServerModel | None = None


@attrs.frozen
class Fault:
    backend: str
    kind: FaultKind
    # Microseconds after the trace's first request; end None: never ends.
    start_us: int
    end_us: int | None
    added_ms: float = 0.0

    def active(self, offset_us: int) -> bool:
        return self.start_us <= offset_us and (self.end_us is None or offset_us < self.end_us)


@attrs.frozen
class World:
    default: BackendModel = BackendModel()
    backends: Mapping[str, BackendModel] = attrs.field(factory=dict)
    faults: tuple[Fault, ...] = ()
    refused_ms: float = 1.0

    def model_of(self, backend: str) -> BackendModel:
        return self.backends.get(backend, self.default)


NO_FAULTS = World()


class FaultsInvalid(Exception):
    """The faults file cannot be used; `problems` lists `SOURCE:LINE: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Map(dict[str, Any]):
    """A YAML mapping that remembers the line it starts on."""

    line = 0


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    value = _Map()
    value.line = node.start_mark.line + 1
    yield value
    value.update({str(k): v for k, v in loader.construct_mapping(node).items()})


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, line: int, path: str, message: str) -> None:
        self.items.append(f"{self.source}:{line}: {path}: {message}")


def _number(
    data: _Map, name: str, path: str, problems: _Problems, *, default: float | None, low: float
) -> float | None:
    value = data.get(name, default)
    if value is None and default is None and name not in data:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        problems.add(data.line, _join(path, name), f"must be a number >= {low:g}, not {value!r}")
        return None
    return float(value)


def _check_keys(data: _Map, allowed: Sequence[str], path: str, problems: _Problems) -> None:
    for key in data:
        if key not in allowed:
            problems.add(
                data.line, _join(path, key), f"unknown field; allowed: {', '.join(allowed)}"
            )


def _backend_model(
    data: object, path: str, line: int, problems: _Problems, base: ServerModel | None = None
) -> BackendModel:
    if not isinstance(data, _Map):
        problems.add(line, path, "must be a mapping like {latency_ms: 200, per_token_ms: 0}")
        return BackendModel()
    _check_keys(data, ("latency_ms", "per_token_ms", "server"), path, problems)
    server = base
    if "server" in data:
        server = _server(data["server"], _join(path, "server"), data.line, problems, base)
        for fixed in ("latency_ms", "per_token_ms"):
            if fixed in data:
                problems.add(data.line, _join(path, fixed), "is for backends without a server")
    latency = _number(data, "latency_ms", path, problems, default=200.0, low=0)
    per_token = _number(data, "per_token_ms", path, problems, default=0.0, low=0)
    return BackendModel(latency or 0.0, per_token or 0.0, server)


def _server(
    data: object, path: str, line: int, problems: _Problems, base: ServerModel | None
) -> ServerModel | None:
    if not isinstance(data, _Map):
        problems.add(line, path, "must be a mapping like {slots: 16, speed: 1}")
        return base
    _check_keys(data, tuple(SERVER_FIELDS), path, problems)
    given: dict[str, Any] = {}
    for name, (integer, low, high) in SERVER_FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        kind = "an integer" if integer else "a number"
        if (
            isinstance(value, bool)
            or not isinstance(value, int if integer else int | float)
            or not low <= value <= high
        ):
            problems.add(
                data.line,
                _join(path, name),
                f"must be {kind} from {low:,} to {high:,}, not {value!r}",
            )
            continue
        given[name] = value if integer else float(value)
    return attrs.evolve(base or ServerModel(), **given)


def _fault(data: object, path: str, line: int, config: RouterConfig, problems: _Problems) -> Fault:
    bad = Fault("", FaultKind.DOWN, 0, None)
    if not isinstance(data, _Map):
        problems.add(line, path, "must be a mapping like {backend: a, kind: down, start_s: 0}")
        return bad
    line = data.line
    _check_keys(data, ("backend", "kind", "start_s", "end_s", "added_ms"), path, problems)
    before = len(problems.items)
    backend = data.get("backend")
    if backend not in config.backends:
        defined = ", ".join(sorted(config.backends))
        problems.add(line, f"{path}.backend", f"unknown backend {backend!r}; defined: {defined}")
    try:
        kind = FaultKind(data.get("kind"))
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        problems.add(line, f"{path}.kind", f"must be one of {kinds}, not {data.get('kind')!r}")
        kind = FaultKind.DOWN
    start = _number(data, "start_s", path, problems, default=0.0, low=0)
    end = _number(data, "end_s", path, problems, default=None, low=0)
    if start is not None and end is not None and end <= start:
        problems.add(line, f"{path}.end_s", f"must be after start_s ({start:g}), not {end:g}")
    added = _number(data, "added_ms", path, problems, default=0.0, low=0)
    if kind is FaultKind.LATENCY and not added:
        problems.add(line, f"{path}.added_ms", "a latency fault needs added_ms > 0")
    elif kind is not FaultKind.LATENCY and "added_ms" in data:
        problems.add(line, f"{path}.added_ms", "is only for kind: latency")
    if len(problems.items) > before:
        return bad
    return Fault(
        str(backend),
        kind,
        round((start or 0.0) * 1_000_000),
        None if end is None else round(end * 1_000_000),
        added or 0.0,
    )


def parse_world(text: str, config: RouterConfig, source: str = "faults") -> World:
    """The world described by a faults file's text, checked against `config`."""
    problems = _Problems(source)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 0
        raise FaultsInvalid([f"{source}:{line}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise FaultsInvalid([f"{source}: invalid YAML: {exc}"]) from None
    if data is None:
        return NO_FAULTS
    if not isinstance(data, _Map):
        raise FaultsInvalid([f"{source}:1: must be a mapping with default, backends, faults"])
    _check_keys(data, ("default", "backends", "refused_ms", "faults"), "", problems)
    default = _backend_model(data.get("default", _Map()), "default", data.line, problems)
    base = default.server
    models: dict[str, BackendModel] = {}
    backends = data.get("backends") or _Map()
    if not isinstance(backends, _Map):
        problems.add(data.line, "backends", "must be a mapping of backend name to latency")
        backends = _Map()
    for name, value in backends.items():
        line = value.line if isinstance(value, _Map) else backends.line
        if name not in config.backends:
            problems.add(line, f"backends.{name}", "not a backend of the config")
        models[str(name)] = _backend_model(value, f"backends.{name}", line, problems, base)
    refused = _number(data, "refused_ms", "", problems, default=1.0, low=0)
    faults: list[Fault] = []
    listed = data.get("faults") or []
    if not isinstance(listed, list):
        problems.add(data.line, "faults", "must be a list of faults")
        listed = []
    for i, item in enumerate(listed):
        faults.append(_fault(item, f"faults[{i}]", data.line, config, problems))
    if problems.items:
        raise FaultsInvalid(problems.items)
    return World(default, models, tuple(faults), refused if refused is not None else 1.0)


def load_world(path: str | Path, config: RouterConfig) -> World:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FaultsInvalid([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise FaultsInvalid([f"{path}: not UTF-8 text"]) from None
    return parse_world(text, config, str(path))
