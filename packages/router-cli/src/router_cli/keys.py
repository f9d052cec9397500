"""`router keys create|list|revoke|rotate`.

Without `--config`, `create` only prints a key and the line to paste under
the organization's `keys` in the config file. With `--config`, every command
works on that config's key store (`state.store`: keys.sqlite3 under
`state.dir`, or Redis from the environment variable `state.redis.url_env`),
which running routers follow within `state.refresh_s` (at once with Redis).
A key is printed once; only its hash is stored.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import orjson

from router_cli.failures import config_problems
from router_cli.options import add_format
from router_core import keys
from router_core.config import KEY_ID_RE, RouterConfig
from router_core.config_codec import ConfigInvalid
from router_server.exit_codes import Exit

DEFAULT_REASON = "created with the CLI"


def _fail(message: str, code: Exit = Exit.USAGE) -> int:
    print(f"router keys create: {message}", file=sys.stderr)
    return code


def _config_line(key_id: str, key: str, args: argparse.Namespace) -> str:
    """The entry to paste under the organization's keys, with every scope given."""
    # Quoted (JSON strings are YAML strings), so an id of digits only stays a
    # string and a model name with a colon stays one name.
    fields = [f'id: "{key_id}"', f'hash: "{keys.hash_key(key)}"']
    if args.model:
        fields.append(f"models: {orjson.dumps(args.model).decode()}")
    if args.route:
        fields.append(f"routes: {orjson.dumps(args.route).decode()}")
    if args.expires_in_s is not None:
        fields.append(f"expires_at: {time.time() + args.expires_in_s:.0f}")
    return "- {" + ", ".join(fields) + "}"


def _print_config_line(args: argparse.Namespace) -> int:
    if args.reason is not None:
        # Only a key store keeps an audit trail; a pasted line has nowhere to put it.
        return _fail("--reason is recorded only in a key store: add --config FILE, or drop it")
    key_id = args.id or keys.new_key_id(secrets.choice)
    if not KEY_ID_RE.match(key_id):
        return _fail("--id must be 4 to 32 letters or digits")
    key = keys.format_live_key(key_id, keys.new_secret(secrets.choice))
    print(f"API key for organization {args.org!r} (shown once; store it now):")
    print(f"  {key}")
    print(f"Add under organizations.{args.org}.keys in the config:")
    print(f"  {_config_line(key_id, key, args)}")
    print(
        f"(organization {args.org!r} and the models are not checked without --config FILE)",
        file=sys.stderr,
    )
    return Exit.OK


def _choices(kind: str, names: Iterable[str]) -> str:
    known = sorted(names)
    return f"the config has {', '.join(known)}" if known else f"the config has no {kind}"


def _load(args: argparse.Namespace) -> RouterConfig | int:
    """The config named by --config, or the exit code after saying what is wrong."""
    from router_server import config_file

    try:
        # The key commands need only the key store, not the backends' credentials.
        config = config_file.load(args.config, check_env=False)
    except ConfigInvalid as exc:
        return config_problems(args.config, exc)
    env_name = config.state.redis.url_env
    if config.state.store == "redis" and env_name not in os.environ:
        print(f"router keys: set {env_name} to the Redis URL (state.store is redis)",
              file=sys.stderr)  # fmt: skip
        return Exit.INVALID
    return config


def _with_book(args: argparse.Namespace, run: Callable[[Any, RouterConfig], Awaitable[int]]) -> int:
    config = _load(args)
    if isinstance(config, int):
        return config
    return _on_book(config, run)


def _on_book(config: RouterConfig, run: Callable[[Any, RouterConfig], Awaitable[int]]) -> int:
    from router_server.credentials.book import KeyBook
    from router_server.state.errors import Store, StoreUnavailable
    from router_server.state.layer import StateLayer

    async def main() -> int:
        stores = StateLayer.open(config, os.environ)
        book = KeyBook(stores.key_store())
        try:
            await book.refresh()
            if book.last_error:
                raise StoreUnavailable(Store.KEYS, book.last_error)
            return await run(book, config)
        finally:
            await book.store.aclose()
            await stores.aclose()

    try:
        return anyio.run(main)
    except StoreUnavailable as exc:
        print(f"router keys: {exc.detail}", file=sys.stderr)
        return Exit.UNAVAILABLE


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _create(args: argparse.Namespace) -> int:
    if args.expires_in_s is not None and not args.expires_in_s > 0:
        return _fail("--expires-in-s must be > 0")
    if args.config is None:
        return _print_config_line(args)
    if args.id:
        return _fail("--id applies only without --config (the key store picks the id)")
    config = _load(args)
    if isinstance(config, int):
        return config
    if args.org not in config.organizations:
        return _fail(
            f"unknown organization {args.org!r}; {_choices('organizations', config.organizations)}"
        )
    unknown = [m for m in args.model or () if m != "*" and m not in config.models]
    if unknown:
        names = ", ".join(repr(m) for m in unknown)
        return _fail(f"unknown model {names}; {_choices('models', config.models)}")

    async def run(book: Any, config: RouterConfig) -> int:
        expires = None if args.expires_in_s is None else time.time() + args.expires_in_s
        created = await book.create(
            args.org, _actor(), args.reason or DEFAULT_REASON, models=tuple(args.model or ["*"]),
            routes=tuple(args.route or ["*"]), expires_at=expires,
        )  # fmt: skip
        print(f"API key {created.managed.key.id} for organization {args.org!r} "
              "(shown once; store it now):")  # fmt: skip
        print(f"  {created.key}")
        return Exit.OK

    return _on_book(config, run)


def _list(args: argparse.Namespace) -> int:
    from router_server.credentials.store import shown

    async def run(book: Any, config: RouterConfig) -> int:
        now = time.time()
        rows = [shown(k, now) for k in book.managed.values()]
        if args.format == "json":
            print(orjson.dumps(rows).decode())
            return Exit.OK
        print(f"{'KEY ID':14} {'ORGANIZATION':16} {'STATE':8} {'EXPIRES AT':20} MODELS")
        for row in rows:
            expires = row["expires_at"]
            shown_expiry = (
                "-"
                if expires is None
                else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            )
            print(f"{row['id']:14} {row['organization']:16} {row['state']:8} "
                  f"{shown_expiry:20} {','.join(row['models'])}")  # fmt: skip
        return Exit.OK

    return _with_book(args, run)


def _revoke(args: argparse.Namespace) -> int:
    from router_server.credentials.book import KeyNotFound

    async def run(book: Any, config: RouterConfig) -> int:
        try:
            await book.revoke(args.key_id, _actor(), args.reason)
        except KeyNotFound:
            print(f"router keys revoke: no managed key {args.key_id!r} (see router keys list)",
                  file=sys.stderr)  # fmt: skip
            return Exit.USAGE
        print(f"revoked {args.key_id}")
        return Exit.OK

    return _with_book(args, run)


def _rotate(args: argparse.Namespace) -> int:
    from router_server.credentials.book import KeyNotFound

    async def run(book: Any, config: RouterConfig) -> int:
        try:
            successor, _old = await book.rotate(args.key_id, _actor(), args.reason, args.overlap_s)
        except KeyNotFound:
            print(f"router keys rotate: no managed key {args.key_id!r} (see router keys list)",
                  file=sys.stderr)  # fmt: skip
            return Exit.USAGE
        print(f"API key {successor.managed.key.id} replaces {args.key_id}, which stops "
              f"working in {args.overlap_s:g} s (shown once; store it now):")  # fmt: skip
        print(f"  {successor.key}")
        return Exit.OK

    return _with_book(args, run)


def add_commands(commands: Any) -> None:
    keys_cmd = commands.add_parser("keys", help="manage API keys")
    sub = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    def with_config(parser: argparse.ArgumentParser, required: bool) -> None:
        parser.add_argument(
            "--config",
            required=required,
            metavar="FILE",
            help="the router's config (its state section says where keys are kept)",
        )

    create = sub.add_parser(
        "create",
        help="create a new API key",
        description="Without --config: print a key and the line to paste under the "
        "organization's keys in the config, with the scopes given. With --config: create "
        "the key in the config's key store, which running routers follow.",
    )
    create.add_argument("--org", required=True, help="the organization that owns the key")
    create.add_argument("--id", help="the public key id (default: random; only without --config)")
    with_config(create, False)
    create.add_argument(
        "--model", action="append", metavar="MODEL", help="a model the key may use (repeat)"
    )
    create.add_argument(
        "--route", action="append", metavar="PATH", help="a route the key may call (repeat)"
    )
    create.add_argument(
        "--expires-in-s", type=float, metavar="SECONDS", help="the key expires after this"
    )
    create.add_argument(
        "--reason",
        help=f"why, for the audit trail (only with --config; default: {DEFAULT_REASON!r})",
    )
    create.set_defaults(handler=_create)

    listing = sub.add_parser("list", help="list the managed keys (never the keys themselves)")
    with_config(listing, True)
    add_format(listing, ["table", "json"])
    listing.set_defaults(handler=_list)

    revoke = sub.add_parser("revoke", help="revoke a managed key now")
    revoke.add_argument("key_id", help="the id of the key (see router keys list)")
    with_config(revoke, True)
    revoke.add_argument("--reason", required=True, help="why, for the audit trail")
    revoke.set_defaults(handler=_revoke)

    rotate = sub.add_parser("rotate", help="replace a managed key; the old one works a while")
    rotate.add_argument("key_id", help="the id of the key to replace (see router keys list)")
    with_config(rotate, True)
    rotate.add_argument(
        "--overlap-s",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long the old key keeps working (default: 3600)",
    )
    rotate.add_argument("--reason", default="rotated with the CLI", help="why, for the audit trail")
    rotate.set_defaults(handler=_rotate)
