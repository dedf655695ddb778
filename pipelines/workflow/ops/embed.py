"""``embed``: joint image-text (CLIP) embeddings of texts and/or images, through the embedding cache.

Exactly one of the inputs: one ``text``, ``image`` or ``item`` (a text or an image), or a list of
``texts``, ``images`` or ``items``. ``embedding`` is the first vector (the only one for a single
input), ``embeddings`` all of them in input order, as one (N, D) tensor.
"""

from __future__ import annotations

from typing import Any

from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param
from triptych.types import EmbedItem

SINGLE = ("text", "image", "item")
LISTS = ("texts", "images", "items")


def embed_items(args: dict[str, Any]) -> tuple[str, list[EmbedItem]]:
    """(the name of the one given input, its values as EmbedItems)."""
    name = next(name for name in (*SINGLE, *LISTS) if name in args)
    values = list(args[name]) if name in LISTS else [args[name]]
    return name, [EmbedItem(text=value) if isinstance(value, str) else EmbedItem(image=bytes(value))
                  for value in values]  # fmt: skip


async def run(context: OpContext, args: dict[str, Any]):
    pipeline = context.need("embeddings")
    name, items = embed_items(args)
    result = await pipeline.embed(items, field=name)  # a bad item's error names images[2]
    yield result  # the EmbeddingResult (usage, timings) for the embeddings APIs
    vectors = result.vectors  # (N, D), L2-normalised
    yield OpOutput({"embedding": vectors[0], "embeddings": vectors}, cache_hit=result.cache_hit)


OP = Operation(
    name="embed",
    description="CLIP embeddings in the joint image-text space (L2-normalised)",
    inputs={
        "text": param("text", "one text"),
        "image": param("image", "one image"),
        "item": param("text | image", "one text or image"),
        "texts": param("list[text]", "texts"),
        "images": param("list[image]", "images"),
        "items": param("list[text | image]", "texts and images, mixed"),
    },
    outputs=outputs(embedding="embedding", embeddings="list[embedding]"),
    run=run,
    one_of=(*SINGLE, *LISTS),
)
