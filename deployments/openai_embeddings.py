"""OpenAI-compatible embeddings: `/v1/embeddings` JSON body -> EmbeddingsRequest, EmbeddingResult -> JSON.

``input`` is a string, a list of strings, or a list of typed items (``{"type": "text", "text": ...}``,
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``), which may be mixed.
``encoding_format`` ``"float"`` (JSON numbers) or ``"base64"`` (each vector's little-endian float32
bytes, what the official client asks for by default and decodes); ``dimensions`` is accepted only
when it equals the model's (vectors are never truncated).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployments.json_fields import number_field, string_field
from deployments.openai_chat import content_part
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import EmbedderInfo, EmbeddingResult, EmbedItem, TextPart

ENCODING_FORMATS = ("float", "base64")
_INPUT_HELP = "a string, a list of strings, or a list of {'type': 'text' | 'image_url'} items"


@dataclass(frozen=True)
class EmbeddingsRequest:
    items: tuple[EmbedItem, ...]
    encoding_format: str  # "float" | "base64"
    dimensions: int | None  # None: the model's


def parse_embeddings_body(body: Any, limits: Limits) -> EmbeddingsRequest:
    """Raises RequestError naming the bad field (``input``, ``input[2].image_url.url``, ``encoding_format``, ...).

    Data URLs over ``limits.max_image_bytes`` are rejected before their base64 is decoded, and a list
    longer than ``limits.max_embedding_inputs`` before any item is read."""
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    raw = body.get("input")
    if isinstance(raw, str):
        items: tuple[EmbedItem, ...] = (EmbedItem(text=raw),)
    elif isinstance(raw, list) and raw:
        if len(raw) > limits.max_embedding_inputs:
            raise RequestError("input", f"{len(raw)} inputs; at most {limits.max_embedding_inputs} per request "
                                        "are allowed")  # fmt: skip
        items = tuple(_item(value, f"input[{i}]", limits) for i, value in enumerate(raw))
    elif raw is None or raw == []:
        raise RequestError("input", f"is required and must not be empty: {_INPUT_HELP}")
    else:
        raise RequestError("input", f"must be {_INPUT_HELP}, got {type(raw).__name__}")
    encoding_format = string_field(body.get("encoding_format"), "encoding_format", "float")
    if encoding_format not in ENCODING_FORMATS:
        raise RequestError("encoding_format", f"{encoding_format!r} is not supported; use 'float' or 'base64'")
    dimensions = number_field(body.get("dimensions"), "dimensions", int, None)
    if dimensions is not None and dimensions < 1:
        raise RequestError("dimensions", f"must be a positive integer, got {dimensions}")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError("user", "must be a string")
    return EmbeddingsRequest(items, encoding_format, dimensions)


def _item(value: Any, field: str, limits: Limits) -> EmbedItem:
    if isinstance(value, str):
        return EmbedItem(text=value)
    if isinstance(value, dict):
        part = content_part(value, field, limits)
        return EmbedItem(text=part.text) if isinstance(part, TextPart) else EmbedItem(image=part.data)
    if isinstance(value, (int, list)) and not isinstance(value, bool):
        raise RequestError(field, "token ids are not accepted; send the text itself")
    raise RequestError(field, f"must be a string or an object {{'type': 'text' | 'image_url'}}, "
                              f"got {type(value).__name__}")  # fmt: skip


def check_dimensions(dimensions: int | None, info: EmbedderInfo, field: str = "dimensions") -> None:
    """A requested size other than the model's is refused: CLIP vectors are not truncatable (no MRL)."""
    if dimensions is not None and dimensions != info.dimensions:
        raise RequestError(field, f"{dimensions} is not available: {info.model_id!r} embeds into "
                                  f"{info.dimensions} dimensions; omit it or send {info.dimensions}")  # fmt: skip


def embeddings_body(result: EmbeddingResult, encoding_format: str, model: str) -> dict:
    """The OpenAI response: one ``embedding`` object per input, in order, plus usage and Triptych's
    ``cache_hit`` / ``timings_ms``."""
    vectors = result.vectors.numpy().astype("<f4", copy=False)  # (N, D) little-endian float32
    if encoding_format == "base64":
        embeddings: list = [base64.b64encode(row.tobytes()).decode() for row in vectors]
    else:
        embeddings = vectors.astype(np.float64).tolist()  # float32 values, exact as JSON numbers
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        "cache_hit": result.cache_hit,
        "timings_ms": result.timings_ms,
    }
