"""Admin request bodies: checked field by field, every problem named by its path."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from router_core.config import RouterConfig
from router_core.overrides import Override, OverrideInvalid, new_override
from router_core.problems import Catalog, ClientError

_STR = (str,)
_NUM = (int, float)


@attrs.frozen
class ExplainQuery:
    model: str
    organization: str
    key_id: str | None = None


def override_from(body: object, config: RouterConfig, actor: str, now: float) -> Override:
    data = _fields(
        body,
        required={"action": _STR, "backend": _STR, "reason": _STR, "ttl_s": _NUM},
        optional={"model": _STR, "organization": _STR, "weight": _NUM},
    )
    organization = data.get("organization")
    if organization is not None and organization not in config.organizations:
        raise _invalid([("organization", f"unknown organization {organization!r}")])
    model = config.models.get(data.get("model") or "")
    if model is not None:
        # An override naming a backend the model never uses would do nothing
        # (or, for a pin, send the model where it is not served).
        serving = {t.backend for t in model.backends} | {
            t.backend for route in model.routes for t in route.backends
        }
        if data["backend"] in config.backends and data["backend"] not in serving:
            raise _invalid([(
                "backend",
                f"backend {data['backend']!r} does not serve model {data['model']!r} "
                f"(its backends: {', '.join(sorted(serving))})",
            )])  # fmt: skip
    try:
        return new_override(
            id="ovr_" + secrets.token_hex(8),
            action=data["action"],
            backend=data["backend"],
            reason=data["reason"],
            ttl_s=float(data["ttl_s"]),
            now=now,
            created_by=actor,
            model=data.get("model"),
            organization=organization,
            weight=None if data.get("weight") is None else float(data["weight"]),
            known_backends=config.backends,
            known_models=config.models,
        )
    except OverrideInvalid as exc:
        raise _invalid([("", problem) for problem in str(exc).split("; ")]) from None


def explain_query_from(body: object) -> ExplainQuery:
    data = _fields(body, required={"model": _STR, "organization": _STR}, optional={"key_id": _STR})
    return ExplainQuery(data["model"], data["organization"], data.get("key_id"))


def _fields(
    body: object,
    *,
    required: Mapping[str, tuple[type, ...]],
    optional: Mapping[str, tuple[type, ...]],
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid([("", "the body must be a JSON object")])
    problems: list[tuple[str, str]] = []
    for name in body:
        if name not in required and name not in optional:
            problems.append((name, "unknown field"))
    for name, kinds in {**required, **optional}.items():
        value = body.get(name)
        if value is None:
            if name in required:
                problems.append((name, "is required"))
        elif not isinstance(value, kinds) or isinstance(value, bool):
            what = "a string" if kinds == _STR else "a number"
            problems.append((name, f"must be {what}"))
    if problems:
        raise _invalid(problems)
    return body


def _invalid(problems: list[tuple[str, str]]) -> ClientError:
    shown = "; ".join(f"{path}: {message}" if path else message for path, message in problems)
    return ClientError(
        Catalog.VALIDATION_FAILED,
        f"Invalid request: {shown}",
        param=problems[0][0] or None,
        extra={"errors": [{"path": path, "message": message} for path, message in problems]},
    )
