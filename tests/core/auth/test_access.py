"""Every rule for a proven key, in one place: the router and `router simulate` share it."""

from __future__ import annotations

from typing import Any

import pytest

from router_core import keys
from router_core.auth import KeyEntry, KeyIndex, check_access
from router_core.config_codec import structure
from router_core.problems import ClientError

NOW = 1_772_442_000.0


def config() -> Any:
    def key(key_id: str, **extra: Any) -> dict[str, Any]:
        return {"id": key_id, "hash": keys.hash_key(keys.format_key(key_id, "S" * 32)), **extra}

    return structure({
        "backends": {"a": {"base_url": "http://a/v1"}},
        "models": {"m": {"backends": [{"backend": "a"}]}, "n": {"backends": [{"backend": "a"}]}},
        "organizations": {
            "acme": {"models": ["m", "n"], "keys": [
                key("good"),
                key("gone", revoked=True),
                key("old1", expires_at=NOW - 1),
                key("emb1", routes=["/v1/embeddings"]),
                key("only", models=["n"]),
            ]},
            "globex": {"models": ["n"], "keys": [key("glob")]},
        },
    })  # fmt: skip


def entry(key_id: str) -> KeyEntry:
    return KeyIndex.from_config(config()).by_id[key_id]


def refusal(key_id: str, *, model: str = "m", route: str = "/v1/chat/completions") -> Any:
    with pytest.raises(ClientError) as caught:
        check_access(entry(key_id), config(), now=NOW, route=route, model=model)
    return caught.value.problem.code, caught.value.status, caught.value.extra.get("reason")


def test_a_key_within_every_rule_gets_its_principal_and_model() -> None:
    principal, model = check_access(
        entry("good"), config(), now=NOW, route="/v1/chat/completions", model="m"
    )
    assert (principal.organization, principal.key_id) == ("acme", "good")
    assert model.backends[0].backend == "a"


def test_each_rule_refuses_as_the_router_answers() -> None:
    assert refusal("gone") == ("invalid_api_key", 401, "key_revoked")
    assert refusal("old1") == ("invalid_api_key", 401, "key_expired")
    assert refusal("emb1") == ("route_not_allowed", 403, "route_not_allowed")
    assert refusal("good", model="gpt-9") == ("model_not_found", 404, None)
    assert refusal("glob", model="m") == ("model_not_found", 404, None)  # not globex's
    assert refusal("only", model="m") == ("model_not_allowed", 403, None)


def test_the_rules_apply_in_the_routers_order() -> None:
    # An expired key asking for a model it may not use is refused as expired,
    # and a model the organization lacks is not found before the key's scope.
    assert refusal("old1", model="n", route="/v1/embeddings") == (
        "invalid_api_key", 401, "key_expired"
    )  # fmt: skip
    assert refusal("only", model="gpt-9") == ("model_not_found", 404, None)
    principal, _ = check_access(entry("old1"), config(), now=NOW - 2, route="/x", model="m")
    assert principal.key_id == "old1"  # not yet expired then
