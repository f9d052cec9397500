"""`router simulate`: a traffic trace replayed through the router's rules, offline."""

from router_cli.simulate.command import add_parser, simulate
from router_cli.simulate.engine import Simulation
from router_cli.simulate.faults import FaultsInvalid, World, load_world, parse_world
from router_cli.simulate.result import Result
from router_cli.simulate.trace import TraceInvalid, TraceRecord, read_trace

__all__ = [
    "FaultsInvalid",
    "Result",
    "Simulation",
    "TraceInvalid",
    "TraceRecord",
    "World",
    "add_parser",
    "load_world",
    "parse_world",
    "read_trace",
    "simulate",
]
