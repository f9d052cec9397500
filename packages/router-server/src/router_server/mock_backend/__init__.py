"""OpenAI-compatible mock model backend, run as a real server process.

`python -m router_server.mock_backend --port 9001 [--latency-ms 20 ...]`
serves `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
`/v1/models` with deterministic content, plus `/_mock/stats`,
`/_mock/config` and `/_mock/reset` so tests can inspect and steer it.
`MockBackendProcess` starts one from Python.
"""

from .process import MockBackendError, MockBackendProcess, free_port
from .server import main
from .state import MockConfig

__all__ = ["MockBackendError", "MockBackendProcess", "MockConfig", "free_port", "main"]
