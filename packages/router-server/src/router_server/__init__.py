"""router_server: the HTTP shell of the inference router."""

__version__ = "0.1.0"
