"""Prices the router ships for common hosted models, and how a public model gets one.

Rules:
- Only a price read on the provider's own pages (its pricing page, or the
  model's own page) is shipped, with that page's URL and the date it was read;
  a smaller honest table beats a big guessed one. A retired model is not
  shipped, nor one whose price ModelPrice cannot express. Entries are
  keyed by (backend kind, the model id a route sends upstream), because the
  same id can cost differently at another provider.
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


# Anthropic, for `kind: anthropic` backends (the Claude API; Bedrock and Vertex
# AI price Claude on their own pages, which are not shipped). Each group below
# is one page the rates were read on; a model's ids are from its own model
# page (".md" edition: "Model ID: `...`") or its migration guide, named in the
# comment. Anthropic's tables list a 5-minute and a 1-hour cache write;
# `cache_write` is the 5-minute rate, the default TTL, so a workload writing
# 1-hour caches should set `prices`. The date is the day each page was read in
# the stored copies the search tool holds (the copies' own dates are unknown).
# Where copies disagree, the one listing the newest lineup wins (said per entry).
#
# Read and left out, with why:
# - claude-opus-4-1-20250805 / claude-opus-4-1: the pricing page lists "Claude
#   Opus 4.1 (retired, except on Bedrock and Google Cloud)"; retired on the
#   Claude API, so not shipped.
# - claude-sonnet-4-5-20250929 / claude-sonnet-4-5: its model page says "retires
#   on November 30, 2026"; retired by the date read.
# - claude-3-5-haiku-20241022, claude-3-haiku-20240307: no Anthropic page read
#   still lists them as available (third-party notes say Haiku 3.5 retired on
#   2026-02-19); not shipped until a page says they are.
# - Claude Haiku 5.5 (claude-haiku-5-5): priced by prompt length ("From $0.10 /
#   input MTok" on the models overview); one rate per field cannot say that.
# - Claude Fable 5.2 (claude-fable-5-2): the lineup tables give $8 / $40, but no
#   Anthropic page read gave its cache rates; a half-known price is not shipped.
# - Claude Mythos 5 / 5.1 / 5.2: limited availability (by invitation).
_TAKEN = "2026-12-07"

# The pricing page, English edition; the copy read lists Claude Fable 5.1 first
# and no Opus 5.5. Row: base input, 5m cache write, 1h, cache hit, output.
_PRICING = "https://platform.claude.com/docs/en/about-claude/pricing"
# The pricing page's zh-CN edition (its table is in English), an older copy:
# the source of the rates shipped before for models the copy above cut off.
_PRICING_ZH = "https://platform.claude.com/docs/zh-CN/about-claude/pricing"
# Model pages (rendered zh-CN editions; their spec table is in English).
_OPUS_5_5 = "https://platform.claude.com/docs/zh-CN/models/opus-5-5/overview"
_SONNET_5 = "https://platform.claude.com/docs/zh-CN/models/sonnet-5/overview"
# The Sonnet 5.5 migration guide (pt-BR .md edition).
_SONNET_5_5 = "https://platform.claude.com/docs/pt-BR/models/sonnet-5-5/migration-guide"


def _usd(input_: str, cache_write: str, cache_read: str, output: str) -> ModelPrice:
    return ModelPrice(
        input=Decimal(input_),
        output=Decimal(output),
        cache_read=Decimal(cache_read),
        cache_write=Decimal(cache_write),
    )


# (source page, ((ids: dated id first, then its alias), price)), the price as
# input, 5m cache write, cache hit, output.
_ANTHROPIC_PRICES: tuple[tuple[str, tuple[tuple[tuple[str, ...], ModelPrice], ...]], ...] = (
    (
        _OPUS_5_5,
        (
            # Id: opus-5-5/migration-guide ("Use claude-opus-5-5, a fixed model
            # ID with no date suffix"). Page: "$4 / MTok", "$20 / MTok", 5m "$5",
            # 1h "$8", cache read "$0.20" (0.05x input, not the usual 0.1x).
            (("claude-opus-5-5",), _usd("4", "5", "0.20", "20")),
        ),
    ),
    (
        _SONNET_5_5,
        (
            # Id: the guide's "/claude-api migrate ... claude-sonnet-5-5". It says
            # Sonnet 5.5 costs what Sonnet 5 does except cache reads, "$0,10 USD
            # por milhão de tokens". The zh-CN Sonnet 5.5 page read gives $0.20,
            # but its lineup still shows Haiku 4.5 as current: an older copy.
            (("claude-sonnet-5-5",), _usd("2", "2.50", "0.10", "10")),
        ),
    ),
    (
        _SONNET_5,
        (
            # Id: sonnet-5/overview.md ("Model ID: `claude-sonnet-5`"). Page: "$2",
            # "$10", 5m "$2.50", 1h "$4", cache read "$0.20".
            (("claude-sonnet-5",), _usd("2", "2.50", "0.20", "10")),
        ),
    ),
    (
        _PRICING,
        (
            # "Claude Fable 5.1 | $10 | $12.50 | $20 | $0.25 (note 1) | $50"; id:
            # fable-5-1/overview.md ("Model ID: `claude-fable-5-1`").
            (("claude-fable-5-1",), _usd("10", "12.50", "0.25", "50")),
            # "Claude Fable 5 | $10 | $12.50 | $20 | $1 | $50"; id: fable-5/overview.md.
            (("claude-fable-5",), _usd("10", "12.50", "1", "50")),
            # "Claude Opus 5 | $5 | $6.25 | $10 | $0.50 | $25" (the same on the
            # zh-CN Opus 5 page); id: opus-5/overview.md.
            (("claude-opus-5",), _usd("5", "6.25", "0.50", "25")),
            # Opus 4.8, 4.7, 4.6, 4.5: "$5 | $6.25 | $10 | $0.50 | $25" each.
            # Ids: opus-4-8/overview.md, opus-4-6/overview.md; Opus 4.7's from
            # the pt-BR migrating-to-claude-4 page ("migrate this project to
            # claude-opus-4-7"); Opus 4.5's dated id from opus-4-5/overview.md and
            # its alias from the ja migrating-to-claude-4 page (`model =
            # "claude-opus-4-5"`). Opus 4.5 is still available (legacy) on the
            # page read; third-party notes say it is now deprecated.
            (("claude-opus-4-8",), _usd("5", "6.25", "0.50", "25")),
            (("claude-opus-4-7",), _usd("5", "6.25", "0.50", "25")),
            (("claude-opus-4-6",), _usd("5", "6.25", "0.50", "25")),
            (("claude-opus-4-5-20251101", "claude-opus-4-5"), _usd("5", "6.25", "0.50", "25")),
        ),
    ),
    (
        _PRICING_ZH,
        (
            # Legacy, still available. Ids: sonnet-4-6/overview.md ("Model ID:
            # `claude-sonnet-4-6`"), haiku-4-5/overview.md ("Model ID:
            # `claude-haiku-4-5-20251001`"; the alias from the older zh-CN models
            # overview's "Claude API 别名" row). The cache rates are the ones
            # first read on this copy and not found again in the newer one (its
            # rows were cut off); input and output match the model pages read
            # now ("$3 / MTok", "$15 / MTok"; "$1 / MTok", "$5 / MTok").
            (("claude-sonnet-4-6",), _usd("3", "3.75", "0.30", "15")),
            (("claude-haiku-4-5-20251001", "claude-haiku-4-5"), _usd("1", "1.25", "0.10", "5")),
        ),
    ),
)

SHIPPED: tuple[ShippedPrice, ...] = tuple(
    ShippedPrice(BackendKind.ANTHROPIC, model, price, source, _TAKEN)
    for source, group in _ANTHROPIC_PRICES
    for models, price in group
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
