"""Usage accounting, pure: records, their wire form, spool framing, idempotency, reconcile.

The adapters in `router_server.usage` perform what these modules decide: they
append the frames, write the ledger, export to Kafka and hold idempotency keys.
"""
