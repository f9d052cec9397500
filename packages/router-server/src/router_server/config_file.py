"""Reading the YAML config file: the only place the router parses YAML."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs
import yaml

from router_core.config import RouterConfig
from router_core.config_codec import ConfigInvalid, ConfigProblem, structure
from router_core.config_enums import BackendKind
from router_server import environment
from router_server.admin.tls import check_admin_listener


def parse_yaml(text: str, source: str = "config") -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigInvalid([ConfigProblem("", f"{where}: invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigInvalid([ConfigProblem("", f"{source}: invalid YAML: {exc}")]) from None


def resolve_paths(config: RouterConfig, base: Path) -> RouterConfig:
    """`config` with its relative file paths made relative to `base`, the config
    file's directory: the data directory (`state.dir`: the spool, the ledger
    and the embedded stores) and the admin listener's certificates. Otherwise a command run from
    another directory would open (or create) empty stores of its own."""

    def at(path: str) -> str:
        return str(base / path)  # an absolute path stays as it is

    admin = config.listeners.admin
    if admin is not None:
        admin = attrs.evolve(
            admin, cert_file=at(admin.cert_file), key_file=at(admin.key_file),
            ca_file=at(admin.ca_file),
        )  # fmt: skip
    backends = dict(config.backends)
    for name, backend in config.backends.items():
        azure = backend.azure
        if azure is not None and azure.entra_token_file is not None:
            azure = attrs.evolve(azure, entra_token_file=at(azure.entra_token_file))
            backends[name] = attrs.evolve(backend, azure=azure)
        vertex = backend.vertex
        if vertex is not None and vertex.credentials_file is not None:
            vertex = attrs.evolve(vertex, credentials_file=at(vertex.credentials_file))
            backends[name] = attrs.evolve(backend, vertex=vertex)
    return attrs.evolve(
        config,
        backends=backends,
        listeners=attrs.evolve(config.listeners, admin=admin),
        state=attrs.evolve(config.state, dir=at(config.state.dir)),
    )


def missing_credentials(config: RouterConfig, env: Mapping[str, str]) -> list[ConfigProblem]:
    """Credentials the config names (variables, token files) that are not there, and
    the Redis URL's and Kafka's variables when those are in use."""
    problems = [
        ConfigProblem(
            f"backends.{name}.api_key_env",
            f"environment variable {backend.api_key_env} is not set",
        )
        for name, backend in config.backends.items()
        if backend.api_key_env is not None and not env.get(backend.api_key_env)
    ]
    for name, backend in config.backends.items():
        azure = backend.azure
        if azure is None:
            continue
        where = f"backends.{name}.azure"
        if azure.entra_token_env is not None and not env.get(azure.entra_token_env):
            problems.append(
                ConfigProblem(
                    f"{where}.entra_token_env",
                    f"environment variable {azure.entra_token_env} is not set",
                )
            )
        if azure.entra_token_file is not None:
            try:
                token = Path(azure.entra_token_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                problems.append(
                    ConfigProblem(f"{where}.entra_token_file", f"cannot read: {reason}")
                )
            else:
                if not token:
                    problems.append(ConfigProblem(f"{where}.entra_token_file", "is empty"))
    for name, backend in config.backends.items():
        vertex = backend.vertex
        if vertex is None:
            continue
        key = vertex.credentials_file or env.get("GOOGLE_APPLICATION_CREDENTIALS")
        where = f"backends.{name}.vertex.credentials_file"
        if not key:
            problems.append(
                ConfigProblem(where, "not set, and neither is GOOGLE_APPLICATION_CREDENTIALS")
            )
            continue
        from router_server.google import MintFailed, read_key

        try:
            read_key(key)
        except MintFailed as exc:
            problems.append(ConfigProblem(where, str(exc)))
    # Services the config names by an environment variable, when in use:
    # (field, variable, why it is needed).
    needed = [
        ("state.redis.url_env", config.state.redis.url_env,
         config.state.store == "redis", "state.store is redis"),
    ]  # fmt: skip
    kafka = config.usage.kafka
    if kafka is not None:
        needed.append(
            ("usage.kafka.bootstrap_env", kafka.bootstrap_env, True, "usage.kafka is set")
        )
    problems.extend(
        ConfigProblem(field, f"environment variable {variable} is not set ({why})")
        for field, variable, used, why in needed
        if used and not env.get(variable)
    )
    return problems


def missing_extras(config: RouterConfig) -> list[ConfigProblem]:
    """Backend kinds whose optional dependencies are not installed, naming the extra."""
    from router_server import aws, google

    needs = {
        BackendKind.BEDROCK: (aws.available, f"the bedrock extra (botocore): {aws.EXTRA}"),
        BackendKind.VERTEX: (google.available, f"the vertex extra (google-auth): {google.EXTRA}"),
    }
    problems = []
    for name, backend in config.backends.items():
        need = needs.get(backend.kind)
        if need is not None and not need[0]():
            problems.append(
                ConfigProblem(f"backends.{name}.kind", f"kind {backend.kind} needs {need[1]}")
            )
    return problems


def load(
    path: str | Path, env: Mapping[str, str] | None = None, *, check_env: bool = True
) -> RouterConfig:
    """The config in `path`, or `ConfigInvalid` listing every problem with its path.

    With `check_env`, also what the file names outside itself: environment
    variables, and the admin listener's certificate files.

    Relative file paths in it are resolved against the file's directory
    (`resolve_paths`), for the server and every command alike; `ROUTER_DATA_DIR`
    in the environment replaces `state.dir` (a container's writable volume,
    when the file sits on a read-only mount).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid([ConfigProblem("", f"{path}: cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigInvalid([ConfigProblem("", f"{path}: not UTF-8 text")]) from None
    environ = os.environ if env is None else env
    base = path.absolute().parent

    def outside(config: RouterConfig) -> list[ConfigProblem]:
        config = resolve_paths(config, base)  # certificates are read where the file says
        problems = missing_credentials(config, environ) + missing_extras(config)
        admin = config.listeners.admin
        if admin is not None:
            problems += check_admin_listener(admin, config.listeners.public)
        return problems

    # Checked in the same pass as the file, so one run lists every problem.
    config = structure(parse_yaml(text, str(path)), outside if check_env else None)
    config = resolve_paths(config, base)
    data_dir = environment.data_dir(environ)
    if data_dir is not None:
        config = attrs.evolve(config, state=attrs.evolve(config.state, dir=data_dir))
    return config
