"""How every `router` command reports a config it cannot use: the same lines as
`router config validate`, and the same exit code."""

from __future__ import annotations

import sys

from router_core.config_codec import ConfigInvalid
from router_server.exit_codes import Exit


def config_problems(source: str, exc: ConfigInvalid) -> int:
    print(f"{source}: {len(exc.problems)} problem(s)", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return Exit.INVALID
