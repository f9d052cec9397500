"""The admin API: its own listener with mutual TLS, routing overrides, audit.

Kept import-light on purpose: `router_server.app` imports the override book
from here, and the admin app itself (`admin.app`) is imported only by `main`.
"""
