"""The state layer: where limits, idempotency keys, managed keys, nonces and
admin overrides are kept, configured by the one `state:` section.

- `layer.StateLayer` opens it once per process: the embedded store (this
  process's memory and SQLite files under `state.dir`), or one Redis client
  (standalone, Sentinel or Cluster) shared by every store.
- `errors.StoreUnavailable` is the one error a store raises when it cannot
  answer; `redis.redis_guard` and `sqlite.SqliteFile` raise it.
- `live.LiveView` keeps an in-memory copy of a small store current.
"""
