"""Content-addressed cache keys for stage outputs.

A key names everything that determines a stage's output, so equal keys mean interchangeable
values::

    triptych:v1:{stage}:{model_id}@{revision}:{sha256(canonical preprocess json)[:16]}:{sha256(payload)}

Bump `KEY_VERSION` whenever the meaning of a cached value changes (codec layout, what a stage
stores); old entries then simply stop being found and age out by TTL / LRU.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from urllib.parse import quote, unquote

KEY_VERSION = 1
KEY_PREFIX = f"triptych:v{KEY_VERSION}"

# Characters left as-is in the free-text components; ':', '@', '%' and the rest are percent-encoded
# so that no two different (stage, model_id, revision) triples can render to the same key.
_SAFE = "/._-+~"


def cache_key(
    stage: str,
    model_id: str,
    revision: str,
    preprocess: Mapping[str, object],
    payload: bytes,
) -> str:
    """Return the Redis key for one stage output.

    stage:      which stage produced the value, e.g. ``"vision"``.
    model_id:   the model's name or local path, e.g. ``"ViT-B-32"``.
    revision:   what identifies the weights (checkpoint hash, ``"random-seed0"``, ...); change it
                when the weights change.
    preprocess: every setting that changes the output for the same input bytes (image size,
                normalisation, ...). JSON-serialisable; key order does not matter.
    payload:    the exact input bytes: the image file bytes, or `text_payload(...)` for text.

    Raises ValueError for an empty stage/model_id/revision and TypeError for a non-bytes payload or
    a preprocess value JSON cannot represent.
    """
    for arg, value in (("stage", stage), ("model_id", model_id), ("revision", revision)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"cache_key: {arg} must be a non-empty str, got {value!r}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"cache_key: payload must be bytes, got {type(payload).__name__}")
    preprocess_hash = hashlib.sha256(canonical_json(preprocess).encode("utf-8")).hexdigest()[:16]
    payload_hash = hashlib.sha256(payload).hexdigest()
    return (
        f"{KEY_PREFIX}:{quote(stage, safe=_SAFE)}:"
        f"{quote(model_id, safe=_SAFE)}@{quote(revision, safe=_SAFE)}:"
        f"{preprocess_hash}:{payload_hash}"
    )


def canonical_json(value: Mapping[str, object]) -> str:
    """JSON with sorted keys and no whitespace, so equal mappings give equal text.

    Tuples serialise like lists; NaN/inf and non-JSON types raise (ValueError / TypeError).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def text_payload(text: str, tokenizer_id: str) -> bytes:
    """Unambiguous payload bytes for a text input: the tokenizer id and the exact text."""
    return json.dumps([tokenizer_id, text], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def key_stage(key: str) -> str:
    """The stage component of a key made by `cache_key` (``"vision"``, ...); ``"unknown"`` for other keys."""
    parts = key.split(":", 3)
    if len(parts) < 4 or f"{parts[0]}:{parts[1]}" != KEY_PREFIX:
        return "unknown"
    return unquote(parts[2])
