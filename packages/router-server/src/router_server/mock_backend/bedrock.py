"""The mock backend's AWS Bedrock runtime: Converse and ConverseStream, SigV4-checked.

Rules:
- The same words and counts as its chat completions (see `payloads`):
  `inferenceConfig.maxTokens` words, and the prompt counted as the same
  conversation sent as chat would be.
- A request whose `toolConfig.toolChoice` is `any` or names a `tool` is
  answered with one `toolUse` of it (input `{"words": <the answer's text>}`)
  and `stopReason: tool_use`.
- ConverseStream answers in AWS event-stream framing
  (`application/vnd.amazon.eventstream`): messageStart, a contentBlockDelta
  per word (or a contentBlockStart, then argument fragments, for a tool
  use), contentBlockStop, messageStop and metadata (the usage). Each frame
  carries its prelude and message CRC32s, as AWS's do.
- With the mock's `api_key`, every call must be SigV4-signed for service
  `bedrock` with that key as the secret access key (any access key id).
  The signature is recomputed with botocore over the signed headers, the
  path and the body, and compared in constant time. No signature is 403
  `MissingAuthenticationTokenException`; a wrong one is 403
  `InvalidSignatureException`, as AWS answers.
- Errors are AWS's: `{"message": ...}`, with its type in `x-amzn-ErrorType`.
"""

from __future__ import annotations

import hmac
import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from .payloads import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS_CAP,
    RequestError,
    chat_prompt_tokens,
    completion_text,
    completion_words,
    tool_arguments,
)

CONVERSE = "/bedrock/converse"
STREAM = "/bedrock/converse-stream"
BEDROCK_PATHS = frozenset({CONVERSE, STREAM})
_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/bedrock/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


def error_type(status: int) -> str:
    return _TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")


def bedrock_error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"message": message})


def frame(event_type: str, payload: Mapping[str, Any], message_type: str = "event") -> bytes:
    """One AWS event-stream message: prelude, its CRC, string headers, payload, CRC."""
    kind = ":event-type" if message_type == "event" else ":exception-type"
    headers = b"".join(
        len(name).to_bytes(1, "big") + name + b"\x07" + len(value).to_bytes(2, "big") + value
        for name, value in (
            (kind.encode(), event_type.encode()),
            (b":content-type", b"application/json"),
            (b":message-type", message_type.encode()),
        )
    )
    body = orjson.dumps(payload)
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


def signature_problem(
    method: str, url: str, headers: Mapping[str, str], body: bytes, secret: str
) -> str | None:
    """Why the request's SigV4 signature does not hold (None: it does)."""
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:  # the mock cannot check what it cannot compute
        return "the mock needs botocore to check signatures"
    found = _AUTHORIZATION.match(headers.get("authorization", ""))
    if found is None:
        return "Missing Authentication Token"
    access_key, _, region, signed, signature = found.groups()
    names = signed.split(";")
    if "x-amz-date" not in names or any(name not in headers for name in names):
        return MISMATCH
    request = AWSRequest(
        method=method, url=url, data=body, headers={n: headers[n] for n in names if n != "host"}
    )
    request.context["timestamp"] = headers["x-amz-date"]
    credentials = Credentials(access_key, secret, headers.get("x-amz-security-token"))
    signer = SigV4Auth(credentials, "bedrock", region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    return None if hmac.compare_digest(expected, signature) else MISMATCH


def _texts(blocks: object) -> str:
    if not isinstance(blocks, list):
        return ""
    return " ".join(str(b["text"]) for b in blocks if isinstance(b, dict) and "text" in b)


def _tool(body: Mapping[str, Any]) -> str | None:
    config = body.get("toolConfig") or {}
    choice = config.get("toolChoice") or {}
    if "tool" in choice:
        return str(choice["tool"].get("name"))
    if "any" in choice:
        for tool in config.get("tools") or ():
            return str((tool.get("toolSpec") or {}).get("name"))
    return None


class BedrockAnswer:
    """One Converse answer: its body, or its stream's frames."""

    binary = True
    content_type = b"application/vnd.amazon.eventstream"

    def __init__(self, body: dict[str, Any], *, stream: bool, with_usage: bool) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages: must have at least one message", "messages")
        limit = (body.get("inferenceConfig") or {}).get("maxTokens", DEFAULT_MAX_TOKENS)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestError("inferenceConfig.maxTokens must be at least 1", "inferenceConfig")
        self.n_out = min(limit, MAX_TOKENS_CAP)
        said = [{"content": _texts(m.get("content"))} for m in messages if isinstance(m, dict)]
        if body.get("system"):
            said.append({"content": _texts(body["system"])})
        self.prompt_tokens = chat_prompt_tokens(said)
        self.stream = stream
        self.with_usage = with_usage
        self.tool = _tool(body)
        self.tool_id = "tooluse_mock" + str(len(said))

    def _usage(self) -> dict[str, int]:
        return {"inputTokens": self.prompt_tokens, "outputTokens": self.n_out,
                "totalTokens": self.prompt_tokens + self.n_out}  # fmt: skip

    def body(self) -> bytes:
        if self.tool is not None:
            block: dict[str, Any] = {"toolUse": {
                "toolUseId": self.tool_id, "name": self.tool,
                "input": {"words": completion_text(self.n_out)}}}  # fmt: skip
            stop = "tool_use"
        else:
            block, stop = {"text": completion_text(self.n_out)}, "end_turn"
        answer: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop,
            "metrics": {"latencyMs": 1},
        }
        if self.with_usage:
            answer["usage"] = self._usage()
        return orjson.dumps(answer)

    def events(self) -> Iterator[tuple[bytes, str]]:
        yield frame("messageStart", {"role": "assistant"}), "head"
        if self.tool is not None:
            start = {"toolUse": {"toolUseId": self.tool_id, "name": self.tool}}
            yield frame("contentBlockStart", {"start": start, "contentBlockIndex": 0}), "head"
            for piece in tool_arguments(self.n_out):
                delta = {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": 0}
                yield frame("contentBlockDelta", delta), "content"
        else:
            for i, word in enumerate(completion_words(self.n_out)):
                delta = {"delta": {"text": word if i == 0 else " " + word}, "contentBlockIndex": 0}
                yield frame("contentBlockDelta", delta), "content"
        yield frame("contentBlockStop", {"contentBlockIndex": 0}), "tail"
        stop = "tool_use" if self.tool is not None else "end_turn"
        yield frame("messageStop", {"stopReason": stop}), "tail"
        metadata: dict[str, Any] = {"metrics": {"latencyMs": 1}}
        if self.with_usage:
            metadata["usage"] = self._usage()
        yield frame("metadata", metadata), "tail"
