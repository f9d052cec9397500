import sys

from router_server.main import main

sys.exit(main())
