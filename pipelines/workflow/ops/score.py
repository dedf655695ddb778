"""``score``: CLIP similarity of one query embedding against N candidates (cosine = dot product,
the embeddings are L2-normalised)."""

from __future__ import annotations

from typing import Any

import torch

from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param


def stack(embeddings: Any) -> torch.Tensor:
    """A ``list[embedding]`` value as one (N, D) tensor."""
    return embeddings if isinstance(embeddings, torch.Tensor) else torch.stack(list(embeddings))


async def run(context: OpContext, args: dict[str, Any]):
    query = args["query"]  # (D,)
    candidates = stack(args["candidates"])  # (N, D)
    if candidates.shape[-1] != query.shape[-1]:
        raise ValueError(f"query has {query.shape[-1]} dimensions, candidates {candidates.shape[-1]}")
    scores = candidates.float() @ query.float()  # (N,)
    yield OpOutput({"scores": scores.tolist()})


OP = Operation(
    name="score",
    description="cosine similarity of the query embedding with each candidate, in candidate order",
    inputs={"query": param("embedding", "one embedding", required=True),
            "candidates": param("list[embedding]", "N embeddings", required=True)},
    outputs=outputs(scores="list[float]"),
    run=run,
)
