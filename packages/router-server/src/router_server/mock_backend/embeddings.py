"""The mock backend's provider embedding calls: Gemini, Vertex AI, and Bedrock's InvokeModel.

Rules:
- Gemini (`models/M:embedContent`, `:batchEmbedContents`): one
  `{"embedding": {"values"}}`, or `{"embeddings": [...]}` in request order.
  Each batch request must name `models/M`, the model of the URL, as Google
  demands; `outputDimensionality` truncates the vector (Gemini's own
  semantics). No token counts, as on the real API.
- Vertex AI (`publishers/google/models/M:predict`): `instances[].content`,
  `parameters.outputDimensionality`; each prediction is
  `embeddings.{values, statistics.{token_count, truncated}}`. A
  `gemini-embedding-*` model takes one instance a call, as Vertex's does.
- Bedrock (`/model/M/invoke`, SigV4-checked like Converse): the body by the
  model id. Titan (`amazon.titan-embed-text-v1`/`-v2:0`): `{inputText}`
  (v2 also `dimensions` of 256, 512 or 1024, `normalize`), answered
  `{embedding, inputTextTokenCount}`. Cohere (`cohere.embed-*`): `{texts}`
  (1 to 96) with a required `input_type`, answered `{embeddings, id,
  response_type, texts}`. Any other model is a ValidationException.
- Gemini's `taskType` and Vertex AI's per-instance `task_type` must be one
  of Google's TaskType names (else the provider's 400); Cohere's
  `input_type` one of its four.
- A vector is a function of its text alone (SHAKE-128 of it), so a test can
  tell which vector answers which input, and a shorter one is a prefix of
  a longer one; with a task or input type (other than Cohere's
  `search_document`, the router's default there) it is the vector of
  `TYPE:text`, so a test can tell the type arrived. Token counts are the
  text's words.
- A refusal is the provider's own envelope, with its status.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .bedrock import bedrock_error_body
from .gemini import gemini_error_body

GEMINI_EMBED = "/v1beta/embedContent"
GEMINI_BATCH = "/v1beta/batchEmbedContents"
VERTEX_PREDICT = "/vertex/predict"
BEDROCK_INVOKE = "/bedrock/invoke"
GOOGLE_EMBED_PATHS = frozenset({GEMINI_EMBED, GEMINI_BATCH, VERTEX_PREDICT})
EMBED_PATHS = GOOGLE_EMBED_PATHS | {BEDROCK_INVOKE}
# The vector length each family answers when none is asked.
GEMINI_DIMENSIONS = 768
TITAN_DIMENSIONS = 1024
COHERE_DIMENSIONS = 1024
Answer = tuple[int, bytes]
# Google's TaskType names (ai.google.dev/api/rest/v1beta/TaskType).
TASK_TYPES = frozenset(
    {"TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
     "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
     "CODE_RETRIEVAL_QUERY"}
)  # fmt: skip
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")


def typed(text: str, kind: object) -> str:
    """The text a vector is made of: `TYPE:text` when a task or input type was given."""
    return text if kind is None else f"{kind}:{text}"


def _task_type(value: object, where: str) -> object:
    if value is not None and value not in TASK_TYPES:
        raise Refused(f"Invalid value at '{where}' (type.googleapis.com/TaskType), {value!r}")
    return value


class Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def vector(text: str, dimensions: int) -> list[float]:
    """The mock's embedding of `text`: values in [-1, 1), six decimals."""
    digest = hashlib.shake_128(text.encode()).digest(dimensions)
    return [round(b / 128 - 1.0, 6) for b in digest]


def words(text: str) -> int:
    return len(text.split())


def _text(content: object, where: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise Refused(f"* {where}.parts: contents must not be empty")
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise Refused(f"* {where}.parts: only text parts are embedded")
    return " ".join(str(t) for t in texts)


def _dimensions(value: object, default: int, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= default:
        raise Refused(f"* {name}: must be an integer from 1 to {default}")
    return value


def _gemini(path: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    if path == GEMINI_EMBED:
        text = _text(body.get("content"), "content")
        size = _dimensions(
            body.get("outputDimensionality"), GEMINI_DIMENSIONS, "output_dimensionality"
        )
        kind = _task_type(body.get("taskType"), "task_type")
        return {"embedding": {"values": vector(typed(text, kind), size)}}
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise Refused("* requests: must not be empty")
    if len(requests) > 100:
        raise Refused(
            "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
        )
    out = []
    for i, one in enumerate(requests):
        where = f"requests[{i}]"
        if not isinstance(one, dict) or one.get("model") != f"models/{model}":
            raise Refused(f"* {where}.model: must be models/{model}, the model of the batch")
        text = _text(one.get("content"), f"{where}.content")
        size = _dimensions(
            one.get("outputDimensionality"), GEMINI_DIMENSIONS, f"{where}.output_dimensionality"
        )
        kind = _task_type(one.get("taskType"), f"{where}.task_type")
        out.append({"values": vector(typed(text, kind), size)})
    return {"embeddings": out}


def _vertex(body: dict[str, Any], model: str) -> dict[str, Any]:
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise Refused("instances: must not be empty")
    if model.startswith("gemini-embedding") and len(instances) > 1:
        raise Refused(f"Model {model} supports only 1 instance per request")
    if len(instances) > 250:
        raise Refused("instances: at most 250 instances per request")
    parameters = body.get("parameters") or {}
    size = _dimensions(
        parameters.get("outputDimensionality") if isinstance(parameters, dict) else None,
        GEMINI_DIMENSIONS,
        "parameters.outputDimensionality",
    )
    predictions = []
    for i, instance in enumerate(instances):
        text = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(text, str):
            raise Refused(f"instances[{i}].content: must be a string")
        kind = _task_type(instance.get("task_type"), f"instances[{i}].task_type")
        stats = {"token_count": words(text), "truncated": False}
        values = vector(typed(text, kind), size)
        predictions.append({"embeddings": {"values": values, "statistics": stats}})
    chars = sum(len(str(i.get("content"))) for i in instances)
    return {"predictions": predictions, "metadata": {"billableCharacterCount": chars}}


def _bare(model: str) -> str:
    model = model.rsplit("/", 1)[-1]
    head, dot, rest = model.partition(".")
    return rest if dot and head in ("us", "eu", "apac", "global") else model


def _titan(body: dict[str, Any], v2: bool) -> dict[str, Any]:
    allowed = {"inputText", "dimensions", "normalize", "embeddingTypes"} if v2 else {"inputText"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise Refused(f"Malformed input request: extraneous key [{extra[0]}] is not permitted")
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise Refused("Malformed input request: inputText must be a non-empty string")
    size = body.get("dimensions", TITAN_DIMENSIONS)
    if size not in (256, 512, 1024):
        raise Refused(f"Malformed input request: dimensions: {size} is not a valid enum value")
    return {"embedding": vector(text, size), "inputTextTokenCount": words(text)}


def _cohere(body: dict[str, Any]) -> dict[str, Any]:
    texts = body.get("texts")
    if not isinstance(texts, list) or not 1 <= len(texts) <= 96:
        raise Refused("Malformed input request: texts must hold 1 to 96 strings")
    if not all(isinstance(t, str) for t in texts):
        raise Refused("Malformed input request: texts must hold strings")
    kind = body.get("input_type")
    if kind not in COHERE_INPUT_TYPES:
        raise Refused("Malformed input request: #: required key [input_type] not found")
    shown = None if kind == "search_document" else kind
    return {
        "embeddings": [vector(typed(t, shown), COHERE_DIMENSIONS) for t in texts],
        "id": "mock-" + hashlib.sha256(orjson.dumps(texts)).hexdigest()[:16],
        "response_type": "embeddings_floats",
        "texts": texts,
    }


def _bedrock(body: dict[str, Any], model: str) -> dict[str, Any]:
    bare = _bare(model)
    if bare.startswith("amazon.titan-embed-text-"):
        return _titan(body, v2=bare.startswith("amazon.titan-embed-text-v2"))
    if bare.startswith("cohere.embed-"):
        return _cohere(body)
    raise Refused(f"The provided model identifier is invalid for embeddings: {model}")


def answer(path: str, body: dict[str, Any], model: str) -> Answer:
    """(status, body) for a provider embedding call on the mock's internal `path`."""
    try:
        if path == BEDROCK_INVOKE:
            return 200, orjson.dumps(_bedrock(body, model))
        if path == VERTEX_PREDICT:
            return 200, orjson.dumps(_vertex(body, model))
        return 200, orjson.dumps(_gemini(path, body, model))
    except Refused as refused:
        if path == BEDROCK_INVOKE:
            return 400, bedrock_error_body(400, refused.message)
        return 400, gemini_error_body(400, refused.message)
