"""OpenAI embeddings to the providers that have their own embedding call, and back.

Rules:
- The family of the call is the backend's and, on Bedrock, the model id's:
  Gemini's `embedContent` / `batchEmbedContents`, Vertex AI's `predict`,
  Amazon Titan Text Embeddings (`amazon.titan-embed-text-*`, one text per
  InvokeModel call) and Cohere Embed (`cohere.embed-*`, up to 96 texts a
  call). A Bedrock model of any other family is a 400 naming it: the
  router knows no embedding body for it.
- `calls` cuts the request into the calls its family takes (a list of N
  texts to Titan is N calls); the server sends them and hands their
  answers back in order, as `{"family", "answers"}` (`combined`), which
  `to_openai` and `counts` read. Nothing here sends or waits.
- Translated faithfully or refused with 400 `unsupported_feature`: every
  family takes text only (token-id inputs are refused), `dimensions` goes
  where the family has it (`outputDimensionality`, Titan v2's
  `dimensions`, which takes 256, 512 or 1024) and is refused where it has
  none (Titan v1, Cohere). `user` is dropped (no family has it); any other
  field the translation does not know is refused by name.
- `input_type` (the router's own field, in the spirit of Cohere's) says what
  the texts are for: `search_query`, `search_document`, `classification`,
  `clustering`, and for Gemini and Vertex AI also `semantic_similarity`,
  `question_answering`, `fact_verification` and `code_retrieval_query`.
  It becomes Gemini's `taskType` (`search_*` as `RETRIEVAL_*`), Vertex AI's
  per-instance `task_type`, Cohere's `input_type`; a value the family has
  not (and any value for Titan, which has no such setting) is a 400 naming
  it. Unset: the provider's default, and `search_document` for Cohere,
  whose API requires one.
- Vectors come back as floats, or packed as little-endian float32 in
  base64 when the client asked `encoding_format: base64` (what the openai
  SDK asks by default, then decodes), as OpenAI's API answers.
- Usage: Titan's `inputTextTokenCount` and Vertex's
  `statistics.token_count` are reported counts. Gemini's answers and
  Cohere's on Bedrock carry none: the prompt is estimated as everywhere
  else (`estimated_counts`, about four characters a token) and the counts
  say `estimated`.
- Pure.
"""

from __future__ import annotations

import base64
import enum
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from router_core.accounting.records import TokenCounts, count_of, estimated_counts
from router_core.config import Backend
from router_core.config_enums import BackendKind
from router_core.problems import Catalog, ClientError, DependencyError
from router_core.protocols import chat_request


class Family(enum.StrEnum):
    GEMINI = "gemini"
    VERTEX = "vertex"
    TITAN = "titan"
    COHERE = "cohere"


@attrs.frozen
class EmbedCall:
    """One call to the provider: its method (`embedContent`, `batchEmbedContents`,
    `predict`, `invoke`) and body."""

    method: str
    body: Mapping[str, Any] = attrs.field(repr=False)


# Gemini's batchEmbedContents takes 100 requests; Vertex's predict 250
# instances (gemini-embedding-* models one); Cohere on Bedrock 96 texts.
GEMINI_BATCH = 100
VERTEX_BATCH = 250
COHERE_BATCH = 96
TITAN_V2_DIMENSIONS = (256, 512, 1024)
# Known families by Bedrock model id, after any cross-region prefix (us., eu., ...).
_BEDROCK_FAMILIES = (("amazon.titan-embed-text-", Family.TITAN), ("cohere.embed-", Family.COHERE))
_KNOWN = frozenset({"model", "input", "dimensions", "encoding_format", "user", "input_type"})
# `input_type` values each family takes, with the provider's own name for it.
_COHERE_TYPES = ("search_query", "search_document", "classification", "clustering")
_GOOGLE_TYPES = (
    *_COHERE_TYPES, "semantic_similarity", "question_answering", "fact_verification",
    "code_retrieval_query",
)  # fmt: skip
_TASK_TYPES = {
    t: {"search_query": "RETRIEVAL_QUERY", "search_document": "RETRIEVAL_DOCUMENT"}.get(
        t, t.upper()
    )
    for t in _GOOGLE_TYPES
}
INPUT_TYPES: Mapping[Family, Mapping[str, str]] = {
    Family.GEMINI: _TASK_TYPES,
    Family.VERTEX: _TASK_TYPES,
    Family.COHERE: {t: t for t in _COHERE_TYPES},
    Family.TITAN: {},
}
_PROVIDERS = {
    Family.GEMINI: "Gemini's embedContent",
    Family.VERTEX: "Vertex AI's predict",
    Family.TITAN: "Amazon Titan embeddings on Bedrock",
    Family.COHERE: "Cohere embeddings on Bedrock",
}


def _bare_model_id(model: str) -> str:
    """A Bedrock model id without its ARN and its cross-region prefix."""
    model = model.rsplit("/", 1)[-1]
    head, dot, rest = model.partition(".")
    if dot and head in ("us", "eu", "apac", "global", "us-gov", "ca", "jp", "au"):
        return rest
    return model


def family_of(backend: Backend, model: str) -> Family:
    """Which embedding call `model` on `backend` takes; a 400 naming the model when
    the router knows none (a Bedrock model of another family)."""
    if backend.kind is BackendKind.GEMINI:
        return Family.GEMINI
    if backend.kind is BackendKind.VERTEX:
        return Family.VERTEX
    bare = _bare_model_id(model)
    for prefix, family in _BEDROCK_FAMILIES:
        if bare.startswith(prefix):
            return family
    raise ClientError(
        Catalog.UNSUPPORTED_FEATURE,
        f"Embeddings cannot be sent to Bedrock model {model!r}: the router knows the "
        "embedding bodies of amazon.titan-embed-text-* and cohere.embed-* models only.",
        param="model",
    )


def _texts(body: Mapping[str, Any], family: Family) -> list[str]:
    given = body.get("input")
    if isinstance(given, str):
        return [given]
    if isinstance(given, list) and given and all(isinstance(t, str) for t in given):
        return list(given)
    raise chat_request.refusal(_PROVIDERS[family])("Input given as token ids", "input")


def _dimensions(body: Mapping[str, Any], family: Family, model: str) -> int | None:
    dimensions = body.get("dimensions")
    if dimensions is None:
        return None
    refuse = chat_request.refusal(_PROVIDERS[family])
    if family is Family.COHERE or (
        family is Family.TITAN
        and not _bare_model_id(model).startswith("amazon.titan-embed-text-v2")
    ):
        raise refuse("The field 'dimensions'", "dimensions")
    if family is Family.TITAN and dimensions not in TITAN_V2_DIMENSIONS:
        raise ClientError(
            Catalog.UNSUPPORTED_FEATURE,
            f"dimensions {dimensions} cannot be sent to Amazon Titan Text Embeddings v2, "
            "which takes 256, 512 or 1024.",
            param="dimensions",
        )
    return int(dimensions)


def _input_type(body: Mapping[str, Any], family: Family) -> str | None:
    """The family's name for the request's `input_type` (None: not given)."""
    given = body.get("input_type")
    if given is None:
        return None
    known = INPUT_TYPES[family]
    if isinstance(given, str) and given in known:
        return known[given]
    if not known:
        raise chat_request.refusal(_PROVIDERS[family])("The field 'input_type'", "input_type")
    raise ClientError(
        Catalog.UNSUPPORTED_FEATURE,
        f"input_type {given!r} cannot be sent to {_PROVIDERS[family]}, which takes "
        f"{', '.join(known)}.",
        param="input_type",
    )


def _check(body: Mapping[str, Any], family: Family) -> None:
    refuse = chat_request.refusal(_PROVIDERS[family])
    chat_request.check(body, _KNOWN, {}, refuse)
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise ClientError(
            Catalog.VALIDATION_FAILED,
            "encoding_format must be 'float' or 'base64'.",
            param="encoding_format",
        )


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def calls(body: Mapping[str, Any], family: Family, model: str) -> tuple[EmbedCall, ...]:
    """The calls that embed the request's inputs on `model`, in input order.

    Raises `ClientError(UNSUPPORTED_FEATURE)` for what the family cannot take.
    """
    _check(body, family)
    texts = _texts(body, family)
    dimensions = _dimensions(body, family, model)
    input_type = _input_type(body, family)
    if family is Family.GEMINI:
        if len(texts) == 1 and not isinstance(body.get("input"), list):
            call: dict[str, Any] = {"content": {"parts": [{"text": texts[0]}]}}
            if dimensions is not None:
                call["outputDimensionality"] = dimensions
            if input_type is not None:
                call["taskType"] = input_type
            return (EmbedCall("embedContent", call),)
        out = []
        for chunk in _chunks(texts, GEMINI_BATCH):
            requests = []
            for text in chunk:
                one: dict[str, Any] = {
                    "model": f"models/{model}",
                    "content": {"parts": [{"text": text}]},
                }
                if dimensions is not None:
                    one["outputDimensionality"] = dimensions
                if input_type is not None:
                    one["taskType"] = input_type
                requests.append(one)
            out.append(EmbedCall("batchEmbedContents", {"requests": requests}))
        return tuple(out)
    if family is Family.VERTEX:
        size = 1 if model.startswith("gemini-embedding") else VERTEX_BATCH
        parameters = {} if dimensions is None else {"outputDimensionality": dimensions}
        return tuple(
            EmbedCall(
                "predict",
                {"instances": [_vertex_instance(t, input_type) for t in chunk]}
                | ({"parameters": parameters} if parameters else {}),
            )
            for chunk in _chunks(texts, size)
        )
    if family is Family.TITAN:
        v2 = _bare_model_id(model).startswith("amazon.titan-embed-text-v2")
        extra: dict[str, Any] = {"normalize": True} if v2 else {}
        if dimensions is not None:
            extra["dimensions"] = dimensions
        return tuple(EmbedCall("invoke", {"inputText": t, **extra}) for t in texts)
    return tuple(
        EmbedCall("invoke", {"texts": chunk, "input_type": input_type or "search_document"})
        for chunk in _chunks(texts, COHERE_BATCH)
    )


def _vertex_instance(text: str, task_type: str | None) -> dict[str, Any]:
    instance: dict[str, Any] = {"content": text}
    if task_type is not None:
        instance["task_type"] = task_type
    return instance


def combined(family: Family, answers: Sequence[object]) -> dict[str, Any]:
    """What the server hands back for a request's calls: each call's answer, in order."""
    return {"family": family.value, "answers": list(answers)}


def _bad(detail: str) -> DependencyError:
    return DependencyError(Catalog.BACKEND_ERROR, f"The backend's embedding answer {detail}.")


def _floats(value: object) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise _bad("holds a vector that is not a list of numbers")
    return [float(v) for v in value]


def _vectors(family: Family, answer: object) -> list[list[float]]:
    """The vectors of one call's answer, in order."""
    if not isinstance(answer, Mapping):
        raise _bad("is not a JSON object")
    if family is Family.GEMINI:
        if "embedding" in answer:
            return [_floats((answer.get("embedding") or {}).get("values"))]
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list):
            raise _bad("has no embeddings")
        return [_floats(e.get("values") if isinstance(e, Mapping) else None) for e in embeddings]
    if family is Family.VERTEX:
        predictions = answer.get("predictions")
        if not isinstance(predictions, list):
            raise _bad("has no predictions")
        return [
            _floats(((p.get("embeddings") or {}) if isinstance(p, Mapping) else {}).get("values"))
            for p in predictions
        ]
    if family is Family.TITAN:
        return [_floats(answer.get("embedding"))]
    embeddings = answer.get("embeddings")
    if isinstance(embeddings, Mapping):  # asked by embedding_types: the floats
        embeddings = embeddings.get("float")
    if not isinstance(embeddings, list):
        raise _bad("has no embeddings")
    return [_floats(e) for e in embeddings]


def _parts(answer: Mapping[str, Any]) -> tuple[Family, list[object]]:
    try:
        family = Family(str(answer.get("family")))
    except ValueError:
        raise _bad("names no family") from None
    answers = answer.get("answers")
    return family, answers if isinstance(answers, list) else []


def counts(request_body: Mapping[str, Any], answer: Mapping[str, Any]) -> TokenCounts:
    """The prompt tokens of a combined answer: reported by Titan and Vertex,
    estimated (and said so) for Gemini and Cohere, or when any call lacks a count."""
    family, answers = _parts(answer)
    total = 0
    for one in answers:
        if not isinstance(one, Mapping):
            return estimated_counts(request_body, 0)
        if family is Family.TITAN and "inputTextTokenCount" in one:
            total += count_of(one, "inputTextTokenCount")
        elif family is Family.VERTEX and isinstance(one.get("predictions"), list):
            for p in one["predictions"]:
                stats = ((p.get("embeddings") or {}) if isinstance(p, Mapping) else {}).get(
                    "statistics"
                )
                if not isinstance(stats, Mapping) or "token_count" not in stats:
                    return estimated_counts(request_body, 0)
                total += count_of(stats, "token_count")
        else:
            return estimated_counts(request_body, 0)
    return TokenCounts(prompt_tokens=total, total_tokens=total)


def _encoded(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def to_openai(
    request_body: Mapping[str, Any], answer: Mapping[str, Any], *, public_model: str
) -> dict[str, Any]:
    """The OpenAI embeddings answer for a combined provider answer."""
    family, answers = _parts(answer)
    vectors = [v for one in answers for v in _vectors(family, one)]
    expected = len(_texts(request_body, family))
    if len(vectors) != expected:
        raise _bad(f"holds {len(vectors)} vectors for {expected} inputs")
    as_base64 = request_body.get("encoding_format") == "base64"
    tokens = counts(request_body, answer)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, as_base64)}
            for i, v in enumerate(vectors)
        ],
        "model": public_model,
        "usage": {"prompt_tokens": tokens.prompt_tokens, "total_tokens": tokens.total_tokens},
    }


__all__ = ["EmbedCall", "Family", "calls", "combined", "counts", "family_of", "to_openai"]
