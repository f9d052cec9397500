"""`router keys create|list|revoke|rotate`.

Without `--config`, `create` only prints a key and the line to paste under
the organization's `keys` in the config file. With `--config`, every command
works on that config's key store (`auth.store`: the SQLite file, or Redis from
the environment variable `auth.redis_url_env`), which running routers follow
within `auth.refresh_s` (at once with Redis). A key is printed once; only its
hash is stored.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson

from router_core import keys
from router_core.config import KEY_ID_RE, RouterConfig
from router_core.config_codec import ConfigInvalid

EXIT_INVALID = 1
EXIT_USAGE = 2


def _print_config_line(org: str, key_id: str | None) -> int:
    key_id = key_id or keys.new_key_id(secrets.choice)
    if not KEY_ID_RE.match(key_id):
        print("router keys create: --id must be 4 to 32 letters or digits", file=sys.stderr)
        return EXIT_USAGE
    key = keys.format_live_key(key_id, keys.new_secret(secrets.choice))
    print(f"API key for organization {org!r} (shown once; store it now):")
    print(f"  {key}")
    print(f"Add under organizations.{org}.keys in the config:")
    # Quoted, so an id of digits only stays a string in YAML.
    print(f'  - {{id: "{key_id}", hash: "{keys.hash_key(key)}"}}')
    return 0


def _with_book(args: argparse.Namespace, run: Callable[[Any, RouterConfig], Awaitable[int]]) -> int:
    from router_server import config_file
    from router_server.credentials.book import KeyBook
    from router_server.credentials.store import KeyStoreUnavailable, open_key_store

    try:
        config = config_file.load(args.config)
    except ConfigInvalid as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return EXIT_INVALID
    env_name = config.auth.redis_url_env
    if config.auth.store == "redis" and env_name not in os.environ:
        print(f"router keys: set {env_name} to the Redis URL", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> int:
        book = KeyBook(open_key_store(config, os.environ))
        try:
            await book.refresh()
            if book.last_error:
                raise KeyStoreUnavailable(book.last_error)
            return await run(book, config)
        finally:
            await book.store.aclose()

    try:
        return anyio.run(main)
    except KeyStoreUnavailable as exc:
        print(f"router keys: {exc.detail}", file=sys.stderr)
        return EXIT_INVALID


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _create(args: argparse.Namespace) -> int:
    if args.config is None:
        return _print_config_line(args.org, args.id)
    if args.id:
        print("router keys create: --id applies only without --config", file=sys.stderr)
        return EXIT_USAGE

    async def run(book: Any, config: RouterConfig) -> int:
        if args.org not in config.organizations:
            print(f"router keys create: unknown organization {args.org!r}", file=sys.stderr)
            return EXIT_USAGE
        expires = None if args.expires_in_s is None else time.time() + args.expires_in_s
        created = await book.create(
            args.org, _actor(), args.reason, models=tuple(args.model or ["*"]),
            routes=tuple(args.route or ["*"]), expires_at=expires,
        )  # fmt: skip
        print(f"API key {created.managed.key.id} for organization {args.org!r} "
              "(shown once; store it now):")  # fmt: skip
        print(f"  {created.key}")
        return 0

    return _with_book(args, run)


def _list(args: argparse.Namespace) -> int:
    from router_server.credentials.store import shown

    async def run(book: Any, config: RouterConfig) -> int:
        now = time.time()
        rows = [shown(k, now) for k in book.managed.values()]
        if args.json:
            print(orjson.dumps(rows).decode())
            return 0
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
        return 0

    return _with_book(args, run)


def _revoke(args: argparse.Namespace) -> int:
    from router_server.credentials.book import KeyNotFound

    async def run(book: Any, config: RouterConfig) -> int:
        try:
            await book.revoke(args.key_id, _actor(), args.reason)
        except KeyNotFound:
            print(f"router keys revoke: no managed key {args.key_id!r}", file=sys.stderr)
            return EXIT_INVALID
        print(f"revoked {args.key_id}")
        return 0

    return _with_book(args, run)


def _rotate(args: argparse.Namespace) -> int:
    from router_server.credentials.book import KeyNotFound

    async def run(book: Any, config: RouterConfig) -> int:
        try:
            successor, _old = await book.rotate(args.key_id, _actor(), args.reason, args.overlap_s)
        except KeyNotFound:
            print(f"router keys rotate: no managed key {args.key_id!r}", file=sys.stderr)
            return EXIT_INVALID
        print(f"API key {successor.managed.key.id} replaces {args.key_id}, which stops "
              f"working in {args.overlap_s:g} s (shown once; store it now):")  # fmt: skip
        print(f"  {successor.key}")
        return 0

    return _with_book(args, run)


def add_commands(commands: Any) -> None:
    keys_cmd = commands.add_parser("keys", help="manage API keys")
    sub = keys_cmd.add_subparsers(dest="keys_command", required=True)

    def with_config(parser: argparse.ArgumentParser, required: bool) -> None:
        parser.add_argument(
            "--config", required=required, help="the router's config (its auth.store is used)"
        )

    create = sub.add_parser("create", help="create a new API key")
    create.add_argument("--org", required=True, help="the organization that owns the key")
    create.add_argument("--id", help="the public key id (default: random; without --config)")
    with_config(create, False)
    create.add_argument("--model", action="append", help="a model the key may use (repeat)")
    create.add_argument("--route", action="append", help="a route the key may call (repeat)")
    create.add_argument("--expires-in-s", type=float, help="the key expires after this")
    create.add_argument("--reason", default="created with the CLI")
    create.set_defaults(handler=_create)

    listing = sub.add_parser("list", help="list the managed keys (never the keys themselves)")
    with_config(listing, True)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    revoke = sub.add_parser("revoke", help="revoke a managed key now")
    revoke.add_argument("key_id")
    with_config(revoke, True)
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=_revoke)

    rotate = sub.add_parser("rotate", help="replace a managed key; the old one works a while")
    rotate.add_argument("key_id")
    with_config(rotate, True)
    rotate.add_argument("--overlap-s", type=float, default=3600.0)
    rotate.add_argument("--reason", default="rotated with the CLI")
    rotate.set_defaults(handler=_rotate)
