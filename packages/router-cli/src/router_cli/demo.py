"""`router demo`: mock backends and the router on one config, and a request through it.

Starts a mock backend on the port of every loopback backend in the config,
then the router, sends one chat completion with the demo key, prints it
with a curl and an `openai` snippet, and keeps serving until Ctrl-C
(`--check` exits after the request, for tests and CI).

Without `--config` it runs the demo config shipped inside router_cli (the
same file as the repository's examples/router.yaml), copied to a temporary
directory so the router's data (state.dir: the usage ledger, the key store) goes there and
nowhere else, and is removed when the demo stops.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from router_cli.failures import config_problems
from router_core import keys
from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server import config_file
from router_server.exit_codes import Exit
from router_server.mock_backend import MockBackendError, MockBackendProcess
from router_server.process import RouterProcess, RouterProcessError

DEMO_KEY = "rk_demo_DemoKeyDoNotUseInProduction00000"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Package data: the config the demo runs when no --config is given.
DEMO_CONFIG = "demo.yaml"


def demo_config_text() -> str:
    return importlib.resources.files("router_cli").joinpath(DEMO_CONFIG).read_text("utf-8")


@contextlib.contextmanager
def config_file_for(config_path: str | None) -> Iterator[str]:
    """`config_path`, or the shipped demo config in a temporary directory of its own."""
    if config_path is not None:
        yield config_path
        return
    with tempfile.TemporaryDirectory(prefix="router-demo-") as directory:
        path = Path(directory) / "router.yaml"
        path.write_text(demo_config_text(), encoding="utf-8")
        yield str(path)


def _mock_ports(config: RouterConfig) -> list[int]:
    ports = []
    for backend in config.backends.values():
        url = urlsplit(backend.base_url)
        if url.hostname in LOOPBACK and url.port:
            ports.append(url.port)
    return sorted(set(ports))


def _demo_key_known(config: RouterConfig) -> bool:
    return any(
        key.id == "demo" and keys.verify(DEMO_KEY, key.hash)
        for org in config.organizations.values()
        for key in org.keys
    )


def _snippets(url: str, model: str) -> str:
    return textwrap.dedent(f"""\
        Try it yourself (the router stays up until Ctrl-C):

          curl -s {url}/v1/chat/completions \\
            -H 'Authorization: Bearer {DEMO_KEY}' \\
            -H 'Content-Type: application/json' \\
            -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

          python3 - <<'PY'
          from openai import OpenAI  # pip install openai
          client = OpenAI(base_url="{url}/v1", api_key="{DEMO_KEY}")
          reply = client.chat.completions.create(
              model="{model}", messages=[{{"role": "user", "content": "Hello"}}])
          print(reply.choices[0].message.content)
          PY
        """)


def run(config_path: str | None, *, port: int | None, check: bool) -> int:
    try:
        with config_file_for(config_path) as path:
            return _run(path, port=port, check=check)
    except (MockBackendError, RouterProcessError) as exc:
        print(f"router demo: {exc} (is the port already in use?)", file=sys.stderr)
        return Exit.UNAVAILABLE


def _run(config_path: str, *, port: int | None, check: bool) -> int:
    try:
        config = config_file.load(config_path)
    except ConfigInvalid as exc:
        return config_problems(config_path, exc)
    if not _demo_key_known(config):
        print(f"router demo: {config_path} has no key 'demo' matching the demo key "
              "(run router demo without --config for the shipped demo config)",
              file=sys.stderr)  # fmt: skip
        return Exit.INVALID
    model = next(iter(config.models))
    with contextlib.ExitStack() as stack:
        for mock_port in _mock_ports(config):
            stack.enter_context(MockBackendProcess(port=mock_port))
            print(f"mock backend   http://127.0.0.1:{mock_port}/v1")
        router = RouterProcess(
            Path(config_path), port=port or config.listeners.public.port, log=None
        )
        stack.enter_context(router)
        if not router.wait_ready():
            print("router demo: the router did not become ready", file=sys.stderr)
            return Exit.UNAVAILABLE
        print(f"router         {router.url}  (config {config_path})\n")
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {DEMO_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hello"}]},
            timeout=10,
        )
        print(f"POST /v1/chat/completions  model={model}  key=demo")
        print(
            f"  -> HTTP {response.status_code}  backend={response.headers.get('x-router-backend')}"
            f"  request id={response.headers.get('x-request-id')}"
        )
        if response.status_code != 200:
            print(f"  {response.text}", file=sys.stderr)
            return Exit.UNAVAILABLE
        body = response.json()
        print(f"  reply: {body['choices'][0]['message']['content']!r}")
        print(f"  usage: {body['usage']}\n")
        if check:
            return Exit.OK
        print(_snippets(router.url, model))
        _wait_for_interrupt()
    return Exit.OK


def _wait_for_interrupt() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
