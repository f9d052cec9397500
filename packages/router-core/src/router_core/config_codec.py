"""Plain data (parsed YAML or JSON) <-> `RouterConfig`, with path-precise problems.

Rules:
- Structuring is strict: unknown keys are problems, and a string is not an
  int, nor a float a bool. cattrs' lenient default (`int("3")`) would hide typos.
- Every problem is reported at once, each with its path in the user's file
  (`models.gpt-4o.backends[1].weight: must be > 0`), never as a traceback.
- One pass finds them all: an object whose fields failed to parse is never
  built, so its own checks and every cross-reference check would wait for
  the next edit. Instead the bad values are cut from a copy of the data (a
  field falls back to its default; a required one takes its parent with
  it) and the copy is structured again, until it builds. Problems found on
  the cut copy are kept unless they are about what was cut (a field now
  "missing", a list now empty), and the reference checks then run on it
  with the names the user's file defines, so a backend whose URL is wrong
  is still a backend a model may name.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn
from cattrs.v import transform_error

from router_core.config import (
    NAME_RE,
    PERIOD_US,
    FieldError,
    Limits,
    ModelTarget,
    Organization,
    RouterConfig,
)
from router_core.config.models import DEPLOYMENT_RE
from router_core.config_enums import BackendKind, Protocol, StateStoreKind, is_member, not_one_of
from router_core.limits.gcra import MAX_SCALED_SPAN
from router_core.price_table import shipped_choice, with_shipped_prices
from router_core.workers import embedded_refusal

# What an azure_openai backend may speak: chat and the rest natively, and its v1
# Responses API when listed.
_AZURE_PROTOCOLS = frozenset({Protocol.OPENAI, Protocol.OPENAI_RESPONSES})


@attrs.frozen
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigInvalid(Exception):
    """The configuration cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _strict(converter: cattrs.Converter) -> None:
    def structure_str(value: object, _: type) -> str:
        if not isinstance(value, str):
            raise TypeError(f"must be a string, not {type(value).__name__}")
        return value

    def structure_int(value: object, _: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be an integer, not {type(value).__name__}")
        return value

    def structure_float(value: object, _: type) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"must be a number, not {type(value).__name__}")
        return float(value)

    def structure_bool(value: object, _: type) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"must be true or false, not {type(value).__name__}")
        return value

    def structure_decimal(value: object, _: type) -> Decimal:
        # YAML reads 0.15 as a float; its repr is the text the user wrote.
        # A Decimal: what `unstructure` gives back (so structure(unstructure(c)) == c).
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise TypeError(f"must be a number, not {type(value).__name__}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"must be a number, not {value!r}") from None
        if not number.is_finite():
            raise ValueError("must be a finite number")
        return number

    def structure_choice(value: object, kind: type[enum.StrEnum]) -> enum.StrEnum:
        if not is_member(value, kind):
            raise ValueError(not_one_of(kind, value))
        return kind(value)

    # On StrEnum itself: the most specific class wins, so every enum type gets
    # this hook rather than `str`'s (which would let any string through).
    converter.register_structure_hook(enum.StrEnum, structure_choice)
    converter.register_structure_hook(Decimal, structure_decimal)
    converter.register_structure_hook(str, structure_str)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(bool, structure_bool)


def _objects_are_mappings(converter: cattrs.Converter) -> None:
    """An object given as a string or a list is named as such, not as cattrs'
    `unknown error ('str' object has no attribute 'keys')`."""

    def factory(cl: type) -> Callable[[object, type], object]:
        build: Callable[[Mapping[str, Any], Any], object] = make_dict_structure_fn(cl, converter)

        def structure_object(value: object, _: type) -> object:
            if not isinstance(value, Mapping):
                raise TypeError(f"must be a mapping, not {type(value).__name__}")
            return build(value, cl)

        return structure_object

    converter.register_structure_hook_factory(attrs.has, factory)


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    _strict(converter)
    _objects_are_mappings(converter)
    return converter


_converter = make_converter()


Step = str | int
Steps = tuple[Step, ...]


def _join(path: str, step: Step) -> str:
    if isinstance(step, int):
        return f"{path}[{step}]"
    return f"{path}.{step}" if path else step


def _path(steps: Steps) -> str:
    path = ""
    for step in steps:
        path = _join(path, step)
    return path


@attrs.frozen
class _Found:
    """One problem at `steps` in the data; `shown` is False when the message
    carries its own path (cattrs' fallback rendering)."""

    steps: Steps
    message: str
    shown: bool = True

    def problem(self) -> ConfigProblem:
        return ConfigProblem(_path(self.steps) if self.shown else "", self.message)


def _walk(exc: BaseException, steps: Steps) -> Iterator[_Found]:
    """Flatten cattrs' exception groups into problems with their steps."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step: Step = note.name if hasattr(note, "name") else note.index
            yield from _walk(inner, (*steps, step))
        for inner in without:
            yield from _walk(inner, steps)
        return
    if isinstance(exc, ExceptionGroup):
        for inner in exc.exceptions:
            yield from _walk(inner, steps)
        return
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            where = (*steps, key)
            path = _path(where)
            yield _Found(where, _moved(path) or REMOVED.get(path) or "unknown field")
        return
    if isinstance(exc, FieldError):
        yield _Found((*steps, exc.field), exc.message)
        return
    if isinstance(exc, KeyError):
        yield _Found(steps, MISSING)
        return
    if isinstance(exc, TypeError | ValueError) and str(exc):
        yield _Found(steps, str(exc))
        return
    # Anything else: fall back to cattrs' own rendering, still with a path.
    for line in transform_error(exc, path=_path(steps) or "$"):
        yield _Found(steps, line, shown=False)


MISSING = "required field is missing"

# Settings of earlier versions of the file that now live elsewhere: old path -> new.
MOVED = {
    "limits.store": "state.store",
    "limits.redis_url_env": "state.redis.url_env",
    "idempotency.store": "state.store",
    "idempotency.redis_url_env": "state.redis.url_env",
    "auth.store": "state.store",
    "auth.redis_url_env": "state.redis.url_env",
    "auth.sqlite_path": "state.dir",
    "auth.refresh_s": "state.refresh_s",
    "overrides": "state",
    "usage.dir": "state.dir",
}


# Settings of earlier versions that no longer exist: old path -> what changed.
REMOVED = {
    "health.half_open_max": (
        "removed: a half-open circuit takes no client requests any more; the router "
        "sends one trial probe at a time itself (see health.open_s), so delete this setting"
    ),
}


def _moved(path: str) -> str | None:
    new = MOVED.get(path)
    if new is None:
        return None
    return (
        f"moved to {new}: one `state` section now holds where limits, idempotency keys, "
        "managed keys, nonces and overrides are kept (store: embedded | redis, one Redis, "
        "one data directory)"
    )


def _dedupe(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    return list(dict.fromkeys(problems))


def _copy(data: object) -> object:
    """A copy to cut from; YAML anchors shared by two places become two values."""
    if isinstance(data, Mapping):
        return {key: _copy(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_copy(value) for value in data]
    return data


def _child(parent: object, step: Step) -> object:
    if isinstance(parent, dict):
        return parent.get(step)
    if isinstance(parent, list) and isinstance(step, int) and 0 <= step < len(parent):
        return parent[step]
    return None


def _cut(data: object, steps: Steps) -> Steps | None:
    """Remove the value at `steps`, or the nearest ancestor a mapping holds;
    a list item takes its whole list (cutting one would renumber the rest).
    Returns what was removed, or None if only the whole config is left."""
    while steps:
        parent: Any = data
        for step in steps[:-1]:
            parent = _child(parent, step)
        if isinstance(parent, dict) and steps[-1] in parent:
            del parent[steps[-1]]
            return steps
        steps = steps[:-1]
    return None


def _within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or a path under it."""
    return inner == outer or inner.startswith((outer + ".", outer + "["))


def _about_cut(path: str, cut: Iterable[str]) -> bool:
    return any(_within(path, c) or _within(c, path) for c in cut)


# Each round cuts at least one value; this only bounds a pathological file.
_MAX_ROUNDS = 200


def _salvage(data: Mapping[str, Any]) -> tuple[RouterConfig | None, list[ConfigProblem], list[str]]:
    """The config built from `data` less its bad values, every problem found
    on the way, and the paths that were cut (None: nothing could be built)."""
    work = _copy(data)
    found: list[ConfigProblem] = []
    cut: list[Steps] = []
    for _ in range(_MAX_ROUNDS):
        try:
            config = _converter.structure(work, RouterConfig)
        except Exception as exc:  # cattrs raises groups of whatever a hook raised
            leaves = list(_walk(exc, ()))
            if not leaves:
                found.append(ConfigProblem("", str(exc) or type(exc).__name__))
                return None, found, []
        else:
            return config, found, [_path(c) for c in cut]
        # A problem at (or above) a cut value is the cut's doing, not the user's.
        found += [leaf.problem() for leaf in leaves if not any(_starts(c, leaf.steps) for c in cut)]
        this_round: list[Steps] = []
        for leaf in leaves:
            if any(_starts(leaf.steps, c) for c in this_round):
                continue  # already gone with what an earlier problem of this round took
            removed = _cut(work, leaf.steps)
            if removed is None:
                return None, found, []
            this_round.append(removed)
        cut += this_round
    return None, found, []


def _starts(steps: Steps, prefix: Steps) -> bool:
    return steps[: len(prefix)] == prefix


ExtraChecks = Callable[[RouterConfig], Iterable[ConfigProblem]]


def structure(data: object, extra_checks: ExtraChecks | None = None) -> RouterConfig:
    """Build a `RouterConfig` from plain data or raise `ConfigInvalid` listing every problem.

    `extra_checks` (the server's: environment variables, certificate files)
    run too, on what could be built, so their problems come in the same pass.
    """
    if not isinstance(data, Mapping):
        raise ConfigInvalid([ConfigProblem("", "the config must be a mapping at the top level")])
    config, problems, cut = _salvage(data)
    if config is not None:
        config = with_shipped_prices(config)
        known = None
        if cut:
            names = _Names.of_data(data)
            known = attrs.evolve(names, prices=names.prices | frozenset(config.prices))
        later = list(check_references(config, known))
        if extra_checks is not None:
            later += extra_checks(config)
        problems += [p for p in later if not _about_cut(p.path, cut)]
    problems = _dedupe(problems)
    if problems or config is None:
        raise ConfigInvalid(problems)
    return config


def _keys(section: object) -> frozenset[str]:
    return (
        frozenset(k for k in section if isinstance(k, str))
        if isinstance(section, Mapping)
        else frozenset()
    )


@attrs.frozen
class _Names:
    """What the user's file defines, whether or not each definition is valid."""

    backends: frozenset[str]
    models: frozenset[str]
    organizations: frozenset[str]
    key_ids: frozenset[str]
    prices: frozenset[str]

    @classmethod
    def of_config(cls, config: RouterConfig) -> _Names:
        key_ids = {key.id for org in config.organizations.values() for key in org.keys}
        return cls(
            frozenset(config.backends), frozenset(config.models),
            frozenset(config.organizations), frozenset(key_ids), frozenset(config.prices),
        )  # fmt: skip

    @classmethod
    def of_data(cls, data: Mapping[str, Any]) -> _Names:
        orgs = data.get("organizations")
        keys = [
            key.get("id")
            for org in (orgs.values() if isinstance(orgs, Mapping) else ())
            if isinstance(org, Mapping) and isinstance(org.get("keys"), list)
            for key in org["keys"]
            if isinstance(key, Mapping)
        ]
        return cls(
            _keys(data.get("backends")), _keys(data.get("models")), _keys(orgs),
            frozenset(k for k in keys if isinstance(k, str)), _keys(data.get("prices")),
        )  # fmt: skip


def check_references(config: RouterConfig, known: _Names | None = None) -> Iterator[ConfigProblem]:
    """Problems that span objects: names, references and uniqueness.

    `known`: the names the file defines, when `config` lacks some that were invalid.
    """
    known = known or _Names.of_config(config)
    for kind, names in (("backends", config.backends), ("models", config.models)):
        for name in names:
            if not NAME_RE.match(name):
                yield ConfigProblem(
                    _join(kind, name), "names are letters, digits and . _ : / - (up to 128)"
                )
    yield from _check_backend_kinds(config)
    yield from _check_load_metrics(config)
    for model_name, model in config.models.items():
        yield from _check_targets(known, f"models.{model_name}.backends", model.backends)
        for r, route in enumerate(model.routes):
            where = f"models.{model_name}.routes[{r}]"
            yield from _check_targets(known, f"{where}.backends", route.backends)
            if not route.organizations and not route.keys:
                yield ConfigProblem(where, "a route needs organizations or keys to match")
            for org_name in route.organizations:
                if org_name not in known.organizations:
                    yield ConfigProblem(
                        f"{where}.organizations", f"unknown organization {org_name!r}"
                    )
            for key_id in route.keys:
                if key_id not in known.key_ids:
                    yield ConfigProblem(f"{where}.keys", f"unknown key id {key_id!r}")
    seen: dict[str, str] = {}
    for org_name, org in config.organizations.items():
        for model_name in org.models:
            if model_name != "*" and model_name not in known.models:
                yield ConfigProblem(
                    f"organizations.{org_name}.models", f"unknown model {model_name!r}"
                )
        for i, key in enumerate(org.keys):
            where = f"organizations.{org_name}.keys[{i}].id"
            if key.id in seen:
                yield ConfigProblem(where, f"key id {key.id!r} is already used by {seen[key.id]}")
            else:
                seen[key.id] = where
        for model_name in org.model_limits:
            if model_name not in known.models:
                yield ConfigProblem(
                    f"organizations.{org_name}.model_limits.{model_name}",
                    f"unknown model {model_name!r}",
                )
        yield from _check_prices(config, known, org_name, org)
        yield from _check_rates(org_name, org)
    for model_name in config.prices:
        if model_name not in known.models:
            yield ConfigProblem(f"prices.{model_name}", f"unknown model {model_name!r}")
    server = config.server
    if (
        server.workers is not None
        and server.workers > 1
        and config.state.store == StateStoreKind.EMBEDDED
    ):
        yield ConfigProblem("server.workers", embedded_refusal(server.workers))
    if server.admission.adaptive and server.admission.min_limit > server.max_in_flight:
        yield ConfigProblem(
            "server.admission.min_limit",
            f"must be <= server.max_in_flight ({server.max_in_flight}), the hard cap",
        )


# Protocols only one kind speaks, and that kind speaks nothing else.
_PROVIDER_PROTOCOLS = {BackendKind.GEMINI: Protocol.GEMINI, BackendKind.BEDROCK: Protocol.BEDROCK}


def _check_load_metrics(config: RouterConfig) -> Iterator[ConfigProblem]:
    """Only a self-hosted server has load metrics to read; a reading must
    outlive the interval it is read at, and a read must end within that
    interval (else reads would pile up)."""
    for name, backend in config.backends.items():
        metrics = backend.load_metrics
        if metrics is None:
            continue
        where = f"{_join('backends', name)}.load_metrics"
        if backend.kind is not BackendKind.OPENAI:
            yield ConfigProblem(
                where,
                "only for kind: openai (a self-hosted vLLM, SGLang or TGI server), not "
                f"kind: {backend.kind}",
            )
        if metrics.stale_after_s <= metrics.interval_s:
            yield ConfigProblem(
                f"{where}.stale_after_s",
                f"must be more than interval_s ({metrics.interval_s:g}): every reading would "
                "go stale before the next",
            )
        if metrics.timeout_s > metrics.interval_s:
            yield ConfigProblem(
                f"{where}.timeout_s", f"must be at most interval_s ({metrics.interval_s:g})"
            )


def _check_backend_kinds(config: RouterConfig) -> Iterator[ConfigProblem]:
    """Each kind's own settings: present where the kind needs them, nowhere else."""
    for name, backend in config.backends.items():
        where = _join("backends", name)
        azure = backend.azure
        if backend.kind is BackendKind.ANTHROPIC and backend.speaks != (
            Protocol.ANTHROPIC_MESSAGES,
        ):
            yield ConfigProblem(
                f"{where}.protocols",
                "an anthropic backend speaks anthropic_messages only (chat and Responses are "
                "translated to Messages for it)",
            )
        vertex = backend.kind is BackendKind.VERTEX
        if vertex != (backend.vertex is not None):
            yield ConfigProblem(
                f"{where}.vertex",
                "required for kind: vertex (project, location)"
                if backend.vertex is None
                else "only for kind: vertex",
            )
        if vertex and (backend.api_key_env is not None or backend.protocols is not None):
            yield ConfigProblem(
                where,
                "a vertex backend authenticates with its service account (vertex."
                "credentials_file) and speaks what its publisher does: no api_key_env or "
                "protocols",
            )
        for kind, protocol in _PROVIDER_PROTOCOLS.items():
            if vertex:  # it speaks what its publisher does (see Backend.speaks)
                break
            own = backend.kind is kind
            if own != (protocol in backend.speaks) or (own and len(backend.speaks) != 1):
                yield ConfigProblem(
                    f"{where}.protocols",
                    f"{protocol} is spoken by kind: {kind} backends, and they speak only it "
                    "(chat, Messages and Responses are translated for them)",
                )
        if (backend.kind is BackendKind.BEDROCK) != (backend.bedrock is not None):
            yield ConfigProblem(
                f"{where}.bedrock",
                "required for kind: bedrock (region)"
                if backend.bedrock is None
                else "only for kind: bedrock",
            )
        if backend.kind is BackendKind.BEDROCK and backend.api_key_env is not None:
            yield ConfigProblem(
                f"{where}.api_key_env",
                "a bedrock backend signs with the standard AWS credentials (AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY, a web identity token file, a profile, or the "
                "instance's role), not an API key",
            )
        if backend.kind is not BackendKind.AZURE_OPENAI:
            if azure is not None:
                yield ConfigProblem(f"{where}.azure", "only for kind: azure_openai")
            continue
        if azure is None:
            yield ConfigProblem(f"{where}.azure", "required for kind: azure_openai (api_version)")
            continue
        credentials = [backend.api_key_env, azure.entra_token_env, azure.entra_token_file]
        if sum(c is not None for c in credentials) != 1:
            yield ConfigProblem(
                where,
                "an azure_openai backend needs exactly one credential: api_key_env (an API "
                "key), azure.entra_token_env or azure.entra_token_file (an Entra ID token)",
            )
        if Protocol.OPENAI not in backend.speaks or not set(backend.speaks) <= _AZURE_PROTOCOLS:
            yield ConfigProblem(
                f"{where}.protocols",
                "an azure_openai backend speaks openai, and openai_responses too when listed "
                "(Azure's v1 Responses API); Messages are translated to chat for it",
            )
    for model_name, model in config.models.items():
        targets = [*model.backends, *(t for route in model.routes for t in route.backends)]
        for target in targets:
            served = config.backends.get(target.backend)
            if served is None or served.azure is None:
                continue
            deployment = served.azure.deployment(target.model or model_name)
            if not DEPLOYMENT_RE.match(deployment):
                yield ConfigProblem(
                    f"models.{model_name}",
                    f"{deployment!r} is not an Azure deployment name (letters, digits, . _ -, "
                    f"up to 64): map it in backends.{target.backend}.azure.deployments",
                )


def _check_targets(
    known: _Names, where: str, targets: tuple[ModelTarget, ...]
) -> Iterator[ConfigProblem]:
    for i, target in enumerate(targets):
        if target.backend not in known.backends:
            yield ConfigProblem(
                f"{where}[{i}].backend",
                f"unknown backend {target.backend!r}; defined: "
                + ", ".join(sorted(known.backends)),
            )


def _limit_scopes(org_name: str, org: Organization) -> Iterator[tuple[str, Limits]]:
    yield f"organizations.{org_name}.limits", org.limits
    for i, key in enumerate(org.keys):
        yield f"organizations.{org_name}.keys[{i}].limits", key.limits
    for model_name, limits in org.model_limits.items():
        yield f"organizations.{org_name}.model_limits.{model_name}", limits
    yield f"organizations.{org_name}.user_limits", org.user_limits


def _check_rates(org_name: str, org: Organization) -> Iterator[ConfigProblem]:
    """GCRA stays exact in integers (and in Redis's Lua) only below a span of 2**51."""
    for where, limits in _limit_scopes(org_name, org):
        for name, rate in (("requests", limits.requests), ("tokens", limits.tokens)):
            if rate is None:
                continue
            burst = rate.burst or rate.rate
            if burst * PERIOD_US[rate.per] + rate.rate > MAX_SCALED_SPAN:
                yield ConfigProblem(
                    f"{where}.{name}",
                    f"burst x period is too large to count exactly ({burst} per {rate.per}); "
                    "use a shorter period with a proportional rate, or a smaller burst",
                )


def _check_prices(
    config: RouterConfig, known: _Names, org_name: str, org: Organization
) -> Iterator[ConfigProblem]:
    """A budget can only be kept on models with a price."""
    budgeted = org.limits.budget.configured or any(k.limits.budget.configured for k in org.keys)
    models = [m for m in config.models if org.allows(m)]
    if not budgeted:
        models = [m for m, limits in org.model_limits.items() if limits.budget.configured]
    for model_name in models:
        if model_name not in known.prices:
            yield ConfigProblem(
                f"prices.{model_name}",
                f"required: organizations.{org_name} has a budget that covers this model"
                + _no_shipped_price(config, model_name),
            )


def _no_shipped_price(config: RouterConfig, model_name: str) -> str:
    """Why the shipped table gave `model_name` no price (for the problem's message)."""
    if not config.pricing.shipped:
        return " (pricing.shipped is false, so only prices count)"
    unknown = shipped_choice(config, model_name).unknown
    if not unknown:
        return ""
    return " (the shipped price table has no price for " + ", ".join(map(repr, unknown)) + ")"


def unstructure(config: RouterConfig) -> dict[str, Any]:
    result: dict[str, Any] = _converter.unstructure(config)
    return result
