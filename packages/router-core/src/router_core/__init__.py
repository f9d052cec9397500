"""router_core: the pure, I/O-free core of the inference router."""

__version__ = "0.1.0"

# The name pip knows this package by (the import name stays router_core).
DISTRIBUTION = "inference-router-core"
