"""Options that several `router` commands share, spelled one way everywhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class _DeprecatedJson(argparse.Action):
    """`--json`, the old spelling of `--format json`: still works, says so once."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog}: --json is deprecated; use --format json", file=sys.stderr)
        namespace.format = "json"


def add_format(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    """`--format CHOICE` (the first choice is the default), and the hidden `--json`."""
    parser.add_argument(
        "--format",
        choices=list(choices),
        default=choices[0],
        help=f"how to print the result: {', '.join(choices)} (default: {choices[0]})",
    )
    parser.add_argument("--json", nargs=0, action=_DeprecatedJson, help=argparse.SUPPRESS)
