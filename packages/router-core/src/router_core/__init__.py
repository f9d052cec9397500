"""router_core: the pure, I/O-free core of the inference router."""

__version__ = "0.1.0"
