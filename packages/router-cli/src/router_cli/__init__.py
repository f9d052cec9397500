"""router_cli: the `router` command."""
