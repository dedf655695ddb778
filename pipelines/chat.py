"""Image-text chat workflow: prompt + cache keys -> ensure features are cached -> decode (prunes there).

Runs inside the ingress replica with stage clients (Serve handles in production, in-process
engines in tests and benchmarks). Yields `TextDelta`s as the decoder produces them, then one
`ChatUsage`. Request errors (context overflow) are raised before any stage runs.

The ingress does no CPU work on its event loop: templating, tokenization and the images' content
hashes run in a worker thread; the cache codec runs in the cache's threads. It only makes sure each
image's features are in the cache (single flight per key: the encoder runs once per new image) and
sends the decoder stage the key; the decoder reads the features and prunes them itself
(`pipelines.chat_decoder`). Only features the cache may not hold (just encoded, cache disabled or
down) travel as tensors, and if the decoder still cannot read a key (evicted, Redis lost since), the
ingress sends that request once more with the tensors: the cache is never the source of truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

from cache import EmbeddingCache, cache_key
from decoders.chat_template import ChatPromptBuilder
from decoders.context import check_fits
from encoders.pruning import keep_count
from pipelines.cached import cached_stage_call
from pipelines.chat_decoder import FeaturesNotCached
from pipelines.chat_request import ChatRequest
from pipelines.stages import DecoderStage, VisionStage
from pipelines.timing import StageTimings
from triptych.errors import RequestError
from triptych.types import ChatUsage, TextDelta, VisionFeatures, VisionInfo, VisualInput

VISION_CACHE_STAGE = "vision"
logger = logging.getLogger(__name__)


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

        prompt_ids, keys = await asyncio.to_thread(self._prepare, request, vision_info, tokens_kept)
        check_fits(
            len(prompt_ids),
            request.sampling.max_tokens,
            decoder_info.context_length,
            decoder_info.model_id,
            visual_tokens=len(images) * tokens_kept,
        )

        ensured = await asyncio.gather(
            *(self._ensure(image, key, timings) for image, key in zip(images, keys))
        )
        visuals = [VisualInput(key, request.pruning_method, tokens_kept, features)
                   for key, (features, _) in zip(keys, ensured)]  # fmt: skip
        cache_hit = bool(ensured) and all(hit for _, hit in ensured)

        deltas = self._decoder.generate(prompt_ids, visuals, request.sampling)
        try:
            first = await anext(deltas)
        except FeaturesNotCached as exc:
            logger.warning("decoder could not read %s from the cache; sending the features instead", exc.key)
            given = await asyncio.gather(
                *(self._given(visual, image, timings) for visual, image in zip(visuals, images))
            )
            visuals = [visual for visual, _ in given]
            cache_hit = cache_hit and all(hit for _, hit in given)
            deltas = self._decoder.generate(prompt_ids, visuals, request.sampling)
            first = await anext(deltas)

        completion_tokens = 0
        delta: TextDelta | None = first
        while delta is not None:
            completion_tokens = delta.completion_tokens
            for stage, value in delta.timings_ms.items():
                timings.add(stage, value)
            yield delta
            delta = await anext(deltas, None)
        yield ChatUsage(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            visual_tokens_in=tokens_in * len(images),
            visual_tokens_kept=tokens_kept * len(images),
            cache_hit=cache_hit,
            timings_ms=timings.ms,
        )

    def _prepare(
        self, request: ChatRequest, info: VisionInfo, tokens_kept: int
    ) -> tuple[list[int], list[str]]:
        """Prompt ids (templating + tokenization) and each image's cache key (SHA-256 of its bytes):
        CPU work, run in a worker thread."""
        prompt_ids = self._prompt_builder.build(request.messages, [tokens_kept] * len(request.images))
        keys = [cache_key(VISION_CACHE_STAGE, info.model_id, info.revision, info.preprocess, image)
                for image in request.images]  # fmt: skip
        return prompt_ids, keys

    async def _ensure(
        self, image: bytes, key: str, timings: StageTimings
    ) -> tuple[VisionFeatures | None, bool]:
        """(None, True) when the features are cached (the decoder reads them by key), else the freshly
        encoded features (the encoder runs once per key per replica), stored for later requests."""
        tensors, hit = await cached_stage_call(
            self._cache, key, self._encoder(image), "encode", timings, read=False
        )
        return (None if tensors is None else VisionFeatures.from_tensors(tensors)), hit

    async def _given(
        self, visual: VisualInput, image: bytes, timings: StageTimings
    ) -> tuple[VisualInput, bool]:
        """`visual` with its features in it (the fallback): read here from the cache, or encoded."""
        if visual.features is not None:
            return visual, False
        tensors, hit = await cached_stage_call(
            self._cache, visual.key, self._encoder(image), "encode", timings
        )
        return dataclasses.replace(visual, features=VisionFeatures.from_tensors(tensors)), hit

    def _encoder(self, image: bytes):
        async def encode() -> dict:
            return (await self._vision.encode(image)).to_tensors()

        return encode


def _visual_budget(request: ChatRequest, tokens_in: int) -> int:
    """Visual tokens kept per image: all for `none`, else the absolute count or the keep ratio."""
    if request.pruning_method == "none":
        return tokens_in
    if request.visual_token_count is not None:
        if request.visual_token_count > tokens_in:
            raise RequestError(
                "visual_token_count",
                f"{request.visual_token_count} exceeds the {tokens_in} visual tokens per image",
            )
        return request.visual_token_count
    return keep_count(tokens_in, request.visual_token_keep_ratio)
