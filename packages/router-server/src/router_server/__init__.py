"""router_server: the HTTP shell of the inference router."""

__version__ = "0.1.0"

# The name pip knows this package by (the import name stays router_server).
DISTRIBUTION = "inference-router-server"
