"""`router smoke URL`: a deployment checked end to end, one line per check.

The checks, in order: liveness, readiness and component status (no key),
the models the key may use, one chat completion, one rate-limit header on
it, one streamed chat (SSE read to `[DONE]`), and `/metrics` (or
`--metrics-url`, with `--ops-token-env` when it is behind the ops token).
A check that cannot run because an earlier one failed is skipped, saying
why. Exit 0 when all pass, 3 when nothing answers at the URL, 5 when any
check fails; the key is never printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import orjson

from router_cli.options import add_format
from router_cli.probe import http
from router_server.exit_codes import Exit

PROMPT = "Reply with one word: ok."
# Any one of these on an answer shows the limits ran (docs/limits.md).
LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "ratelimit-policy")


@attrs.frozen
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str


class _Unreachable(Exception):
    pass


@attrs.define
class Smoke:
    client: httpx.Client
    secrets: http.Secrets
    metrics_url: str
    model: str | None
    checks: list[Check] = attrs.field(factory=list)
    chat_headers: httpx.Headers | None = None

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, "pass" if passed else "fail", self.secrets.scrub(detail)))
        return passed

    def skip(self, names: tuple[str, ...], why: str) -> None:
        self.checks += [Check(name, "skip", why) for name in names]

    def get(self, path_or_url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.get(path_or_url, headers=headers)

    def run(self) -> None:
        try:
            self._status()
        except _Unreachable:
            self.skip(
                ("readyz", "status", "models", "chat", "limits", "stream", "metrics"),
                "not run: nothing answers at the URL",
            )
            return
        model = self._models()
        if model is None:
            self.skip(("chat", "limits", "stream"), "not run: no model to try (see models)")
        else:
            self._chat(model)
            self._stream(model)
        self._metrics()

    def _status(self) -> None:
        try:
            health = self.get("/v1/status/healthz")
        except httpx.HTTPError as exc:
            self.add("healthz", False, http.transport_error(exc, self.secrets))
            raise _Unreachable from None
        self.add("healthz", health.status_code == 200, f"/v1/status/healthz: {_said(health)}")
        self._answer("readyz", "/v1/status/readyz", lambda r: (r.status_code == 200, _said(r)))
        self._answer("status", "/v1/status", _status_verdict)

    def _answer(
        self, name: str, path: str, verdict: Callable[[httpx.Response], tuple[bool, str]]
    ) -> httpx.Response | None:
        try:
            response = self.get(path)
        except httpx.HTTPError as exc:
            self.add(name, False, f"{path}: {http.transport_error(exc, self.secrets)}")
            return None
        passed, detail = verdict(response)
        self.add(name, passed, f"{path}: {detail}")
        return response

    def _models(self) -> str | None:
        try:
            response = self.get("/v1/models", http.key_headers(self.secrets))
        except httpx.HTTPError as exc:
            self.add("models", False, f"/v1/models: {http.transport_error(exc, self.secrets)}")
            return None
        if response.status_code != 200:
            hint = " (the key was refused)" if response.status_code == 401 else ""
            self.add("models", False, f"/v1/models: {http.problem(response, self.secrets)}{hint}")
            return None
        ids = _model_ids(response)
        if not ids:
            self.add("models", False, "/v1/models: this key may use no model")
            return None
        if self.model is not None and self.model not in ids:
            self.add(
                "models",
                False,
                f"/v1/models: {self.model!r} is not offered to this key "
                f"(it may use: {', '.join(ids)})",
            )
            return None
        chosen = self.model or ids[0]
        self.add("models", True, f"/v1/models: {len(ids)} model(s); trying {chosen!r}")
        return chosen

    def _post_chat(self, model: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if stream:
            body["stream"] = True
        return body

    def _chat(self, model: str) -> None:
        path = "/v1/chat/completions"
        try:
            response = self.client.post(
                path, json=self._post_chat(model, False), headers=http.key_headers(self.secrets)
            )
        except httpx.HTTPError as exc:
            self.add("chat", False, f"{path}: {http.transport_error(exc, self.secrets)}")
            self.skip(("limits",), "not run: the chat completion failed")
            return
        if response.status_code != 200:
            self.add("chat", False, f"{path}: {http.problem(response, self.secrets)}")
            self.skip(("limits",), "not run: the chat completion failed")
            return
        content = _message_content(response)
        if content is None:
            self.add("chat", False, f"{path}: 200 but no choices[0].message in the answer")
        else:
            backend = response.headers.get("x-router-backend", "?")
            self.add("chat", True, f"{path}: 200 from backend {backend} ({len(content)} chars)")
        found = [name for name in LIMIT_HEADERS if name in response.headers]
        if found:
            self.add("limits", True, f"{found[0]}: {response.headers[found[0]]}")
        else:
            self.add(
                "limits",
                False,
                "no x-ratelimit-* or RateLimit-Policy header on the answer "
                "(does the key's organization have a requests or tokens rate limit?)",
            )

    def _stream(self, model: str) -> None:
        path = "/v1/chat/completions"
        body = self._post_chat(model, True)
        try:
            with self.client.stream(
                "POST", path, json=body, headers=http.key_headers(self.secrets)
            ) as response:
                if response.status_code != 200:
                    response.read()
                    self.add("stream", False, f"{path}: {http.problem(response, self.secrets)}")
                    return
                chunks, done, bad = _read_sse(response)
        except httpx.HTTPError as exc:
            self.add("stream", False, f"{path}: {http.transport_error(exc, self.secrets)}")
            return
        if bad is not None:
            self.add("stream", False, f"{path}: an event is not JSON: {bad[:80]!r}")
        elif not done:
            self.add("stream", False, f"{path}: the stream ended without [DONE] ({chunks} events)")
        else:
            self.add("stream", True, f"{path}: {chunks} events, then [DONE]")

    def _metrics(self) -> None:
        headers = {}
        if self.secrets.ops_token is not None:
            headers["authorization"] = f"Bearer {self.secrets.ops_token}"
        try:
            response = self.get(self.metrics_url, headers)
        except httpx.HTTPError as exc:
            self.add(
                "metrics", False, f"{self.metrics_url}: {http.transport_error(exc, self.secrets)}"
            )
            return
        if response.status_code == 401:
            self.add(
                "metrics",
                False,
                f"{self.metrics_url}: 401 (behind the ops token: pass --ops-token-env)",
            )
        elif response.status_code != 200:
            self.add("metrics", False, f"{self.metrics_url}: {response.status_code}")
        elif "router_requests_total" not in response.text:
            self.add(
                "metrics",
                False,
                f"{self.metrics_url}: 200 but not the router's metrics (no router_requests_total)",
            )
        else:
            self.add("metrics", True, f"{self.metrics_url}: 200, router metrics")


def _said(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text.strip()[:160]}"


def _status_verdict(response: httpx.Response) -> tuple[bool, str]:
    if response.status_code != 200:
        return False, str(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return False, "200 but not JSON"
    status = body.get("status") if isinstance(body, dict) else None
    if status == "ok":
        return True, "ok"
    components = body.get("components", {}) if isinstance(body, dict) else {}
    unwell = [
        name
        for name, c in components.items()
        if isinstance(c, dict) and c.get("state") in ("degraded", "down")
    ]
    backends = components.get("backends", {}) if isinstance(components, dict) else {}
    unwell += [
        f"backend {name}"
        for name, b in backends.items()
        if isinstance(b, dict) and b.get("state") in ("degraded", "down")
    ]
    unserved = body.get("unserved_models") or [] if isinstance(body, dict) else []
    if unserved:
        unwell.append("unserved models " + ", ".join(map(str, unserved)))
    return False, f"{status}: " + ("; ".join(unwell) or "see /v1/status")


def _model_ids(response: httpx.Response) -> list[str]:
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return []
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _message_content(response: httpx.Response) -> str | None:
    try:
        message = response.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _read_sse(response: httpx.Response) -> tuple[int, bool, str | None]:
    """(JSON events, whether `[DONE]` came, the first event that is not JSON)."""
    chunks, done = 0, False
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            return chunks, done, data
        chunks += 1
    return chunks, done, None


def add_parser(commands: Any) -> None:
    smoke = commands.add_parser(
        "smoke", help="check a deployment end to end: status, models, chat, stream, limits, metrics"
    )
    http.add_connection_options(smoke)
    smoke.add_argument(
        "--metrics-url", metavar="URL", help="where /metrics is served (default: URL/metrics)"
    )
    smoke.add_argument(
        "--ops-token-env", metavar="VAR", help="the variable holding the ops token for /metrics"
    )
    add_format(smoke, ("table", "json"))
    smoke.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        root = http.base_url(args.url)
        secrets = http.secrets_from(args)
        verify = http.verify_from(args)
    except http.ProbeUsage as exc:
        print(f"router smoke: {exc}", file=sys.stderr)
        return Exit.USAGE
    metrics_url = args.metrics_url or root + "/metrics"
    with httpx.Client(base_url=root, timeout=args.timeout, verify=verify) as client:
        smoke = Smoke(client, secrets, metrics_url, args.model)
        smoke.run()
    failed = [c.name for c in smoke.checks if c.status == "fail"]
    unreachable = smoke.checks[0].status == "fail" and smoke.checks[1].status == "skip"
    if args.format == "json":
        out = {
            "url": root,
            "passed": not failed,
            "failed": failed,
            "checks": [attrs.asdict(c) for c in smoke.checks],
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        width = max(len(c.name) for c in smoke.checks)
        for check in smoke.checks:
            print(f"{check.status.upper():4}  {check.name:{width}}  {check.detail}")
    if failed:
        print(f"router smoke: {root}: failed: {', '.join(failed)}", file=sys.stderr)
        return Exit.UNAVAILABLE if unreachable else Exit.FAILED
    print(f"router smoke: {root}: all {len(smoke.checks)} checks passed", file=sys.stderr)
    return Exit.OK
