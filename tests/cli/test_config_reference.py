"""The configuration reference is generated from the config classes and checked in."""

from __future__ import annotations

import enum
import typing
from pathlib import Path

import attrs

from router_cli import config_reference
from router_core import config
from router_core.config_enums import Strategy

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "configuration.md"


def test_the_checked_in_reference_is_what_the_code_generates() -> None:
    assert REFERENCE.read_text() == config_reference.render(), (
        "docs/reference/configuration.md is out of date: "
        "run `router config reference > docs/reference/configuration.md`"
    )


def test_every_setting_of_every_section_is_in_the_reference_with_a_description() -> None:
    text = config_reference.render()
    for _, cls in config_reference.sections():
        section = text.split(f"\n## {cls.__name__}\n", 1)[1].split("\n## ", 1)[0]
        for field in attrs.fields(cls):
            row = next(
                line for line in section.splitlines() if line.startswith(f"| `{field.name}` |")
            )
            description = row.rstrip(" |").rsplit("|", 1)[1].strip()
            assert description, f"{cls.__name__}.{field.name} has no comment in router_core.config"


def test_every_choice_of_an_enumerated_setting_is_listed() -> None:
    text = config_reference.render()
    for _, cls in config_reference.sections():
        for name, tp in typing.get_type_hints(cls).items():
            inner, _ = config_reference._unwrap(tp)
            if isinstance(inner, type) and issubclass(inner, enum.Enum):
                for member in inner:
                    assert f"`{member.value}`" in text, (cls.__name__, name, member)


def test_nested_sections_name_every_place_they_appear() -> None:
    where = dict((cls, paths) for paths, cls in config_reference.sections())
    assert len(where[config.Limits]) == 4  # an organization's, a key's, per model, per user
    assert where[config.Backend] == ["`backends.NAME`"]


def test_a_new_field_appears_with_its_comment() -> None:
    @attrs.frozen
    class Sample:
        # How many widgets.
        widgets: int = 3
        # Which one.
        flavour: Strategy = Strategy.WEIGHTED

    text = config_reference.render(Sample)
    assert "| `widgets` | integer | `3` |  | How many widgets. |" in text
    assert "one of `weighted`, `least_latency`" in text
