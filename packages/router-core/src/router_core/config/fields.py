"""How every config class checks its fields: `_checked` fields, `_check_fields`, the
validators, and the patterns names must match."""

from __future__ import annotations

import enum
import re
from decimal import Decimal
from typing import Any

import attrs

from router_core.config_enums import (
    is_member,
    not_one_of,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


KEY_ID_RE = re.compile(r"^[A-Za-z0-9]{4,32}$")


KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldError(ValueError):
    """A field failed validation; `field` is its name in the enclosing object."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# `not value > 0` rather than `value <= 0`: a NaN (YAML's `.nan`) fails every
# comparison, so only this form rejects it.
def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    # Written so NaN fails too; infinity is no setting either (a circuit that never closes).
    if not 0 < value < float("inf"):
        raise FieldError(attribute.name, "must be > 0")


def _port(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise FieldError(attribute.name, "must be a TCP port between 0 and 65535")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if not pattern.match(value):
            raise FieldError(attribute.name, f"must be {what}")

    return check


def _one_of(kind: type[enum.StrEnum]) -> Any:
    # The codec's converter already refuses a non-member; this keeps objects
    # built in Python (embedders, tests) as strict as those read from a file.
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not is_member(value, kind):
            raise FieldError(attribute.name, not_one_of(kind, value))

    return check


def _optional_one_of(kind: type[enum.StrEnum]) -> Any:
    check = _one_of(kind)

    def optional(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check(instance, attribute, value)

    return optional


def _url(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise FieldError(attribute.name, "must be an http:// or https:// URL")


def _optional_positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise FieldError(attribute.name, "must be > 0")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise FieldError(attribute.name, "must be >= 0")


def _non_empty(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise FieldError(attribute.name, "must not be empty")


Check = Any  # (instance, attribute, value) -> None, raising FieldError


def _checked(*, validator: Check, **kwargs: Any) -> Any:
    """An attrs field whose check runs, with every other field's, when the object is built."""
    return attrs.field(metadata={"checks": (validator,)}, **kwargs)


def _check_fields(self: Any) -> None:
    errors: list[FieldError] = []
    for attribute in attrs.fields(type(self)):
        for check in attribute.metadata.get("checks", ()):
            try:
                check(self, attribute, getattr(self, attribute.name))
            except FieldError as error:
                errors.append(error)
                break
    if errors:
        raise ExceptionGroup(f"invalid {type(self).__name__}", errors)


def _file_path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must be a file path")


def _nanos(_: object, attribute: attrs.Attribute[Any], value: Decimal | None) -> None:
    if value is not None and (value <= 0 or (value * 10**9) % 1 != 0 or value >= 9_000_000):
        raise FieldError(attribute.name, "must be > 0 and < 9,000,000 USD with at most 9 decimals")


def _per_million(_: object, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    if value < 0 or (value * 1000) % 1 != 0 or value >= 9_000_000:
        raise FieldError(attribute.name, "must be >= 0 USD per 1M tokens with at most 3 decimals")


TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value < 1:
        raise FieldError(attribute.name, "must be between 0 and 1 (exclusive)")


def _share(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= 1:
        raise FieldError(attribute.name, "must be > 0 and <= 1")


def _at_least(minimum: int, why: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < minimum:
            raise FieldError(attribute.name, f"must be >= {minimum} ({why})")

    return check


def _positive_at_most(maximum: int, what: str) -> Any:
    """A positive number no larger than `maximum` (`what` says what that is)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if not 0 < value <= maximum:
            raise FieldError(attribute.name, f"must be > 0 and at most {maximum} ({what})")

    return check


@attrs.frozen
class _Between:
    """A number in [low, high] (NaN and infinity fail too); None too if `optional`.
    `allowed` says so in words (the config reference shows it)."""

    low: float
    high: float
    unit: str = ""
    optional: bool = False

    @property
    def allowed(self) -> str:
        shown = [
            f"{int(b):,}" if float(b).is_integer() else f"{b:g}" for b in (self.low, self.high)
        ]
        suffix = f" {self.unit}" if self.unit else ""
        return f"{shown[0]} to {shown[1]}{suffix}" + (", or null" if self.optional else "")

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is None and self.optional:
            return
        if value is None or not self.low <= value <= self.high:
            shown = self.allowed.removesuffix(", or null").replace(" to ", " and ", 1)
            raise FieldError(attribute.name, f"must be between {shown}")


def _between(low: float, high: float, unit: str = "") -> Any:
    return _Between(low, high, unit)


def _optional_between(low: float, high: float, unit: str = "") -> Any:
    return _Between(low, high, unit, optional=True)
