"""The mock backend's Google Gemini API: `generateContent` and its SSE stream.

Rules:
- The same words and counts as its chat completions (see `payloads`):
  `generationConfig.maxOutputTokens` words, and the prompt counted as the
  same conversation sent as chat would be (the system instruction is one
  more message).
- A request whose `functionCallingConfig` is `ANY` is answered with one
  `functionCall` to the first allowed (or declared) function, with args
  `{"words": <the answer's text>}`. Gemini's finish reason is then still
  `STOP`, as it is on the real API.
- Streams (`streamGenerateContent?alt=sse`) send one chunk per word, each a
  partial answer with the usage so far, and a last chunk with the
  `finishReason`; like Gemini, there is no end marker.
- `safetySettings` must use Google's HarmCategory and HarmBlockThreshold
  names (else a 400, as Gemini answers). A setting at BLOCK_LOW_AND_ABOVE,
  the strictest, blocks the answer: a candidate with no content and
  `finishReason: SAFETY` (one chunk when streamed), as Gemini answers a
  prompt its filter stops.
- Errors come in Google's envelope: `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .payloads import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS_CAP,
    RequestError,
    chat_prompt_tokens,
    completion_text,
    completion_words,
)

# The paths the HTTP front hands a Gemini request on under (see protocol.py).
GENERATE = "/v1beta/generateContent"
STREAM = "/v1beta/streamGenerateContent"
GEMINI_PATHS = frozenset({GENERATE, STREAM})
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_error_body(status: int, message: str) -> bytes:
    kind = _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return orjson.dumps({"error": {"code": status, "message": message, "status": kind}})


# Google's HarmCategory (the Gemini API's) and HarmBlockThreshold names.
HARM_CATEGORIES = frozenset(
    {"HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
     "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY"}
)  # fmt: skip
THRESHOLDS = frozenset(
    {"HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
     "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"}
)  # fmt: skip


def _blocked(settings: object) -> bool:
    """Whether the safety settings block the answer (invalid ones are a 400)."""
    if settings is None:
        return False
    if not isinstance(settings, list):
        raise RequestError("Invalid value at 'safety_settings'", "safetySettings")
    strict = False
    for i, setting in enumerate(settings):
        category = setting.get("category") if isinstance(setting, dict) else None
        threshold = setting.get("threshold") if isinstance(setting, dict) else None
        if category not in HARM_CATEGORIES:
            raise RequestError(
                f"Invalid value at 'safety_settings[{i}].category' "
                f"(type.googleapis.com/google.ai.generativelanguage.v1beta.HarmCategory), "
                f"{category!r}",
                "safetySettings",
            )
        if threshold not in THRESHOLDS:
            raise RequestError(
                f"Invalid value at 'safety_settings[{i}].threshold' "
                f"(type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting."
                f"HarmBlockThreshold), {threshold!r}",
                "safetySettings",
            )
        strict = strict or threshold == "BLOCK_LOW_AND_ABOVE"
    return strict


def _texts(parts: object) -> str:
    if not isinstance(parts, list):
        return ""
    return " ".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p)


def _function(body: dict[str, Any]) -> str | None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("mode") != "ANY":
        return None
    allowed = config.get("allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        return str(allowed[0])
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            return str(declaration.get("name"))
    return None


class GeminiAnswer:
    """One `generateContent` answer: its body, or its stream's chunks."""

    def __init__(self, body: dict[str, Any], model: str, *, stream: bool, with_usage: bool) -> None:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise RequestError("contents is not specified", "contents")
        config = body.get("generationConfig") or {}
        limit = config.get("maxOutputTokens", DEFAULT_MAX_TOKENS)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RequestError("maxOutputTokens must be a positive integer", "generationConfig")
        self.n_out = min(limit, MAX_TOKENS_CAP)
        said = [{"content": _texts(c.get("parts"))} for c in contents if isinstance(c, dict)]
        if body.get("systemInstruction"):
            said.append({"content": _texts(body["systemInstruction"].get("parts"))})
        self.prompt_tokens = chat_prompt_tokens(said)
        self.model = model
        self.stream = stream
        self.with_usage = with_usage
        self.function = _function(body)
        self.blocked = _blocked(body.get("safetySettings"))

    def _usage(self, produced: int) -> dict[str, int]:
        return {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": produced,
                "totalTokenCount": self.prompt_tokens + produced}  # fmt: skip

    def _answer(self, parts: list[dict[str, Any]], finish: str | None, produced: int) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        answer: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model}
        if self.with_usage:
            answer["usageMetadata"] = self._usage(produced)
        return orjson.dumps(answer)

    def _blocked_answer(self) -> bytes:
        candidate = {"finishReason": "SAFETY", "index": 0}
        answer: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model}
        if self.with_usage:
            answer["usageMetadata"] = self._usage(0)
        return orjson.dumps(answer)

    def body(self) -> bytes:
        if self.blocked:
            return self._blocked_answer()
        if self.function is not None:
            call = {"functionCall": {"name": self.function,
                                     "args": {"words": completion_text(self.n_out)}}}  # fmt: skip
            return self._answer([call], "STOP", self.n_out)
        return self._answer([{"text": completion_text(self.n_out)}], "STOP", self.n_out)

    def events(self) -> Iterator[tuple[bytes, str]]:
        if self.blocked:
            yield b"data: " + self._blocked_answer() + b"\n\n", "content"
            return
        if self.function is not None:
            yield b"data: " + self.body() + b"\n\n", "content"
            return
        words = completion_words(self.n_out)
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            finish = "STOP" if i == len(words) - 1 else None
            data = self._answer([{"text": piece}], finish, i + 1)
            yield b"data: " + data + b"\n\n", "content"
