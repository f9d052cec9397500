"""router_cli: the `router` command."""

# The name pip knows this package by (the import name stays router_cli).
DISTRIBUTION = "inference-router-cli"
