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
    # How long the router waits for any answer from Redis (the socket
    # timeout). A store that does not answer within it is down: decisions then
    # follow limits.on_store_failure at once until Redis answers a PING again.
    # A limit decision's own budget is measured on Redis' side (limits.timeout_ms).
    timeout_ms: int = _checked(default=2000, validator=_positive)
    # Connections this process may open to Redis (to each node in a cluster)
    # for the change feeds, the admin API and health checks (and, on a cluster,
    # the request path). On standalone and Sentinel the request path (limits,
    # idempotency keys, nonces) has its own `pipelines` connections on top,
    # whatever the load.
    max_connections: int = _checked(default=1000, validator=_positive)
    # Pipelines in flight at once on the request path: the Redis calls of
    # concurrent requests go together in the next free one, so round trips per
    # request fall as load rises. On a cluster (no pipelining across nodes):
    # 16 times this many single calls at once.
    pipelines: int = _checked(default=8, validator=_positive)

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
