"""``select``: the best item by score (argmax) and the top-k ranking, best first."""

from __future__ import annotations

from typing import Any

from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param


async def run(context: OpContext, args: dict[str, Any]):
    items, scores = list(args["items"]), list(args["scores"])
    if len(items) != len(scores):
        raise ValueError(f"{len(items)} items but {len(scores)} scores")
    if not items:
        raise ValueError("nothing to select from: the list of items is empty")
    k = args.get("k", len(items))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # Best first; equal scores keep input order (sorted is stable).
    ranking = sorted(range(len(items)), key=lambda i: -scores[i])[:k]
    best = ranking[0]
    yield OpOutput({"item": items[best], "index": best, "score": scores[best],
                    "items": [items[i] for i in ranking], "indices": ranking})  # fmt: skip


OP = Operation(
    name="select",
    description="argmax of scores over items (item, index, score) and the top k, best first",
    inputs={"items": param("list[T]", "the candidates", required=True),
            "scores": param("list[float]", "one score per item, higher is better", required=True),
            "k": param("int", "how many the ranking keeps (default: all)")},
    outputs=outputs(item="T", index="int", score="float", items="list[T]", indices="list[int]"),
    run=run,
)
