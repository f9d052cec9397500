"""Prices the router ships for common hosted models, and how a public model gets one.

Rules:
- Only a price read on the provider's own pricing page is shipped, with that
  page's URL and the date it was read; a smaller honest table beats a big
  guessed one. Entries are keyed by (backend kind, the model id a route sends
  upstream), because the same id can cost differently at another provider.
- `prices.<public model>` in the config always wins. A public model with no
  configured price takes the shipped price of the upstream model ids its
  routes (its `backends` and every `routes[].backends`) send to; when they
  differ, the highest per field, so a budget never overshoots whichever
  backend serves. If any of its targets has no shipped price, the model gets
  none: a price is never guessed for a backend the table does not know.
- `pricing.shipped: false` turns the table off.
- This is resolved once, when the config is decoded (`config_codec.structure`
  fills `RouterConfig.prices`); limits, usage records and the simulator read
  `config.prices` as before. A record is charged the public model's resolved
  price, not the serving backend's own (the same rule as the reservation).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal

import attrs

from router_core.config import ModelPrice, ModelTarget, RouterConfig
from router_core.config_enums import BackendKind


@attrs.frozen
class ShippedPrice:
    """One provider's price for one of its model ids, with where and when it was read."""

    provider: BackendKind
    model: str
    price: ModelPrice
    source: str
    # ISO date the price was read on `source` (the stored copy's date was not known).
    taken: str


# Anthropic's own pricing page (the Claude API; Bedrock and Vertex AI price
# Claude on their own pages, which are not shipped). The table lists a 5-minute
# and a 1-hour cache write; `cache_write` is the 5-minute rate, the default
# TTL. Model ids from Anthropic's models overview and model pages.
# The copy read was the page's zh-CN edition (its table is in English).
_ANTHROPIC = "https://platform.claude.com/docs/zh-CN/about-claude/pricing"
_ANTHROPIC_TAKEN = "2026-12-07"


def _usd(input_: str, cache_write: str, cache_read: str, output: str) -> ModelPrice:
    return ModelPrice(
        input=Decimal(input_),
        output=Decimal(output),
        cache_read=Decimal(cache_read),
        cache_write=Decimal(cache_write),
    )


_ANTHROPIC_PRICES: tuple[tuple[tuple[str, ...], ModelPrice], ...] = (
    # ids (dated id first, then its alias): input, 5m cache write, cache hit, output
    (("claude-opus-4-6",), _usd("5", "6.25", "0.50", "25")),
    (("claude-opus-4-5-20251101", "claude-opus-4-5"), _usd("5", "6.25", "0.50", "25")),
    (("claude-opus-4-1-20250805", "claude-opus-4-1"), _usd("15", "18.75", "1.50", "75")),
    (("claude-sonnet-4-6",), _usd("3", "3.75", "0.30", "15")),
    (("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"), _usd("3", "3.75", "0.30", "15")),
    (("claude-haiku-4-5-20251001", "claude-haiku-4-5"), _usd("1", "1.25", "0.10", "5")),
    (("claude-3-5-haiku-20241022",), _usd("0.80", "1", "0.08", "4")),
    (("claude-3-haiku-20240307",), _usd("0.25", "0.30", "0.03", "1.25")),
)

SHIPPED: tuple[ShippedPrice, ...] = tuple(
    ShippedPrice(BackendKind.ANTHROPIC, model, price, _ANTHROPIC, _ANTHROPIC_TAKEN)
    for models, price in _ANTHROPIC_PRICES
    for model in models
)

BY_ID: Mapping[tuple[BackendKind, str], ShippedPrice] = {
    (entry.provider, entry.model): entry for entry in SHIPPED
}


@attrs.frozen
class PriceChoice:
    """The price a public model is charged, and where it came from."""

    price: ModelPrice | None
    # configured: `prices.<model>`; shipped: the table (`entries`); none: no price.
    source: str
    entries: tuple[ShippedPrice, ...] = ()
    # Upstream ids of the model's targets that have no shipped price.
    unknown: tuple[str, ...] = ()


def _targets(config: RouterConfig, model_name: str) -> list[ModelTarget]:
    model = config.models[model_name]
    return [*model.backends, *(t for route in model.routes for t in route.backends)]


def upstream_ids(config: RouterConfig, model_name: str) -> list[tuple[BackendKind | None, str]]:
    """(backend kind, model id sent upstream) of every target of `model_name`, in order,
    once each; the kind is None for a target naming an unknown backend."""
    seen: dict[tuple[BackendKind | None, str], None] = {}
    for target in _targets(config, model_name):
        backend = config.backends.get(target.backend)
        kind = backend.kind if backend is not None else None
        seen[(kind, target.model or model_name)] = None
    return list(seen)


def _highest(prices: Collection[ModelPrice]) -> ModelPrice:
    """Per field, the highest of `prices`; an unset cache rate counts as `input`."""

    def top(field: str) -> Decimal:
        return max(value if (value := getattr(p, field)) is not None else p.input for p in prices)

    return ModelPrice(
        input=max(p.input for p in prices),
        output=max(p.output for p in prices),
        cache_read=top("cache_read"),
        cache_write=top("cache_write"),
    )


def shipped_choice(config: RouterConfig, model_name: str) -> PriceChoice:
    """What the shipped table alone gives `model_name` (configured prices aside)."""
    if not config.pricing.shipped:
        return PriceChoice(None, "none")
    entries: list[ShippedPrice] = []
    unknown: list[str] = []
    for kind, model_id in upstream_ids(config, model_name):
        entry = BY_ID.get((kind, model_id)) if kind is not None else None
        if entry is None:
            unknown.append(model_id)
        else:
            entries.append(entry)
    if unknown or not entries:
        return PriceChoice(None, "none", unknown=tuple(unknown))
    return PriceChoice(_highest([e.price for e in entries]), "shipped", tuple(entries))


def price_choices(
    config: RouterConfig, configured: Collection[str] | None = None
) -> dict[str, PriceChoice]:
    """The price of every public model and its source. `configured`: the models
    the file prices itself (default: every key of `config.prices`)."""
    configured = config.prices.keys() if configured is None else configured
    choices: dict[str, PriceChoice] = {}
    for name in config.models:
        price = config.prices.get(name)
        if name in configured and price is not None:
            choices[name] = PriceChoice(price, "configured")
        else:
            choices[name] = shipped_choice(config, name)
    return choices


def with_shipped_prices(config: RouterConfig) -> RouterConfig:
    """`config` with the shipped price filled in for every model it does not price."""
    filled = {
        name: choice.price
        for name, choice in price_choices(config).items()
        if choice.source == "shipped" and choice.price is not None
    }
    if not filled:
        return config
    return attrs.evolve(config, prices={**filled, **config.prices})
