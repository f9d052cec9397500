"""The router's configuration as frozen value objects.

Rules:
- Every class is immutable and validates its own fields at construction, so
  a `RouterConfig` that exists is a config the router can run.
- Each field's checks live in its metadata (`_checked`); construction runs
  all of them and raises one group of `FieldError`s, so a file with three
  mistakes in one object reports all three. The codec turns each into a path
  such as `models.gpt-4o.backends[1].weight: must be > 0`.
- Settings with a fixed set of values are `config_enums` StrEnums, so a
  typo is refused by the converter, never read as some default.
- Cross-references (a model naming a backend, key ids unique across
  organizations) are checked by `config_codec.check_references`, because they
  span objects.
- No serialization here; `config_codec` converts to and from plain data.

One module per part of the file: `fields` (how fields are checked),
`service`, `models`, `limits`, `usage`, `tenants`, `state`; this module holds
the whole (`RouterConfig`) and names every part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from router_core.config.fields import (
    ENV_RE,
    KEY_HASH_RE,
    KEY_ID_RE,
    NAME_RE,
    TOPIC_RE,
    FieldError,
    _check_fields,
    _checked,
    _non_empty,
)
from router_core.config.limits import (
    PERIOD_US,
    Budget,
    FailurePolicy,
    Limits,
    LimitSettings,
    Quotas,
    RateLimit,
)
from router_core.config.models import (
    AffinitySettings,
    AzureSettings,
    Backend,
    BedrockSettings,
    LoadMetricsSettings,
    Model,
    ModelPrice,
    ModelTarget,
    PricingSettings,
    RouteRule,
    VertexSettings,
)
from router_core.config.service import (
    AdminListener,
    AdmissionSettings,
    HealthSettings,
    Listener,
    Listeners,
    ObservabilitySettings,
    RoutingSettings,
    ServerSettings,
)
from router_core.config.state import RedisSettings, StateSettings
from router_core.config.tenants import ApiKey, AuthSettings, OidcIssuer, Organization
from router_core.config.usage import (
    DAY_S,
    IdempotencySettings,
    KafkaSettings,
    ResponsesSettings,
    SpoolSettings,
    UsageSettings,
)

__all__ = [
    "CONFIG_VERSION",
    "DAY_S",
    "ENV_RE",
    "KEY_HASH_RE",
    "KEY_ID_RE",
    "NAME_RE",
    "PERIOD_US",
    "TOPIC_RE",
    "AdminListener",
    "AdmissionSettings",
    "AffinitySettings",
    "ApiKey",
    "AuthSettings",
    "AzureSettings",
    "Backend",
    "BedrockSettings",
    "Budget",
    "FailurePolicy",
    "FieldError",
    "HealthSettings",
    "IdempotencySettings",
    "KafkaSettings",
    "LimitSettings",
    "Limits",
    "Listener",
    "Listeners",
    "LoadMetricsSettings",
    "Model",
    "ModelPrice",
    "ModelTarget",
    "ObservabilitySettings",
    "OidcIssuer",
    "Organization",
    "PricingSettings",
    "Quotas",
    "RateLimit",
    "RedisSettings",
    "ResponsesSettings",
    "RouteRule",
    "RouterConfig",
    "RoutingSettings",
    "ServerSettings",
    "SpoolSettings",
    "StateSettings",
    "UsageSettings",
    "VertexSettings",
]

# The file format this router reads; a newer file may mean settings it does not know.
CONFIG_VERSION = 1


def _version(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value != CONFIG_VERSION:
        raise FieldError(
            attribute.name,
            f"{value!r} is not supported; this router reads version {CONFIG_VERSION} "
            f"(write version: {CONFIG_VERSION}, or run a router that reads version {value!r})",
        )


@attrs.frozen
class RouterConfig:
    """The whole config file."""

    # Model servers, by name.
    backends: Mapping[str, Backend] = _checked(validator=_non_empty)
    # Public model names clients ask for, and where they go.
    models: Mapping[str, Model] = _checked(validator=_non_empty)
    # Tenants, by name: their keys, models and limits.
    organizations: Mapping[str, Organization] = attrs.field(factory=dict)
    listeners: Listeners = Listeners()
    server: ServerSettings = ServerSettings()
    health: HealthSettings = HealthSettings()
    # Where limits, keys, overrides, idempotency keys and usage are kept.
    state: StateSettings = StateSettings()
    limits: LimitSettings = LimitSettings()
    routing: RoutingSettings = RoutingSettings()
    # USD per million tokens, by public model name; needed where a budget applies,
    # unless the shipped table prices the model (see `pricing`).
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    # Whether the shipped price table fills in models `prices` does not name.
    pricing: PricingSettings = PricingSettings()
    usage: UsageSettings = UsageSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    # Stored OpenAI Responses (previous_response_id, GET /v1/responses/{id}).
    responses: ResponsesSettings = ResponsesSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    auth: AuthSettings = AuthSettings()
    # The file format's version.
    version: int = _checked(default=CONFIG_VERSION, validator=_version)

    __attrs_post_init__ = _check_fields
