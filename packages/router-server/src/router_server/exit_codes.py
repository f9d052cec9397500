"""Exit codes of `router` and `router-server`: one per kind of failure, whatever
the command, so a script can tell a bad file from a bad command line from a
store that is down (docs/cli.md, "Exit codes", lists them)."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    # A file the command reads (the config, a trace, a faults file, a client
    # log) cannot be read or has problems; the message lists them.
    INVALID = 1
    # The command line is wrong: argparse's own code, also for flags that cannot
    # take effect together and for names (organization, model, key id) that do
    # not exist.
    USAGE = 2
    # Something the command needs is not there or not working: a key store,
    # Redis, a ledger, a port already in use, a router that did not start.
    UNAVAILABLE = 3
    # `router usage reconcile` ran and the records disagree with the client log.
    DIFFERENT = 4
    # `router smoke` or `router loadtest` ran against a deployment, and a check
    # or an SLO failed; the output names which.
    FAILED = 5
