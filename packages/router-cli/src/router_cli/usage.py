"""`router usage report` and `router usage reconcile`: read the ledger (or the topic).

report     totals per organization, model, key... over a time range, as a
           table, CSV or JSON
reconcile  the records against a client's list of request ids: missing,
           duplicated, mismatched and unexpected ids (exit 1 if any)
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
from typing import Any

import orjson

from router_core.accounting.reconcile import Report, reconcile
from router_core.accounting.wire import format_usd
from router_core.config_codec import ConfigInvalid

EXIT_DIFFERENT = 1
EXIT_USAGE = 2

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class UsageCommandError(Exception):
    pass


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

        directory = config_file.load(args.config, check_env=False).usage.dir
    return Path(directory) / "usage.sqlite3"


def _rows(args: argparse.Namespace, now: dt.datetime) -> list[dict[str, Any]]:
    from router_server.usage.ledger import GROUPS, Ledger

    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()] if args.group_by else []
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise UsageCommandError(
            f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    since = parse_time(args.since, now)
    until = parse_time(args.until, now) if args.until else None
    ledger = Ledger.open_readonly(ledger_path(args))
    try:
        rows = ledger.report(since, until, group_by)
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
    except (UsageCommandError, ConfigInvalid, OSError) as exc:
        print(f"router usage report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(FORMATS[args.format](rows))
    return 0


def client_entries(path: Path) -> Iterator[Mapping[str, Any]]:
    """One request id a line, or JSON lines with `request_id` and fields to compare."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                entry = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise UsageCommandError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(entry, dict) or "request_id" not in entry:
                raise UsageCommandError(f"{path}:{number}: a JSON line needs request_id")
            yield entry
        else:
            yield {"request_id": text}


def _records(args: argparse.Namespace, now: dt.datetime) -> list[dict[str, Any]]:
    since = parse_time(args.since, now) if args.since else None
    if args.topic:
        import asyncio

        from router_server.usage.topic import read_topic

        if not args.bootstrap:
            raise UsageCommandError("--topic needs --bootstrap HOST:PORT")
        records = asyncio.run(read_topic(args.bootstrap, args.topic))
        return [r for r in records if since is None or r["started_at"] >= since]
    from router_server.usage.ledger import Ledger

    ledger = Ledger.open_readonly(ledger_path(args))
    try:
        return list(ledger.records(since))
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
    except (UsageCommandError, ConfigInvalid, OSError) as exc:
        print(f"router usage reconcile: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render_report(result))
    return 0 if result.exact else EXIT_DIFFERENT


def add_commands(commands: Any) -> None:
    usage = commands.add_parser("usage", help="usage records: report and reconcile")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)

    def source(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ledger", help="the ledger file (default: from --config)")
        parser.add_argument("--config", help="the router's config (its usage.dir)")

    rep = usage_commands.add_parser("report", help="usage totals from the ledger")
    rep.add_argument("--since", required=True, help="24h, 7d, 2026-11-01, or RFC 3339")
    rep.add_argument("--until", help="end of the range (exclusive)")
    rep.add_argument("--group-by", default="org,model", help="org,model,key,backend,outcome,day")
    rep.add_argument("--format", choices=sorted(FORMATS), default="table")
    source(rep)
    rep.set_defaults(handler=report)

    rec = usage_commands.add_parser("reconcile", help="compare records with a client log")
    rec.add_argument("--client-log", required=True, help="request ids, one a line (or JSON lines)")
    rec.add_argument("--since", help="only records started since (default: all)")
    rec.add_argument("--topic", help="read this Kafka topic instead of the ledger")
    rec.add_argument("--bootstrap", help="Kafka bootstrap servers, with --topic")
    source(rec)
    rec.set_defaults(handler=reconcile_command)
