"""Backends, public models and their routes, and prices."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from router_core.config.fields import (
    ENV_RE,
    NAME_RE,
    FieldError,
    _check_fields,
    _checked,
    _matches,
    _non_empty,
    _non_negative,
    _one_of,
    _optional_positive,
    _per_million,
    _positive,
    _url,
)
from router_core.config_enums import (
    BackendKind,
    LoadMetricsFormat,
    Protocol,
    Strategy,
    VertexPublisher,
    is_member,
    not_one_of,
)


def _protocols(
    _: object, attribute: attrs.Attribute[Any], value: tuple[object, ...] | None
) -> None:
    if value is None:
        return
    if not value:
        raise FieldError(attribute.name, "must name at least one protocol")
    for item in value:
        if not is_member(item, Protocol):
            raise FieldError(attribute.name, not_one_of(Protocol, item))
    if len(set(value)) != len(value):
        raise FieldError(attribute.name, "must not name a protocol twice")


# Azure names a deployment with letters, digits, '-', '_' and '.'; it goes in
# the URL's path, so nothing else may.
DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
API_VERSION_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$|^v1$|^latest$|^preview$")


def _optional_per_million(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _per_million(instance, attribute, value)


def _above_one(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 1 < value < float("inf"):
        raise FieldError(attribute.name, "must be > 1")


_HEADER_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]*")


def _header_name(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _HEADER_RE.fullmatch(value):
        raise FieldError(attribute.name, "must be an HTTP header name (or empty: none)")


def _deployments(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for model, deployment in value.items():
        if not DEPLOYMENT_RE.match(deployment):
            raise FieldError(
                attribute.name,
                f"{model}: {deployment!r} is not a deployment name (letters, digits, . _ -, "
                "up to 64)",
            )


@attrs.frozen
class AzureSettings:
    """How an `azure_openai` backend is addressed and authenticated."""

    # The REST API version sent as `api-version` on every call, e.g. 2024-10-21.
    api_version: str = _checked(
        validator=_matches(
            API_VERSION_RE, "an API version such as 2024-10-21 or 2025-04-01-preview"
        )
    )
    # Deployment name by backend model name (a model target's `model`); a model
    # not listed is sent to the deployment of its own name.
    deployments: Mapping[str, str] = _checked(factory=dict, validator=_deployments)
    # Microsoft Entra ID instead of an API key: the environment variable that
    # holds a bearer token, or a file that holds one (re-read when it changes,
    # for a sidecar that refreshes it). One of these or `api_key_env`.
    entra_token_env: str | None = _checked(
        default=None,
        validator=attrs.validators.optional(_matches(ENV_RE, "an environment variable name")),
    )
    entra_token_file: str | None = None

    __attrs_post_init__ = _check_fields

    def deployment(self, model: str) -> str:
        return self.deployments.get(model, model)


REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


@attrs.frozen
class BedrockSettings:
    """Where a `bedrock` backend is: the AWS region its requests are signed for."""

    # The region of the Bedrock runtime endpoint, e.g. us-east-1.
    region: str = _checked(validator=_matches(REGION_RE, "an AWS region such as us-east-1"))

    __attrs_post_init__ = _check_fields


PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
LOCATION_RE = re.compile(r"^([a-z]+-[a-z]+[0-9]+|global|us|eu)$")


@attrs.frozen
class VertexSettings:
    """Where a `vertex` backend is, whose models it serves, and its service account."""

    # The Google Cloud project and location (region) of the endpoint.
    project: str = _checked(validator=_matches(PROJECT_RE, "a Google Cloud project id"))
    location: str = _checked(validator=_matches(LOCATION_RE, "a location such as us-east5"))
    # google: Gemini models (generateContent); anthropic: Claude (Messages).
    publisher: VertexPublisher = _checked(
        default=VertexPublisher.GOOGLE, validator=_one_of(VertexPublisher)
    )
    # The service account's JSON key file; unset, GOOGLE_APPLICATION_CREDENTIALS
    # names it. OAuth tokens are minted from it and refreshed before they expire.
    credentials_file: str | None = None

    __attrs_post_init__ = _check_fields


def _optional_url(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        _url(instance, attribute, value)


@attrs.frozen
class LoadMetricsSettings:
    """Where and how often to read a self-hosted server's own load (its
    Prometheus metrics), for `least_load` and affinity."""

    # Whose metrics: vllm (vllm:num_requests_running, vllm:num_requests_waiting,
    # vllm:kv_cache_usage_perc or the older vllm:gpu_cache_usage_perc), sglang
    # (sglang:num_running_reqs, sglang:num_queue_reqs, sglang:token_usage) or
    # tgi (tgi_batch_current_size, tgi_queue_size).
    format: LoadMetricsFormat = _checked(validator=_one_of(LoadMetricsFormat))
    # The metrics page; unset: the origin of `base_url` with /metrics. No
    # credential is sent with it.
    url: str | None = _checked(default=None, validator=_optional_url)
    # Seconds between two reads of the page.
    interval_s: float = _checked(default=1.0, validator=_positive)
    # A reading older than this is not used: routing goes by the router's own counts.
    stale_after_s: float = _checked(default=5.0, validator=_positive)
    # A read taking longer is abandoned (and counted as failed).
    timeout_s: float = _checked(default=0.5, validator=_positive)
    # A page larger than this is refused (and counted as failed).
    max_bytes: int = _checked(default=1_048_576, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Backend:
    """A model server: where it is, its credential, its timeouts and capacity."""

    # The backend's base URL. `openai`: its OpenAI-compatible base (the router
    # appends /chat/completions, ...), usually ending in /v1. `anthropic`:
    # https://api.anthropic.com/v1 (the router appends /messages). `gemini`:
    # https://generativelanguage.googleapis.com/v1beta (the router appends
    # /models/MODEL:generateContent). `bedrock`: the runtime endpoint,
    # https://bedrock-runtime.REGION.amazonaws.com (the router appends
    # /model/MODEL/converse; requests are SigV4-signed with the credentials
    # of the standard AWS chain, never `api_key_env`).
    # `azure_openai`: the resource endpoint, https://RESOURCE.openai.azure.com
    # (the router appends /openai/deployments/DEPLOYMENT/...).
    base_url: str = _checked(validator=_url)
    # What the backend is: how it is addressed and authenticated.
    kind: BackendKind = _checked(default=BackendKind.OPENAI, validator=_one_of(BackendKind))
    # Required for kind `azure_openai`, and only there.
    azure: AzureSettings | None = None
    # Required for kind `bedrock`, and only there.
    bedrock: BedrockSettings | None = None
    # Required for kind `vertex`, and only there.
    vertex: VertexSettings | None = None
    # Name of the environment variable that holds this backend's credential;
    # the credential itself never appears in the config file. Sent as a
    # bearer token (`openai`), as `x-api-key` (`anthropic`), as
    # `x-goog-api-key` (`gemini`) or as the `api-key` header (`azure_openai`).
    api_key_env: str | None = _checked(
        default=None,
        validator=attrs.validators.optional(_matches(ENV_RE, "an environment variable name")),
    )
    # Limits on connecting, and on each read of the answer (a stream's gap between chunks).
    connect_timeout_s: float = _checked(default=5.0, validator=_positive)
    read_timeout_s: float = _checked(default=60.0, validator=_positive)
    # Requests this backend serves at once; past it, routing picks another or waits.
    max_in_flight: int = _checked(default=256, validator=_positive)
    # Tokens it works on at once (each request in flight counts its prompt
    # bound plus its most output): `least_load` and affinity count a backend
    # this full as loaded as one at `max_in_flight`. Unset: requests only.
    max_outstanding_tokens: int | None = _checked(default=None, validator=_optional_positive)
    # Read the server's own load from its metrics page (self-hosted vLLM,
    # SGLang or TGI); the load it reports counts with the router's own counts.
    load_metrics: LoadMetricsSettings | None = None
    # The protocols it speaks natively; by default its kind's (`openai` and
    # `azure_openai`: openai; `anthropic`: anthropic_messages; `gemini`:
    # gemini, which no client speaks, so everything is translated). A request in
    # another protocol is translated for it: Messages and Responses to chat
    # for an `openai` speaker, chat and Responses to Messages for an
    # `anthropic_messages` speaker.
    protocols: tuple[Protocol, ...] | None = _checked(default=None, validator=_protocols)
    # `anthropic`: the `anthropic-version` header sent when the client sent none.
    anthropic_version: str = "2023-06-01"

    __attrs_post_init__ = _check_fields

    @property
    def speaks(self) -> tuple[Protocol, ...]:
        if self.protocols is not None:
            return self.protocols
        if self.kind is BackendKind.ANTHROPIC:
            return (Protocol.ANTHROPIC_MESSAGES,)
        if self.kind is BackendKind.GEMINI:
            return (Protocol.GEMINI,)
        if self.kind is BackendKind.BEDROCK:
            return (Protocol.BEDROCK,)
        if self.kind is BackendKind.VERTEX and self.vertex is not None:
            if self.vertex.publisher is VertexPublisher.ANTHROPIC:
                return (Protocol.ANTHROPIC_MESSAGES,)
            return (Protocol.GEMINI,)
        return (Protocol.OPENAI,)


@attrs.frozen
class ModelTarget:
    """One backend of a model, with its weight and tier."""

    # A name from `backends`.
    backend: str = _checked(validator=_matches(NAME_RE, "a backend name"))
    # The model name the backend knows; defaults to the public name.
    model: str | None = None
    # Share of traffic among the candidates of one tier.
    weight: float = _checked(default=1.0, validator=_positive)
    # Priority tier: 0 is primary; tier 1 is tried only when every tier-0
    # backend is unavailable or has failed, and so on.
    tier: int = _checked(default=0, validator=_non_negative)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class RouteRule:
    """Backends for some organizations or keys, instead of the model's default list."""

    # The backends for callers this rule matches.
    backends: tuple[ModelTarget, ...] = _checked(validator=_non_empty)
    # Organizations and API key ids the rule applies to.
    organizations: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    __attrs_post_init__ = _check_fields

    def matches(self, organization: str, key_id: str | None) -> bool:
        return organization in self.organizations or (key_id is not None and key_id in self.keys)


@attrs.frozen
class AffinitySettings:
    """Prefix affinity: prompts that share a prefix go to the backend that
    likely holds it in its KV cache, within a load bound."""

    # The prompt is hashed in blocks of this many characters (of its
    # canonical JSON text); a prompt shorter than one block has no affinity.
    block_chars: int = _checked(default=512, validator=_positive)
    # Only the first this many blocks are hashed: the prefixes worth keeping together.
    max_blocks: int = _checked(default=64, validator=_positive)
    # The home backend keeps a request while its load is at most this many
    # times the mean load of the candidates (plus one request); past it the
    # request spills to the next backend of the prefix. Must exceed 1.
    load_factor: float = _checked(default=1.25, validator=_above_one)
    # A request carrying this header pins to a backend by the header's value
    # (a session), before any prompt prefix counts. Empty: no session header.
    session_header: str = _checked(default="x-session-id", validator=_header_name)
    # How many recent blocks each router process remembers the backend of.
    index_blocks: int = _checked(default=100_000, validator=_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class Model:
    """A public model name: its backends, how to choose among them, per-caller routes."""

    # The backends serving this public model name.
    backends: tuple[ModelTarget, ...] = _checked(validator=_non_empty)
    # weighted: random by weight; least_latency: of two weighted picks, the
    # one with the lower latency average (power of two choices); least_load:
    # of two weighted picks, the less loaded (in flight and outstanding tokens
    # against the backend's capacity, or its reported metrics), full ones last.
    strategy: Strategy = _checked(default=Strategy.WEIGHTED, validator=_one_of(Strategy))
    # Prefix affinity (for self-hosted servers with a prefix cache). Off unless set.
    affinity: AffinitySettings | None = None
    # The first rule matching the caller's organization or key replaces `backends`.
    routes: tuple[RouteRule, ...] = ()
    # Non-streamed requests only: if the first backend has not answered after
    # this long, send the request to the next candidate too and keep the first
    # answer. Off unless set.
    hedge_after_ms: int | None = _checked(default=None, validator=_optional_positive)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class ModelPrice:
    """USD per million tokens."""

    # USD per million prompt tokens, and per million completion tokens.
    input: Decimal = _checked(validator=_per_million)
    output: Decimal = _checked(default=Decimal(0), validator=_per_million)
    # USD per million prompt tokens read from, and written to, the provider's
    # prompt cache (as its usage reports them); unset, they cost `input`.
    cache_read: Decimal | None = _checked(default=None, validator=_optional_per_million)
    cache_write: Decimal | None = _checked(default=None, validator=_optional_per_million)

    __attrs_post_init__ = _check_fields


@attrs.frozen
class PricingSettings:
    """Where a public model's price comes from when `prices` does not name it."""

    # Use the price table shipped with the router (router_core.price_table:
    # Anthropic's Claude API models, with the page and date each was read)
    # for a model whose backends all send to a model id in it; when they send
    # to several, the highest rate per field. `prices` always wins. false:
    # only `prices` counts, so a budget needs a price there for every model.
    shipped: bool = True
