"""The canary-secret check itself: it finds what it must, and a router process
driven with every credential type (good and broken) leaks none of them."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.auth_support import ALL_KEYS, LIVE_KEY, SIGNING_KEY, auth_config, signed
from tests.helpers.canary_fixture import Canaries, _Recorder, scanned_files
from tests.helpers.jwks_fixture import IdentityProvider
from tests.helpers.support import CHAT, auth

PLANTED = "rk_live_planted1_" + "P" * 38


def test_the_check_finds_a_planted_secret(tmp_path: Path) -> None:
    canaries = Canaries()
    canaries.add(PLANTED, "planted")
    handler = _Recorder(canaries)
    logger = logging.getLogger("router.canary-selftest")
    logger.addHandler(handler)
    try:
        logger.warning("request failed", extra={"detail": f"bad key {PLANTED}"})
    finally:
        logger.removeHandler(handler)
    (tmp_path / "router-9.log").write_text(f'{{"msg": "{PLANTED}"}}\n')
    db = sqlite3.connect(tmp_path / "usage.sqlite3")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (PLANTED,))
    db.commit()
    db.close()
    leaks = canaries.leaks(scanned_files(tmp_path))
    assert "planted in log router.canary-selftest" in leaks
    assert "planted in router-9.log" in leaks
    assert "planted in usage.sqlite3" in leaks
    assert all(PLANTED not in leak for leak in leaks)


def test_a_router_process_leaks_no_credential(
    start_router: Any,
    config_data: dict[str, Any],
    idp: IdentityProvider,
    tmp_path: Path,
    canaries: Canaries,
) -> None:
    for name, key in ALL_KEYS.items():
        canaries.add(key, name)
    router = start_router(auth_config(config_data, idp, tmp_path))
    token = canaries.add(idp.token(), "process-token")
    expired = canaries.add(idp.token(exp=1), "expired-token")
    wrong = canaries.add(LIVE_KEY[:-8] + "Wrong123", "wrong-key")
    body = json.dumps(CHAT).encode()
    sig = signed(SIGNING_KEY, "signer1", body)
    canaries.add(sig["authorization"].rpartition("sig=")[2], "process-signature")
    with httpx.Client(base_url=router.url, timeout=10) as client:
        good = [
            client.post("/v1/chat/completions", json=CHAT, headers=auth(LIVE_KEY)),
            client.post("/v1/chat/completions", json=CHAT, headers=auth(token)),
            client.post("/v1/chat/completions", content=body, headers=sig),
        ]
        bad = [
            client.post("/v1/chat/completions", json=CHAT, headers=auth(wrong)),
            client.post("/v1/chat/completions", json=CHAT, headers=auth(expired)),
            client.post("/v1/chat/completions", content=body, headers=sig),  # replay
            client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": wrong}),
        ]
        status = client.get("/v1/status")
    assert [r.status_code for r in good] == [200, 200, 200]
    assert [r.status_code for r in bad] == [401, 401, 401, 401]
    router.stop()
    seen = [(f"HTTP {r.status_code}", r.text + json.dumps(dict(r.headers))) for r in bad]
    seen.append(("status", status.text))
    leaks = canaries.leaks([*seen, *scanned_files(tmp_path)])
    assert not leaks
    # The log did record the refusals, by reason and never by credential.
    lines = (tmp_path / "router-0.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    reasons = sorted(line["reason"] for line in logged if line.get("status") == 401)
    assert reasons == ["hmac_replay", "key_checksum", "key_checksum", "token_expired"]


@pytest.mark.parametrize("secret", [PLANTED])
def test_canaries_ignore_short_strings(secret: str) -> None:
    canaries = Canaries()
    canaries.add("short")
    canaries.add(secret)
    assert len(canaries.secrets) == 1
