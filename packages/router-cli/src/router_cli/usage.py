"""`router usage report` and `router usage reconcile`: read the ledger (or the topic).

report     totals per organization, model, key... over a time range, as a
           table, CSV or JSON
reconcile  the records against a client's list of request ids: missing,
           duplicated, mismatched and unexpected ids (exit 4 if any)
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from router_cli.failures import config_problems
from router_cli.options import add_format
from router_core.accounting.reconcile import Report, reconcile
from router_core.accounting.wire import format_usd
from router_core.config_codec import ConfigInvalid
from router_server.exit_codes import Exit
from router_server.state.errors import StoreUnavailable

if TYPE_CHECKING:  # imported when used: `router --help` need not load the server
    from router_server.usage.ledger import UsageLedger

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class UsageCommandError(Exception):
    """The command line is wrong (exit 2)."""


class ClientLogInvalid(Exception):
    """The client log cannot be read or has a bad line (exit 1)."""


class SourceUnavailable(Exception):
    """The ledger or the topic cannot be read (exit 3)."""


def _failed(command: str, exc: Exception, config: str | None) -> int:
    """Say what went wrong; the exit code of its kind."""
    if isinstance(exc, ConfigInvalid):
        return config_problems(config or "config", exc)
    print(f"router usage {command}: {exc}", file=sys.stderr)
    if isinstance(exc, ClientLogInvalid):
        return Exit.INVALID
    if isinstance(exc, SourceUnavailable):
        return Exit.UNAVAILABLE
    return Exit.USAGE


def parse_time(text: str, now: dt.datetime) -> str:
    """`24h`, `7d`, `2026-11-01` or an RFC 3339 time -> the ledger's timestamp form."""
    match = _RELATIVE.match(text)
    if match:
        moment = now - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UsageCommandError(
                f"cannot read time {text!r}: use 24h, 7d, 2026-11-01 or 2026-11-01T10:00:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ledger_path(args: argparse.Namespace) -> Path:
    if args.ledger:
        return Path(args.ledger)
    directory = "router-data"
    if args.config:
        from router_server import config_file

        # state.dir comes back resolved against the config file's directory.
        directory = config_file.load(args.config, check_env=False).state.dir
    return Path(directory) / "usage.sqlite3"


def _open_ledger(args: argparse.Namespace) -> UsageLedger:
    from router_server.usage.ledger import UsageLedger

    path = ledger_path(args)
    try:
        return UsageLedger.open_readonly(path)
    except FileNotFoundError:
        hint = (
            "" if args.ledger else " (give --ledger FILE, or --config of the router that wrote it)"
        )
        raise SourceUnavailable(f"no usage ledger at {path}{hint}") from None
    except StoreUnavailable as exc:
        raise SourceUnavailable(f"cannot read the usage ledger {path}: {exc.detail}") from None


def _rows(args: argparse.Namespace, now: dt.datetime) -> list[dict[str, Any]]:
    from router_server.usage.ledger import GROUPS

    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()] if args.group_by else []
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise UsageCommandError(
            f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    since = parse_time(args.since, now)
    until = parse_time(args.until, now) if args.until else None
    ledger = _open_ledger(args)
    try:
        rows = ledger.report(since, until, group_by)
    except StoreUnavailable as exc:
        raise SourceUnavailable(f"cannot read the usage ledger: {exc.detail}") from None
    finally:
        ledger.close()
    for row in rows:
        nanos = row.pop("cost_nano_usd")
        row["cost_usd"] = None if nanos is None else format_usd(nanos)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no usage records in this range\n"
    names = list(rows[0])
    cells = [[("-" if row[n] is None else str(row[n])) for n in names] for row in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"


FORMATS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "table": _table,
    "csv": _csv,
    "json": _json,
}


def report(args: argparse.Namespace) -> int:
    try:
        rows = _rows(args, dt.datetime.now(dt.UTC))
    except (UsageCommandError, ConfigInvalid, SourceUnavailable) as exc:
        return _failed("report", exc, args.config)
    sys.stdout.write(FORMATS[args.format](rows))
    return Exit.OK


def client_entries(path: Path) -> Iterator[Mapping[str, Any]]:
    """One request id a line, or JSON lines with `request_id` and fields to compare."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ClientLogInvalid(f"{path}: cannot read: {why}") from None
    for number, line in enumerate(text.splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                entry = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ClientLogInvalid(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(entry, dict) or "request_id" not in entry:
                raise ClientLogInvalid(f"{path}:{number}: a JSON line needs request_id")
            yield entry
        else:
            yield {"request_id": text}


def _records(args: argparse.Namespace, now: dt.datetime) -> list[dict[str, Any]]:
    since = parse_time(args.since, now) if args.since else None
    if args.topic:
        import asyncio

        from aiokafka.errors import KafkaError

        from router_server.usage.topic import read_topic

        if not args.bootstrap:
            raise UsageCommandError("--topic needs --bootstrap HOST:PORT")
        try:
            records = asyncio.run(read_topic(args.bootstrap, args.topic))
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SourceUnavailable(
                f"cannot read topic {args.topic} from {args.bootstrap}: {exc or type(exc).__name__}"
            ) from None
        return [r for r in records if since is None or r["started_at"] >= since]
    ledger = _open_ledger(args)
    try:
        return ledger.records(since)
    except StoreUnavailable as exc:
        raise SourceUnavailable(f"cannot read the usage ledger: {exc.detail}") from None
    finally:
        ledger.close()


def render_report(result: Report, limit: int = 20) -> str:
    lines = [
        f"client ids: {result.client_ids}  records read: {result.records} "
        f"(redelivered copies: {result.redelivered}, replays: {result.replayed})",
        f"matched: {result.matched}  missing: {len(result.missing)}  "
        f"duplicated: {len(result.duplicated)}  mismatched: {len(result.mismatched)}  "
        f"unexpected: {len(result.unexpected)}",
    ]
    for name, ids in (
        ("missing", result.missing),
        ("duplicated", result.duplicated),
        ("unexpected", result.unexpected),
    ):
        for request_id in ids[:limit]:
            lines.append(f"  {name}: {request_id}")
    for m in result.mismatched[:limit]:
        lines.append(f"  mismatched: {m.id} {m.field}: client {m.client!r}, router {m.router!r}")
    lines.append("exact" if result.exact else "DIFFERENT")
    return "\n".join(lines) + "\n"


def reconcile_command(args: argparse.Namespace) -> int:
    try:
        entries = list(client_entries(Path(args.client_log)))
        records = _records(args, dt.datetime.now(dt.UTC))
        result = reconcile(entries, records)
    except (UsageCommandError, ClientLogInvalid, ConfigInvalid, SourceUnavailable) as exc:
        return _failed("reconcile", exc, args.config)
    sys.stdout.write(render_report(result))
    return Exit.OK if result.exact else Exit.DIFFERENT


def add_commands(commands: Any) -> None:
    usage = commands.add_parser("usage", help="usage records: report and reconcile")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True, metavar="COMMAND")

    def source(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ledger", metavar="FILE", help="the ledger file (default: from --config)"
        )
        parser.add_argument(
            "--config", metavar="FILE", help="the router's config (its state.dir holds the ledger)"
        )

    rep = usage_commands.add_parser("report", help="usage totals from the ledger")
    rep.add_argument("--since", required=True, help="24h, 7d, 2026-11-01, or RFC 3339")
    rep.add_argument("--until", help="end of the range (exclusive)")
    rep.add_argument("--group-by", default="org,model", help="org,model,key,backend,outcome,day")
    add_format(rep, list(FORMATS))
    source(rep)
    rep.set_defaults(handler=report)

    rec = usage_commands.add_parser("reconcile", help="compare records with a client log")
    rec.add_argument("--client-log", required=True, help="request ids, one a line (or JSON lines)")
    rec.add_argument("--since", help="only records started since (default: all)")
    rec.add_argument("--topic", help="read this Kafka topic instead of the ledger")
    rec.add_argument("--bootstrap", help="Kafka bootstrap servers, with --topic")
    source(rec)
    rec.set_defaults(handler=reconcile_command)
