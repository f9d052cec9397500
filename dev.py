#!/usr/bin/env python3
"""Run a nox session with nothing but Python 3.11+ installed.

    python3 dev.py demo         # mock backends + router on the example config
    python3 dev.py lint docs tests  # ruff, mypy, the docs site, then the whole test suite
    python3 dev.py docs         # the docs site, built strictly into site/
    python3 dev.py bench        # the benchmark
    python3 dev.py system-deps  # as root: Debian's chromium, prometheus (promtool), podman
    python3 dev.py image        # as root, with podman: build the container image and run it

Creates .venv-dev/ holding nox (and uv, which nox uses to build its session
environments quickly), then runs `nox -s SESSION...`. Arguments after `--`
go to the sessions: `python3 dev.py tests -- -k auth`, or one level of the
suite (tests/core, tests/server, tests/cli, tests/system):
`python3 dev.py tests -- tests/core`; `-n 0` runs it in one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv-dev"
TOOLS = ["nox>=2024.10.9", "uv>=0.5"]


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def ensure_tools() -> None:
    marker = VENV / ".tools"
    if marker.exists() and marker.read_text() == " ".join(TOOLS):
        return
    if not _bin("python").exists():
        print(f"dev.py: creating {VENV.name}/ with nox and uv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    subprocess.run(
        [
            str(_bin("python")),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *TOOLS,
        ],
        check=True,
    )
    marker.write_text(" ".join(TOOLS))


# Debian packages the tests use when present (they skip with the reason when not):
# the browser for the operator page's test, promtool to check the alert rules;
# and what `dev.py image` builds the container image with (no registry needed).
SYSTEM_DEPS = {
    "chromium": "chromium",
    "promtool": "prometheus",
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
}
IMAGE_TOOLS = ("podman", "runc", "mmdebstrap")


def system_deps() -> int:
    """Install the missing system packages with apt-get, when running as root."""
    missing = [pkg for tool, pkg in SYSTEM_DEPS.items() if shutil.which(tool) is None]
    if not missing:
        return 0
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"dev.py: not installing {', '.join(missing)} (needs root and apt-get); "
              "the tests that need them will skip", file=sys.stderr)  # fmt: skip
        return 0
    apt = shutil.which("apt-get") or "apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-q"], check=False, env=env)
    failed = 0
    for pkg in missing:  # prometheus without its recommends (exporters): only promtool is used
        extra = ["--no-install-recommends"] if pkg == "prometheus" else []
        failed |= subprocess.run([apt, "install", "-y", "-q", *extra, pkg], env=env).returncode
    return failed


def image() -> int:
    """Build the container image from Debian's packages and run it until healthy
    (deploy/image/build-offline.sh); skipped, saying why, without root or podman."""
    missing = [tool for tool in IMAGE_TOOLS if shutil.which(tool) is None]
    if os.name != "posix" or os.geteuid() != 0 or missing:
        why = f"{', '.join(missing)} not installed" if missing else "needs root"
        print(f"dev.py: not building the image ({why}; see docs/deployment.md)", file=sys.stderr)
        return 0
    script = ROOT / "deploy" / "image" / "build-offline.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run([bash, str(script)], cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        print("dev.py: Python 3.11 or newer is required", file=sys.stderr)
        return 2
    if not argv:
        print(__doc__)
        return 2
    if argv == ["system-deps"]:
        return system_deps()
    if argv == ["image"]:
        return image()
    split = argv.index("--") if "--" in argv else len(argv)
    sessions, rest = argv[:split], argv[split:]
    ensure_tools()
    env = {**os.environ, "PATH": f"{_bin('python').parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(_bin("nox")), "--noxfile", str(ROOT / "noxfile.py"), "-s", *sessions, *rest]
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached nox too (same process group); let the session wind down.
        return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
