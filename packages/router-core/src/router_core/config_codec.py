"""Plain data (parsed YAML or JSON) <-> `RouterConfig`, with path-precise problems.

Rules:
- Structuring is strict: unknown keys are problems, and a string is not an
  int, nor a float a bool. cattrs' lenient default (`int("3")`) would hide typos.
- Every problem is reported at once, each with its path in the user's file
  (`models.gpt-4o.backends[1].weight: must be > 0`), never as a traceback.
  Field validators run when their object is built, so an object whose fields
  already failed to parse reports those first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
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
from router_core.limits.gcra import MAX_SCALED_SPAN


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
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"must be a number, not {type(value).__name__}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"must be a number, not {value!r}") from None
        if not number.is_finite():
            raise ValueError("must be a finite number")
        return number

    converter.register_structure_hook(Decimal, structure_decimal)
    converter.register_structure_hook(str, structure_str)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(bool, structure_bool)


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    _strict(converter)
    return converter


_converter = make_converter()


def _join(path: str, step: str | int) -> str:
    if isinstance(step, int):
        return f"{path}[{step}]"
    return f"{path}.{step}" if path else step


def _walk(exc: BaseException, path: str) -> Iterator[ConfigProblem]:
    """Flatten cattrs' exception groups into (path, message) problems."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step: str | int = note.name if hasattr(note, "name") else note.index
            yield from _walk(inner, _join(path, step))
        for inner in without:
            yield from _walk(inner, path)
        return
    if isinstance(exc, ExceptionGroup):
        for inner in exc.exceptions:
            yield from _walk(inner, path)
        return
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield ConfigProblem(_join(path, key), "unknown field")
        return
    if isinstance(exc, FieldError):
        yield ConfigProblem(_join(path, exc.field), exc.message)
        return
    if isinstance(exc, KeyError):
        yield ConfigProblem(path, "required field is missing")
        return
    if isinstance(exc, TypeError | ValueError) and str(exc):
        yield ConfigProblem(path, str(exc))
        return
    # Anything else: fall back to cattrs' own rendering, still with a path.
    for line in transform_error(exc, path=path or "$"):
        yield ConfigProblem("", line)


def _dedupe(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    return list(dict.fromkeys(problems))


def structure(data: object) -> RouterConfig:
    """Build a `RouterConfig` from plain data or raise `ConfigInvalid` listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigInvalid([ConfigProblem("", "the config must be a mapping at the top level")])
    try:
        config = _converter.structure(data, RouterConfig)
    except Exception as exc:  # cattrs raises groups of whatever a hook raised
        raise ConfigInvalid(_dedupe(_walk(exc, ""))) from None
    problems = list(check_references(config))
    if problems:
        raise ConfigInvalid(problems)
    return config


def check_references(config: RouterConfig) -> Iterator[ConfigProblem]:
    """Problems that span objects: names, references and uniqueness."""
    for kind, names in (("backends", config.backends), ("models", config.models)):
        for name in names:
            if not NAME_RE.match(name):
                yield ConfigProblem(
                    _join(kind, name), "names are letters, digits and . _ : / - (up to 128)"
                )
    key_ids = {key.id for org in config.organizations.values() for key in org.keys}
    for model_name, model in config.models.items():
        yield from _check_targets(config, f"models.{model_name}.backends", model.backends)
        for r, route in enumerate(model.routes):
            where = f"models.{model_name}.routes[{r}]"
            yield from _check_targets(config, f"{where}.backends", route.backends)
            if not route.organizations and not route.keys:
                yield ConfigProblem(where, "a route needs organizations or keys to match")
            for org_name in route.organizations:
                if org_name not in config.organizations:
                    yield ConfigProblem(
                        f"{where}.organizations", f"unknown organization {org_name!r}"
                    )
            for key_id in route.keys:
                if key_id not in key_ids:
                    yield ConfigProblem(f"{where}.keys", f"unknown key id {key_id!r}")
    seen: dict[str, str] = {}
    for org_name, org in config.organizations.items():
        for model_name in org.models:
            if model_name != "*" and model_name not in config.models:
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
            if model_name not in config.models:
                yield ConfigProblem(
                    f"organizations.{org_name}.model_limits.{model_name}",
                    f"unknown model {model_name!r}",
                )
        yield from _check_prices(config, org_name, org)
        yield from _check_rates(org_name, org)
    for model_name in config.prices:
        if model_name not in config.models:
            yield ConfigProblem(f"prices.{model_name}", f"unknown model {model_name!r}")


def _check_targets(
    config: RouterConfig, where: str, targets: tuple[ModelTarget, ...]
) -> Iterator[ConfigProblem]:
    for i, target in enumerate(targets):
        if target.backend not in config.backends:
            yield ConfigProblem(
                f"{where}[{i}].backend",
                f"unknown backend {target.backend!r}; defined: "
                + ", ".join(sorted(config.backends)),
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
    config: RouterConfig, org_name: str, org: Organization
) -> Iterator[ConfigProblem]:
    """A budget can only be kept on models with a price."""
    budgeted = org.limits.budget.configured or any(k.limits.budget.configured for k in org.keys)
    models = [m for m in config.models if org.allows(m)]
    if not budgeted:
        models = [m for m, limits in org.model_limits.items() if limits.budget.configured]
    for model_name in models:
        if model_name not in config.prices:
            yield ConfigProblem(
                f"prices.{model_name}",
                f"required: organizations.{org_name} has a budget that covers this model",
            )


def unstructure(config: RouterConfig) -> dict[str, Any]:
    result: dict[str, Any] = _converter.unstructure(config)
    return result
