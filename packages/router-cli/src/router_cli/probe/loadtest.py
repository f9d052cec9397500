"""`router loadtest URL --rate R --duration S`: fixed-rate load against a
deployment, judged against the SLOs (`probe.slo` holds the rules).

The runner only sends and times: each request is due on the schedule
`slo.due_offsets` gives, is sent when due unless `--max-in-flight` requests
are still open (then it is counted unsent), and is timed from its due time
to the end of its answer (a stream: to its first event), with the shares
the router reports in `Server-Timing`. Before the run, one `GET /v1/models`
checks the key and picks the model. Exit 0 when every SLO passes, 5 when
one fails, 3 when nothing answers, 2 for a bad key, model or option.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import httpx
import orjson

from router_cli.options import add_format
from router_cli.probe import http, slo
from router_server.exit_codes import Exit

PROMPT = "Reply with one word: ok."
# Sent this long after its due time, a request counts as sent late: the
# load generator itself was behind (its CPU), which inflates the figures.
LATE_S = 0.05


class _Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Runner:
    def __init__(
        self,
        client: httpx.AsyncClient,
        secrets: http.Secrets,
        model: str,
        stream: bool,
        max_in_flight: int,
    ) -> None:
        self.client = client
        self.secrets = secrets
        self.stream = stream
        self.max_in_flight = max_in_flight
        self.body: dict[str, Any] = {
            "model": model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if stream:
            self.body["stream"] = True
        self.samples: list[slo.Sample] = []
        self.unsent = 0
        self.late = 0
        self.in_flight = 0

    async def run(self, rate: float, duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        for offset in slo.due_offsets(rate, duration_s):
            due = start + offset
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if self.in_flight >= self.max_in_flight:
                self.unsent += 1
                continue
            if loop.time() - due > LATE_S:
                self.late += 1
            self.in_flight += 1
            task = asyncio.create_task(self._one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _one(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        headers = http.key_headers(self.secrets)
        try:
            if self.stream:
                sample = await self._streamed(due, headers)
            else:
                response = await self.client.post(
                    "/v1/chat/completions", json=self.body, headers=headers
                )
                latency_ms = (loop.time() - due) * 1000
                sample = self._sample(response, latency_ms, None)
        except httpx.HTTPError as exc:
            sample = slo.Sample((loop.time() - due) * 1000, http.transport_error(exc, self.secrets))
        except (ValueError, UnicodeDecodeError) as exc:  # an answer httpx could not decode
            sample = slo.Sample((loop.time() - due) * 1000, f"bad answer: {type(exc).__name__}")
        finally:
            self.in_flight -= 1
        self.samples.append(sample)

    async def _streamed(self, due: float, headers: dict[str, str]) -> slo.Sample:
        loop = asyncio.get_running_loop()
        async with self.client.stream(
            "POST", "/v1/chat/completions", json=self.body, headers=headers
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return self._sample(response, (loop.time() - due) * 1000, None)
            first_ms: float | None = None
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if first_ms is None:
                    first_ms = (loop.time() - due) * 1000
                if line[len("data:") :].strip() == "[DONE]":
                    done = True
            ended_ms = (loop.time() - due) * 1000
        error = None if done else "stream ended without [DONE]"
        return self._sample(response, first_ms if first_ms is not None else ended_ms, error)

    def _sample(self, response: httpx.Response, latency_ms: float, error: str | None) -> slo.Sample:
        if response.status_code != 200:
            # The code, not the message: errors are counted by kind.
            error = http.problem(response, self.secrets).partition(":")[0]
        router_ms, backend_ms = http.server_timing(response.headers.get("server-timing"))
        return slo.Sample(latency_ms, error, router_ms, backend_ms)


async def _preflight(client: httpx.AsyncClient, secrets: http.Secrets, model: str | None) -> str:
    """The model to load, once the key is known good."""
    try:
        response = await client.get("/v1/models", headers=http.key_headers(secrets))
    except httpx.HTTPError as exc:
        code = Exit.UNAVAILABLE if http.unreachable(exc) else Exit.FAILED
        raise _Refused(f"/v1/models: {http.transport_error(exc, secrets)}", code) from None
    if response.status_code == 401:
        raise _Refused(f"the key was refused: {http.problem(response, secrets)}", Exit.USAGE)
    if response.status_code != 200:
        raise _Refused(f"/v1/models: {http.problem(response, secrets)}", Exit.FAILED)
    try:
        ids = [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise _Refused("/v1/models: the answer is not a model list", Exit.FAILED) from None
    if model is not None and model not in ids:
        offered = ", ".join(ids) or "none"
        raise _Refused(
            f"model {model!r} is not offered to this key (it may use: {offered})", Exit.USAGE
        )
    if not ids:
        raise _Refused("this key may use no model", Exit.USAGE)
    return model or ids[0]


async def _load(args: argparse.Namespace, root: str, secrets: http.Secrets) -> Runner:
    verify = http.verify_from(args)
    limits = httpx.Limits(
        max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight
    )
    async with httpx.AsyncClient(
        base_url=root, timeout=args.timeout, verify=verify, limits=limits
    ) as client:
        model = await _preflight(client, secrets, args.model)
        runner = Runner(client, secrets, model, args.stream, args.max_in_flight)
        await runner.run(args.rate, args.duration)
        return runner


def add_parser(commands: Any) -> None:
    load = commands.add_parser(
        "loadtest", help="fixed-rate load against a deployment, judged against the SLOs"
    )
    http.add_connection_options(load)
    load.add_argument("--rate", type=float, required=True, help="requests per second")
    load.add_argument("--duration", type=float, required=True, metavar="S", help="seconds of load")
    load.add_argument("--stream", action="store_true", help="streamed chat completions")
    load.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        metavar="N",
        help="requests open at once; one due beyond it is not sent (default: 256)",
    )
    load.add_argument(
        "--p95-ms",
        type=float,
        default=slo.DEFAULT_P95_MS,
        help=f"latency target (default: {slo.DEFAULT_P95_MS:g})",
    )
    load.add_argument(
        "--router-ms",
        type=float,
        default=slo.DEFAULT_ROUTER_MS,
        help=f"router-added latency target (default: {slo.DEFAULT_ROUTER_MS:g})",
    )
    load.add_argument(
        "--max-error-rate",
        type=float,
        default=slo.DEFAULT_MAX_ERROR_RATE,
        help=f"share of requests that may fail (default: {slo.DEFAULT_MAX_ERROR_RATE:g})",
    )
    load.add_argument(
        "--quantile",
        type=float,
        default=slo.DEFAULT_QUANTILE,
        help="the latency targets' quantile (default: 0.95)",
    )
    load.add_argument(
        "--include-backend",
        action="store_true",
        help="judge latency end to end (default: without the backend share in Server-Timing)",
    )
    add_format(load, ("table", "json"))
    load.set_defaults(handler=run)


def _check_options(args: argparse.Namespace) -> str | None:
    if args.rate <= 0 or args.duration <= 0:
        return "--rate and --duration must be positive"
    if args.rate * args.duration > 1_000_000:
        return "--rate x --duration is over a million requests"
    if args.max_in_flight < 1:
        return "--max-in-flight must be at least 1"
    if not 0 <= args.max_error_rate <= 1:
        return "--max-error-rate is a share, from 0 to 1"
    if not 0 < args.quantile <= 1:
        return "--quantile must be in (0, 1]"
    return None


def run(args: argparse.Namespace) -> int:
    try:
        root = http.base_url(args.url)
        secrets = http.secrets_from(args)
        http.verify_from(args)
    except http.ProbeUsage as exc:
        print(f"router loadtest: {exc}", file=sys.stderr)
        return Exit.USAGE
    if (wrong := _check_options(args)) is not None:
        print(f"router loadtest: {wrong}", file=sys.stderr)
        return Exit.USAGE
    targets = slo.Targets(
        args.p95_ms,
        args.router_ms,
        args.max_error_rate,
        args.quantile,
        exclude_backend=not args.include_backend,
    )
    try:
        runner = asyncio.run(_load(args, root, secrets))
    except _Refused as exc:
        print(f"router loadtest: {root}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("router loadtest: interrupted; nothing judged", file=sys.stderr)
        return 130
    verdicts = slo.judge(runner.samples, runner.unsent, targets)
    out = slo.summary(
        runner.samples, runner.unsent, targets, verdicts, rate=args.rate, duration_s=args.duration
    )
    out["url"], out["model"], out["stream"] = root, runner.body["model"], args.stream
    out["requests"]["sent_late"] = runner.late
    if args.format == "json":
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_table(out, verdicts)
    failed = [v.slo for v in verdicts if not v.passed]
    if failed:
        print(f"router loadtest: {root}: failed: {', '.join(failed)}", file=sys.stderr)
        return Exit.FAILED
    return Exit.OK


def _print_table(out: dict[str, Any], verdicts: tuple[slo.Verdict, ...]) -> None:
    kind = "streamed" if out["stream"] else "non-streamed"
    counts = out["requests"]
    print(
        f"{out['url']}: {counts['scheduled']} requests at {out['rate']:g}/s for "
        f"{out['duration_s']:g} s, model {out['model']!r} ({kind})"
    )
    print(
        f"sent {counts['sent']} ({counts['unsent']} unsent, {counts['sent_late']} late): "
        f"{counts['ok']} ok, {counts['errors']} errors"
    )
    for kind_of_error, n in sorted(out["errors_by_kind"].items()):
        print(f"  {n} x {kind_of_error}")
    what = "first event" if out["stream"] else "answer"
    for name, label in (("end_to_end", f"to {what}"), ("router", "router"), ("backend", "backend")):
        q = out["latency_ms"][name]
        if q["p50"] is None:
            print(f"{label:>14} ms: no data")
        else:
            print(
                f"{label:>14} ms: p50 {q['p50']:g}  p95 {q['p95']:g}  p99 {q['p99']:g}  "
                f"max {q['max']:g}"
            )
    for verdict in verdicts:
        print(f"{'PASS' if verdict.passed else 'FAIL'}  {verdict.slo:15}  {verdict.detail}")
