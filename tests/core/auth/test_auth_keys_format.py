"""The key format: checksums catch typos, ids always hold a letter, both formats parse."""

from __future__ import annotations

import random
import string

import yaml
from hypothesis import given
from hypothesis import strategies as st

from router_core import keys

SECRET = st.text(alphabet=keys.SECRET_ALPHABET, min_size=32, max_size=32)


@given(seed=st.integers())
def test_generated_ids_start_with_a_letter_and_stay_strings_in_yaml(seed: int) -> None:
    rng = random.Random(seed)
    key_id = keys.new_key_id(rng.choice)
    assert key_id[0] in string.ascii_lowercase
    assert yaml.safe_load(f"id: {key_id}")["id"] == key_id


@given(secret=SECRET, position=st.integers(min_value=8), replacement=st.sampled_from("aZ9"))
def test_a_changed_character_fails_the_checksum(
    secret: str, position: int, replacement: str
) -> None:
    key = keys.format_live_key("k1234abc", secret)
    parsed = keys.parse(key)
    assert parsed is not None
    assert parsed.checksum_ok
    assert (parsed.key_id, parsed.secret) == ("k1234abc", secret)
    index = position % len(key)
    if key[index] == replacement or key[index] == "_":
        return
    typo = key[:index] + replacement + key[index + 1 :]
    mistyped = keys.parse(typo)
    assert mistyped is None or not mistyped.checksum_ok or mistyped.key_id != "k1234abc"


def test_legacy_keys_still_parse() -> None:
    parsed = keys.parse(keys.format_key("acme1", "A" * 32))
    assert parsed is not None
    assert parsed.key_id == "acme1"
    assert parsed.checksum_ok


def test_scanners_find_both_formats() -> None:
    live = keys.format_live_key("k1234abc", "S" * 32)
    text = f"oops {live} and {keys.format_key('acme1', 'A' * 32)} leaked"
    assert len(keys.SCAN_RE.findall(text)) == 2
    assert repr(keys.parse(live)).count("S" * 32) == 0  # the secret stays out of reprs
