"""``encode_image``: the VLM's vision encoder on one image, through the embedding cache under the
same key the chat pipeline uses, so a workflow can warm the cache for the chats that follow."""

from __future__ import annotations

from typing import Any

from cache import cache_key
from pipelines.cached import cached_stage_call
from pipelines.chat import VISION_CACHE_STAGE
from pipelines.timing import StageTimings
from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, outputs, param
from triptych.types import VisionFeatures


async def run(context: OpContext, args: dict[str, Any]):
    vision, cache = context.need("vision"), context.need("cache")
    image = bytes(args["image"])
    info = await vision.info()
    key = cache_key(VISION_CACHE_STAGE, info.model_id, info.revision, info.preprocess, image)

    async def encode() -> dict:
        return (await vision.encode(image)).to_tensors()

    tensors, hit = await cached_stage_call(cache, key, encode, "encode", StageTimings())
    features = VisionFeatures.from_tensors(tensors)
    yield OpOutput({"features": features, "tokens": int(features.tokens.shape[0])}, cache_hit=hit)


OP = Operation(
    name="encode_image",
    description="vision-encoder features of one image (cached; the chat pipeline reuses them)",
    inputs={"image": param("image", "the image", required=True)},
    outputs=outputs(features="vision_features", tokens="int"),
    run=run,
)
