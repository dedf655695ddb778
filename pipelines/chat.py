"""Image-text chat workflow: decode inputs -> cache lookup -> encode misses -> prune -> decode.

Runs inside the ingress replica with stage clients (Serve handles in production, in-process
engines in tests and benchmarks). Yields `TextDelta`s as the decoder produces them, then one
`ChatUsage`. Request errors (context overflow) are raised before the first delta.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cache import EmbeddingCache, cache_key
from decoders.chat_template import ChatPromptBuilder
from decoders.context import check_fits
from encoders.pruning import get_pruner, keep_count
from pipelines.cached import cached_stage_call
from pipelines.chat_request import ChatRequest
from pipelines.stages import DecoderStage, VisionStage
from pipelines.timing import StageTimings
from triptych.errors import RequestError
from triptych.types import ChatUsage, TextDelta, VisionFeatures, VisionInfo

VISION_CACHE_STAGE = "vision"


class ChatPipeline:
    """One orchestration path for chat requests, whatever API they came from."""

    def __init__(
        self,
        vision: VisionStage,
        decoder: DecoderStage,
        cache: EmbeddingCache,
        prompt_builder: ChatPromptBuilder,
    ):
        self._vision = vision
        self._decoder = decoder
        self._cache = cache
        self._prompt_builder = prompt_builder

    async def run(self, request: ChatRequest) -> AsyncIterator[TextDelta | ChatUsage]:
        timings = StageTimings()
        vision_info, decoder_info = await asyncio.gather(self._vision.info(), self._decoder.info())
        images = request.images
        tokens_in = vision_info.num_visual_tokens
        tokens_kept = _visual_budget(request, tokens_in)

        prompt_ids = self._prompt_builder.build(request.messages, [tokens_kept] * len(images))
        check_fits(len(prompt_ids), request.sampling.max_tokens, decoder_info.context_length,
                   decoder_info.model_id, visual_tokens=len(images) * tokens_kept)

        looked_up = await asyncio.gather(*(self._features(image, vision_info, timings) for image in images))
        with timings.stage("prune"):
            pruner = get_pruner(request.pruning_method)
            embeds = [pruner(features, tokens_kept).tokens for features, _ in looked_up]  # [(K, D)]

        completion_tokens = 0
        async for delta in self._decoder.generate(prompt_ids, embeds, request.sampling):
            completion_tokens = delta.completion_tokens
            for stage, value in delta.timings_ms.items():
                timings.add(stage, value)
            yield delta
        yield ChatUsage(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            visual_tokens_in=tokens_in * len(images),
            visual_tokens_kept=tokens_kept * len(images),
            cache_hit=bool(looked_up) and all(hit for _, hit in looked_up),
            timings_ms=timings.ms,
        )

    async def _features(
        self, image: bytes, info: VisionInfo, timings: StageTimings
    ) -> tuple[VisionFeatures, bool]:
        """Cached features of one image; the encoder runs only on a miss (once per key per replica)."""
        key = cache_key(VISION_CACHE_STAGE, info.model_id, info.revision, info.preprocess, image)

        async def encode() -> dict:
            return (await self._vision.encode(image)).to_tensors()

        tensors, hit = await cached_stage_call(self._cache, key, encode, "encode", timings)
        return VisionFeatures.from_tensors(tensors), hit


def _visual_budget(request: ChatRequest, tokens_in: int) -> int:
    """Visual tokens kept per image: all for `none`, else the absolute count or the keep ratio."""
    if request.pruning_method == "none":
        return tokens_in
    if request.visual_token_count is not None:
        if request.visual_token_count > tokens_in:
            raise RequestError(
                "visual_token_count", f"{request.visual_token_count} exceeds the {tokens_in} visual tokens per image"
            )
        return request.visual_token_count
    return keep_count(tokens_in, request.visual_token_keep_ratio)
