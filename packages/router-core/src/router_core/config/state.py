"""The state section: where every store lives."""

from __future__ import annotations

import attrs

from router_core.config.fields import (
    ENV_RE,
    NAME_RE,
    _check_fields,
    _checked,
    _file_path,
    _matches,
    _one_of,
    _positive,
)
from router_core.config_enums import (
    RedisMode,
    StateStoreKind,
)


@attrs.frozen
class RedisSettings:
    """The one Redis every shared store uses: limits, idempotency, keys, nonces, overrides."""

    # standalone: one server (or a proxy in front of several); sentinel: a
    # master found through Sentinel; cluster: a Redis Cluster (every store
    # keeps each operation's keys in one hash slot).
    mode: RedisMode = _checked(default=RedisMode.STANDALONE, validator=_one_of(RedisMode))
    # Environment variable holding the URL (it may carry a password; use
    # rediss:// for TLS). standalone: the server; cluster: any node (the
    # others are discovered); sentinel: the Sentinels, as
    # redis://[:password@]host:port[,host:port...][/db].
    url_env: str = _checked(
        default="ROUTER_REDIS_URL", validator=_matches(ENV_RE, "an environment variable name")
    )
    # sentinel: the name of the master the Sentinels monitor.
    sentinel_master: str = _checked(
        default="mymaster", validator=_matches(NAME_RE, "a Sentinel master name")
    )
    # Upper bound of one store call other than a limit decision (those have
    # limits.timeout_ms); a store slower than this is treated as down.
    timeout_ms: int = _checked(default=2000, validator=_positive)
    # Connections this process may open to Redis (to each node in a cluster).
    max_connections: int = _checked(default=1000, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class StateSettings:
    """Where the router keeps its state: limits, idempotency keys, managed keys,
    HMAC nonces, admin overrides, and (always local) the usage spool and ledger."""

    # embedded: SQLite files under `dir` and this process's memory, for one
    # router process; redis: shared by every replica through `redis`.
    store: StateStoreKind = _checked(
        default=StateStoreKind.EMBEDDED, validator=_one_of(StateStoreKind)
    )
    # The data directory: the usage spool (spool/) and ledger (usage.sqlite3),
    # and with the embedded store keys.sqlite3, nonces.sqlite3,
    # overrides.sqlite3 and idempotency.sqlite3. Relative paths are from the
    # config file's directory.
    dir: str = _checked(default="router-data", validator=_file_path)
    # The shared store (store: redis).
    redis: RedisSettings = RedisSettings()
    # Replicas re-read admin overrides and managed keys this often, besides
    # the change notifications they follow.
    refresh_s: float = _checked(default=2.0, validator=_positive)

    __attrs_post_init__ = _check_fields
