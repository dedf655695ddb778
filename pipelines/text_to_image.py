"""Text-to-image workflow: prompt -> cached text embeddings -> denoise (progress) -> images.

Same shape as the chat workflow: stage clients behind Protocols, the embedding cache between
stages (keyed by text encoder, tokenizer and the exact prompt), typed events out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import torch

from cache import EmbeddingCache, cache_key, text_payload
from pipelines.cached import cached_stage_call
from pipelines.image_request import ImageRequest
from pipelines.stages import DenoiserStage, TextEncoderStage
from pipelines.timing import StageTimings
from triptych.types import GeneratedImages, ImageProgress, ImageResult, TextEncoderInfo

TEXT_CACHE_STAGE = "text"


class TextToImagePipeline:
    def __init__(self, text_encoder: TextEncoderStage, denoiser: DenoiserStage, cache: EmbeddingCache):
        self._text_encoder = text_encoder
        self._denoiser = denoiser
        self._cache = cache

    async def run(self, request: ImageRequest) -> AsyncIterator[ImageProgress | ImageResult]:
        timings = StageTimings()
        info = await self._text_encoder.info()
        (cond, cond_hit), (uncond, uncond_hit) = await asyncio.gather(
            self._embedding(request.prompt, "prompt", info, timings),
            self._embedding(request.negative_prompt, "negative_prompt", info, timings),
        )
        images: GeneratedImages | None = None
        async for event in self._denoiser.generate(cond, uncond, request.params):
            if isinstance(event, ImageProgress):
                yield event
            else:
                images = event
        if images is None:
            raise RuntimeError("the denoiser stage ended without images")
        for stage, ms in images.timings_ms.items():
            timings.add(stage, ms)
        yield ImageResult(images.pngs, images.seeds, cond_hit and uncond_hit, timings.ms)

    async def _embedding(
        self, text: str, field: str, info: TextEncoderInfo, timings: StageTimings
    ) -> tuple[torch.Tensor, bool]:
        key = cache_key(TEXT_CACHE_STAGE, info.model_id, info.revision, {"tokenizer": info.tokenizer_id},
                        text_payload(text, info.tokenizer_id))

        async def encode() -> dict[str, torch.Tensor]:
            return {"embedding": await self._text_encoder.encode(text, field)}

        tensors, hit = await cached_stage_call(self._cache, key, encode, "text_encode", timings)
        return tensors["embedding"], hit  # (T, D)
