"""API keys and authentication."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_core import keys
from router_core.auth import KeyIndex, authenticate, credential_from_headers
from router_core.config_codec import structure
from router_core.problems import ClientError

GOOD = keys.format_key("demo", "S" * 32)
REVOKED = keys.format_key("gone", "R" * 32)


@pytest.fixture
def index() -> KeyIndex:
    config = structure(
        {
            "backends": {"a": {"base_url": "http://a/v1"}},
            "models": {"m": {"backends": [{"backend": "a"}]}},
            "organizations": {
                "acme": {
                    "keys": [
                        {"id": "demo", "hash": keys.hash_key(GOOD)},
                        {"id": "gone", "hash": keys.hash_key(REVOKED), "revoked": True},
                    ]
                }
            },
        }
    )
    return KeyIndex.from_config(config)


def test_valid_key_authenticates(index: KeyIndex) -> None:
    principal = authenticate(GOOD, index)
    assert (principal.organization, principal.key_id) == ("acme", "demo")


@pytest.mark.parametrize(
    ("presented", "code"),
    [
        ("not-a-key", "invalid_api_key"),
        (keys.format_key("demo", "X" * 32), "invalid_api_key"),  # wrong secret
        (keys.format_key("nobody", "S" * 32), "invalid_api_key"),  # unknown id
        (REVOKED, "invalid_api_key"),
    ],
)
def test_bad_keys_are_refused_without_echo(index: KeyIndex, presented: str, code: str) -> None:
    with pytest.raises(ClientError) as info:
        authenticate(presented, index)
    assert info.value.problem.code == code
    assert info.value.status == 401
    assert presented not in info.value.detail


def test_credential_sources() -> None:
    assert credential_from_headers("Bearer abc", None) == "abc"
    assert credential_from_headers("bearer  abc ", None) == "abc"
    assert credential_from_headers(None, "xyz") == "xyz"
    with pytest.raises(ClientError) as missing:
        credential_from_headers(None, None)
    assert missing.value.problem.code == "missing_api_key"
    with pytest.raises(ClientError) as basic:
        credential_from_headers("Basic dXNlcjpwYXNz", None)
    assert basic.value.problem.code == "invalid_api_key"
    assert "dXNlcjpwYXNz" not in basic.value.detail


@given(st.text(alphabet=keys.SECRET_ALPHABET, min_size=32, max_size=64))
def test_parse_round_trip(secret: str) -> None:
    key = keys.format_key("abcd1234", secret)
    parsed = keys.parse(key)
    assert parsed is not None
    assert (parsed.key_id, parsed.secret) == ("abcd1234", secret)
    assert keys.verify(key, keys.hash_key(key))
    assert not keys.verify(key + "x", keys.hash_key(key))


def test_parsed_key_repr_hides_secret() -> None:
    parsed = keys.parse(GOOD)
    assert parsed is not None
    assert "S" * 32 not in repr(parsed)
