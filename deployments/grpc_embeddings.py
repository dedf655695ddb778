"""gRPC embeddings: EmbedRequest proto -> EmbedItems, and EmbeddingResult -> EmbedResponse proto.

Each input is a ``ContentPart``: ``text``, or ``image`` (raw file bytes); errors name ``inputs[i]``.
"""

from __future__ import annotations

from triptych.errors import RequestError
from triptych.types import EmbeddingResult, EmbedItem
from triptych.v1 import triptych_pb2 as pb

INPUTS_FIELD = "inputs"


def embed_items_from_proto(message: pb.EmbedRequest, max_inputs: int) -> tuple[EmbedItem, ...]:
    """RequestError for more than ``max_inputs`` inputs (before any is read) or an input with neither part."""
    if len(message.inputs) > max_inputs:
        raise RequestError(INPUTS_FIELD, f"{len(message.inputs)} inputs; at most {max_inputs} per request are allowed")
    items = []
    for index, part in enumerate(message.inputs):
        kind = part.WhichOneof("part")
        if kind is None:
            raise RequestError(f"{INPUTS_FIELD}[{index}]", "must set text or image")
        items.append(EmbedItem(text=part.text) if kind == "text" else EmbedItem(image=part.image))
    return tuple(items)


def embed_response_to_proto(result: EmbeddingResult, model: str) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=row) for row in result.vectors.tolist()],
        timings_ms=result.timings_ms,
        model=model,
        prompt_tokens=result.prompt_tokens,
        cache_hit=result.cache_hit,
    )
