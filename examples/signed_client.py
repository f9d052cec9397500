"""A client that signs its requests (RK-HMAC-SHA256) with router_core.signing.sign.

    python examples/signed_client.py http://127.0.0.1:8080 rk_demo_DemoKeyDoNotUseInProduction00000

The API key itself never travels: the router checks the signature against the
key's stored digest, the timestamp (within 300 s) and the nonce (never reused).
"""

from __future__ import annotations

import json
import secrets
import sys
import time

import httpx

from router_core import keys, signing


def signed_post(base_url: str, api_key: str, path: str, payload: object) -> httpx.Response:
    parsed = keys.parse(api_key)
    if parsed is None:
        raise SystemExit("not an API key")
    body = json.dumps(payload).encode()
    # Sign exactly the bytes sent, and the path with its query string.
    header = signing.sign(
        api_key, parsed.key_id, "POST", path, body, time.time(), secrets.token_urlsafe(18)
    )
    headers = {"authorization": header, "content-type": "application/json"}
    return httpx.post(base_url + path, content=body, headers=headers, timeout=30)


def main() -> int:
    base_url, api_key = sys.argv[1], sys.argv[2]
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    response = signed_post(base_url, api_key, "/v1/chat/completions", chat)
    print(response.status_code, response.text[:500])
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
