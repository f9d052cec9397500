"""Usage accounting adapters: the disk spool, the SQLite ledger, the Kafka
exporter, the idempotency stores, and the `UsageSink` the pipeline calls.

The record formats, the spool framing and the idempotency rules are pure
and live in `router_core.accounting`.
"""
