"""The shipped price table, and how a public model gets its price from it."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router_core.config import ModelPrice
from router_core.config_codec import ConfigInvalid, structure, unstructure
from router_core.config_enums import BackendKind
from router_core.price_table import BY_ID, SHIPPED, _highest, price_choices, upstream_ids

OPUS_45 = "claude-opus-4-5-20251101"
HAIKU_45 = "claude-haiku-4-5"
FABLE_51 = "claude-fable-5-1"
# The newest ids, each read on Anthropic's own pages: input, 5m cache write,
# cache hit, output (USD per million tokens).
NEWEST = {
    "claude-opus-5-5": ("4", "5", "0.20", "20"),
    "claude-sonnet-5-5": ("2", "2.50", "0.10", "10"),
    FABLE_51: ("10", "12.50", "0.25", "50"),
    "claude-opus-5": ("5", "6.25", "0.50", "25"),
    "claude-sonnet-5": ("2", "2.50", "0.20", "10"),
}


def config(**models: Any) -> dict[str, Any]:
    return {
        "backends": {
            "claude": {
                "base_url": "https://api.anthropic.com/v1",
                "kind": "anthropic",
                "api_key_env": "ANTHROPIC_API_KEY",
            },
            "local": {"base_url": "http://127.0.0.1:8000/v1"},
        },
        "models": models or {"opus": {"backends": [{"backend": "claude", "model": OPUS_45}]}},
    }


def on(backend: str, model: str | None = None, **target: Any) -> dict[str, Any]:
    return {"backend": backend, **({"model": model} if model else {}), **target}


def budgeted(data: dict[str, Any], models: list[str]) -> dict[str, Any]:
    return {
        **data,
        "organizations": {"acme": {"models": models, "limits": {"budget": {"per_day": 10}}}},
    }


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as caught:
        structure(data)
    return {p.path: p.message for p in caught.value.problems}


def test_every_entry_is_a_valid_price_with_its_source_and_date() -> None:
    assert len(SHIPPED) >= 8
    assert len(BY_ID) == len(SHIPPED)  # no id twice for one provider
    for entry in SHIPPED:
        # Validated again as the config would (Decimal, >= 0, representable).
        again = ModelPrice(
            input=entry.price.input,
            output=entry.price.output,
            cache_read=entry.price.cache_read,
            cache_write=entry.price.cache_write,
        )
        assert again == entry.price
        assert entry.price.cache_read is not None
        assert entry.price.cache_write is not None
        assert entry.price.cache_read < entry.price.input < entry.price.cache_write
        assert entry.price.output > entry.price.input
        assert entry.source.startswith("https://")
        assert datetime.date.fromisoformat(entry.taken) <= datetime.date(2026, 12, 7)
        assert entry.model
        assert entry.model == entry.model.strip()


def test_anthropics_published_rates() -> None:
    # Input, 5-minute cache write, cache hit, output, as the page lists them.
    opus = BY_ID[(BackendKind.ANTHROPIC, OPUS_45)].price
    assert (opus.input, opus.cache_write, opus.cache_read, opus.output) == tuple(
        map(Decimal, ("5", "6.25", "0.50", "25"))
    )
    # Opus 5.5's cache hit is 0.05x input, Fable 5.1's 0.025x: read, not derived.
    for model, rates in NEWEST.items():
        price = BY_ID[(BackendKind.ANTHROPIC, model)].price
        got = (price.input, price.cache_write, price.cache_read, price.output)
        assert got == tuple(map(Decimal, rates)), model
    # An alias costs what its dated id does.
    assert BY_ID[(BackendKind.ANTHROPIC, "claude-opus-4-5")].price == opus


def test_the_newest_models_resolve_for_an_anthropic_route() -> None:
    # One public model per newest id, each routed to the `anthropic` backend.
    models = {f"m{i}": {"backends": [on("claude", model)]} for i, model in enumerate(NEWEST)}
    loaded = structure(config(**models))
    choices = price_choices(loaded, configured=())
    for i, (model, rates) in enumerate(NEWEST.items()):
        choice = choices[f"m{i}"]
        assert choice.source == "shipped", model
        assert [(e.provider, e.model) for e in choice.entries] == [(BackendKind.ANTHROPIC, model)]
        assert choice.price == ModelPrice(
            input=Decimal(rates[0]),
            cache_write=Decimal(rates[1]),
            cache_read=Decimal(rates[2]),
            output=Decimal(rates[3]),
        )
        assert loaded.prices[f"m{i}"] == choice.price
        assert choice.entries[0].source.startswith("https://platform.claude.com/docs/")


def test_opus_and_sonnet_5_5_together_take_the_dearer_rate_per_field() -> None:
    # Sonnet 5.5's cache hit is cheaper than Opus 5.5's, and so is the rest:
    # the highest per field is Opus 5.5's price.
    data = config(
        mixed={"backends": [on("claude", "claude-sonnet-5-5"), on("claude", "claude-opus-5-5")]}
    )
    loaded = structure(data)
    assert loaded.prices["mixed"] == BY_ID[(BackendKind.ANTHROPIC, "claude-opus-5-5")].price


@pytest.mark.parametrize(
    "model",
    [
        # Retired on the Claude API (Anthropic's pricing page; Sonnet 4.5's own
        # page gives November 30, 2026), or not confirmed available.
        "claude-opus-4-1-20250805",
        "claude-opus-4-1",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
        # Priced by prompt length, or with cache rates not read on Anthropic's pages.
        "claude-haiku-5-5",
        "claude-fable-5-2",
    ],
)
def test_a_dropped_or_left_out_id_is_not_priced(model: str) -> None:
    assert (BackendKind.ANTHROPIC, model) not in BY_ID
    data = budgeted(config(old={"backends": [on("claude", model)]}), ["old"])
    assert problems(data) == {
        "prices.old": "required: organizations.acme has a budget that covers this model "
        f"(the shipped price table has no price for '{model}')"
    }


def test_a_model_routed_to_a_known_id_gets_its_shipped_price() -> None:
    loaded = structure(config())
    assert loaded.prices["opus"] == BY_ID[(BackendKind.ANTHROPIC, OPUS_45)].price
    choice = price_choices(loaded, configured=())["opus"]
    assert choice.source == "shipped"
    assert [e.model for e in choice.entries] == [OPUS_45]


def test_the_public_name_is_the_upstream_id_when_a_target_names_none() -> None:
    loaded = structure(config(**{FABLE_51: {"backends": [on("claude")]}}))
    assert loaded.prices[FABLE_51].output == Decimal(50)


def test_a_configured_price_wins() -> None:
    data = {**config(), "prices": {"opus": {"input": 1, "output": 2}}}
    loaded = structure(data)
    assert loaded.prices["opus"] == ModelPrice(input=Decimal(1), output=Decimal(2))
    assert price_choices(loaded)["opus"].source == "configured"


def test_several_ids_take_the_highest_rate_per_field() -> None:
    data = config(
        mixed={
            "backends": [on("claude", HAIKU_45)],
            "routes": [{"organizations": ["acme"], "backends": [on("claude", FABLE_51)]}],
        }
    )
    data["organizations"] = {"acme": {"models": ["*"]}}
    loaded = structure(data)
    fable = BY_ID[(BackendKind.ANTHROPIC, FABLE_51)].price
    assert loaded.prices["mixed"] == fable
    choice = price_choices(loaded, configured=())["mixed"]
    assert sorted(e.model for e in choice.entries) == sorted([HAIKU_45, FABLE_51])


def test_a_target_the_table_does_not_know_leaves_the_model_unpriced() -> None:
    data = config(
        fallback={"backends": [on("claude", OPUS_45), on("local", "llama-3-70b", tier=1)]},
        local={"backends": [on("local", "llama-3-70b")]},
    )
    loaded = structure(data)
    assert "fallback" not in loaded.prices
    assert "local" not in loaded.prices
    assert price_choices(loaded)["fallback"].unknown == ("llama-3-70b",)


def test_the_id_is_priced_only_at_its_own_provider() -> None:
    # The same id sent to an OpenAI-compatible server is not Anthropic's price.
    loaded = structure(config(other={"backends": [on("local", OPUS_45)]}))
    assert "other" not in loaded.prices
    assert upstream_ids(loaded, "other") == [(BackendKind.OPENAI, OPUS_45)]


def test_the_opt_out_removes_shipped_prices() -> None:
    loaded = structure({**config(), "pricing": {"shipped": False}})
    assert dict(loaded.prices) == {}
    assert price_choices(loaded)["opus"].source == "none"


def test_the_opt_out_is_validated() -> None:
    assert problems({**config(), "pricing": {"shipped": "no"}}) == {
        "pricing.shipped": "must be true or false, not str"
    }
    assert problems({**config(), "pricing": {"ship": True}}) == {"pricing.ship": "unknown field"}


def test_a_budget_with_only_a_shipped_price_is_accepted() -> None:
    loaded = structure(budgeted(config(), ["opus"]))
    assert loaded.organizations["acme"].limits.budget.per_day == Decimal(10)


def test_a_budget_with_the_opt_out_needs_a_configured_price() -> None:
    data = {**budgeted(config(), ["opus"]), "pricing": {"shipped": False}}
    assert problems(data) == {
        "prices.opus": "required: organizations.acme has a budget that covers this model "
        "(pricing.shipped is false, so only prices count)"
    }
    # A configured price is enough again.
    structure({**data, "prices": {"opus": {"input": 5, "output": 25}}})


def test_a_budget_on_an_unknown_id_names_it() -> None:
    data = budgeted(config(local={"backends": [on("local", "llama-3-70b")]}), ["local"])
    assert problems(data) == {
        "prices.local": "required: organizations.acme has a budget that covers this model "
        "(the shipped price table has no price for 'llama-3-70b')"
    }


def test_a_shipped_price_still_counts_when_another_part_of_the_file_is_bad() -> None:
    # A bad value elsewhere is cut and the checks run on the rest: the budget
    # check must still see the shipped price, not report a missing one.
    data = budgeted(config(), ["opus"])
    data["server"] = {"request_timeout_s": -1}
    assert list(problems(data)) == ["server.request_timeout_s"]


def test_the_filled_config_round_trips() -> None:
    loaded = structure(config())
    assert structure(unstructure(loaded)) == loaded


def test_the_highest_is_taken_field_by_field() -> None:
    dear_output = ModelPrice(input=Decimal(1), output=Decimal(30), cache_read=Decimal("0.1"))
    dear_input = ModelPrice(input=Decimal(4), output=Decimal(8), cache_write=Decimal(5))
    # An unset cache rate costs `input`, so it counts as that.
    assert _highest([dear_output, dear_input]) == ModelPrice(
        input=Decimal(4), output=Decimal(30), cache_read=Decimal(4), cache_write=Decimal(5)
    )


def test_the_docs_list_every_shipped_id_and_its_source() -> None:
    limits = (Path(__file__).resolve().parents[3] / "docs" / "limits.md").read_text()
    section = limits.split("## Shipped prices", 1)[1].split("\n## ", 1)[0]
    for entry in SHIPPED:
        assert f"`{entry.model}`" in section, entry.model
        assert entry.source in section
        assert entry.taken in section
