"""The four variables a container sets instead of flags: ROUTER_CONFIG,
ROUTER_HOST, ROUTER_PORT and ROUTER_DATA_DIR.

Rules:
- They are read here and nowhere else, from the mapping the caller passes
  (`os.environ` at start-up, the reloader's copy on a reload).
- A flag on the command line wins over the variable, and the variable over
  the config file (`ROUTER_DATA_DIR` over `state.dir`).
- An empty variable counts as unset: compose's `${X:-}` and Kubernetes'
  `value: ""` pass empty strings for "not set".
- A value that cannot be used is `BadVariable`, a one-line message naming the
  variable; the commands report it as a command-line error (exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CONFIG = "ROUTER_CONFIG"
HOST = "ROUTER_HOST"
PORT = "ROUTER_PORT"
DATA_DIR = "ROUTER_DATA_DIR"


class BadVariable(ValueError):
    """An environment variable's value cannot be used; the text names it."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def config_path(env: Mapping[str, str]) -> str | None:
    """The config file named by ROUTER_CONFIG, if any (the default of `--config`)."""
    return _get(env, CONFIG)


def host(env: Mapping[str, str]) -> str | None:
    return _get(env, HOST)


def port(env: Mapping[str, str]) -> int | None:
    raw = _get(env, PORT)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadVariable(f"{PORT}={raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise BadVariable(f"{PORT}={value} is not a port number (0 to 65535)")
    return value


def data_dir(env: Mapping[str, str]) -> str | None:
    """The data directory ROUTER_DATA_DIR names, made absolute (relative to the
    working directory, as a path given on a command line would be)."""
    raw = _get(env, DATA_DIR)
    return None if raw is None else str(Path(raw).absolute())
