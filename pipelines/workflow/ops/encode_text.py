"""``encode_text``: the diffusion model's text encoder on one prompt, through the embedding cache
under the same key the text-to-image pipeline uses (a workflow can warm it)."""

from __future__ import annotations

from typing import Any

from cache import cache_key, text_payload
from pipelines.cached import cached_stage_call
from pipelines.text_to_image import TEXT_CACHE_STAGE
from pipelines.timing import StageTimings
from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param


async def run(context: OpContext, args: dict[str, Any]):
    encoder, cache = context.need("text_encoder"), context.need("cache")
    text = args["text"]
    info = await encoder.info()
    key = cache_key(TEXT_CACHE_STAGE, info.model_id, info.revision, {"tokenizer": info.tokenizer_id},
                    text_payload(text, info.tokenizer_id))

    async def encode() -> dict:
        return {"embedding": await encoder.encode(text, "text")}

    tensors, hit = await cached_stage_call(cache, key, encode, "text_encode", StageTimings())
    embedding = tensors["embedding"]  # (T, D)
    yield OpOutput({"embedding": embedding, "tokens": int(embedding.shape[0])}, cache_hit=hit)


OP = Operation(
    name="encode_text",
    description="text-encoder embeddings of one prompt (cached; text-to-image reuses them)",
    inputs={"text": param("text", "the prompt", required=True)},
    outputs=outputs(embedding="text_embedding", tokens="int"),
    run=run,
)
