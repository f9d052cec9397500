"""`python -m router_cli`: the `router` command."""

import sys

from router_cli.main import main

sys.exit(main())
