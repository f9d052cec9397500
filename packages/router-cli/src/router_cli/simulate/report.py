"""The simulation's summary as readable tables (rich) on a console."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(summary: dict[str, Any], console: Console, elapsed_s: float | None = None) -> None:
    requests = summary["requests"]
    line = (
        f"{requests:,} requests over {summary['trace_seconds']:,.1f} s of trace: "
        f"{summary['served']:,} served, {summary['denied']:,} denied"
    )
    if elapsed_s is not None:
        line += f" (simulated in {elapsed_s:.2f} s)"
    console.print(line)

    backends = Table(title="Backends", title_justify="left")
    for column in ("backend", "served", "share", "attempts", "failed", "p50 ms", "p99 ms"):
        backends.add_column(column, justify="left" if column == "backend" else "right")
    for name, row in summary["backends"].items():
        backends.add_row(
            name,
            f"{row['served']:,}",
            f"{row['share']:.1%}",
            f"{row['attempts']:,}",
            f"{row['failed_attempts']:,}",
            _ms(row["latency_ms"]["p50"]),
            _ms(row["latency_ms"]["p99"]),
        )
    console.print(backends)

    denials = Table(title="Denials", title_justify="left")
    denials.add_column("reason")
    denials.add_column("requests", justify="right")
    denials.add_column("share", justify="right")
    shown = {reason: n for reason, n in summary["denials"].items() if n}
    for reason, n in shown.items():
        denials.add_row(reason, f"{n:,}", f"{n / requests:.1%}" if requests else "-")
    if not shown:
        denials.add_row("(none)", "0", "-")
    console.print(denials)

    spend = Table(title="Spend", title_justify="left")
    spend.add_column("organization")
    spend.add_column("USD", justify="right")
    for org, usd in summary["spend_usd"].items():
        spend.add_row(org, f"{usd:,.6f}")
    if not summary["spend_usd"]:
        spend.add_row("(none)", "0")
    console.print(spend)
    if summary["unpriced_requests"]:
        console.print(
            f"{summary['unpriced_requests']:,} served requests were for models without a price."
        )

    latency = summary["latency_ms"]
    console.print(
        f"Failovers: {summary['failovers']:,} "
        f"({summary['requests_failed_over']:,} requests moved to another backend)\n"
        f"Modelled latency of served requests: p50 {_ms(latency['p50'])} ms, "
        f"p99 {_ms(latency['p99'])} ms"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_comparison(
    summaries: dict[str, dict[str, Any]], console: Console, elapsed_s: float | None = None
) -> None:
    """One column per strategy: its latencies, cache hit rate and each backend's utilisation."""
    first = next(iter(summaries.values()))
    line = (
        f"{first['requests']:,} requests over {first['trace_seconds']:,.1f} s of trace, "
        f"replayed under {len(summaries)} strategies"
    )
    if elapsed_s is not None:
        line += f" (simulated in {elapsed_s:.2f} s)"
    console.print(line)
    table = Table(title="Strategies", title_justify="left")
    table.add_column("")
    for name in summaries:
        table.add_column(name, justify="right", no_wrap=True)
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("served", lambda s: f"{s['served']:,}"),
        ("denied", lambda s: f"{s['denied']:,}"),
        ("TTFT p50 ms", lambda s: _ms(s["ttft_ms"]["p50"])),
        ("TTFT p99 ms", lambda s: _ms(s["ttft_ms"]["p99"])),
        ("latency p50 ms", lambda s: _ms(s["latency_ms"]["p50"])),
        ("latency p99 ms", lambda s: _ms(s["latency_ms"]["p99"])),
        ("cache hit rate", lambda s: _share(s["cache_hit_rate"])),
    ]
    for backend in first["backends"]:
        rows.append((f"{backend} utilisation", _utilisation(backend)))
    for label, cell in rows:
        table.add_row(label, *(cell(summary) for summary in summaries.values()))
    console.print(table)


def _utilisation(backend: str) -> Callable[[dict[str, Any]], str]:
    return lambda summary: _share(summary["backends"][backend]["utilisation"])
