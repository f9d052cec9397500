import sys

from router_server.mock_backend.server import main

sys.exit(main())
