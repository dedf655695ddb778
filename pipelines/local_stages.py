"""In-process stage adapters: the engines themselves behind the pipeline's stage Protocols (no Ray).

``LocalVisionStage`` and ``LocalDecoderStage`` let ``ChatPipeline`` run in one process over a
``VisionEncoderEngine`` and an ``LLMEngine`` (benchmarks, tests, notebooks). They do what the Serve
deployments do minus Serve: the encoder decodes the (already validated) image bytes and encodes a
batch of one in a worker thread; the decoder advances the engine's generator in a worker thread, one
step per ``next()``, so the event loop is never blocked by compute. ``info()`` returns what the
deployments' ``info()`` returns, so cache keys are the same as in the served pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import torch

from decoders.engine import LLMEngine
from encoders.engine import VisionEncoderEngine
from encoders.image_io import load_image
from triptych.config import Limits
from triptych.types import DecoderInfo, SamplingParams, TextDelta, VisionFeatures, VisionInfo

_DONE = object()


class LocalVisionStage:
    """``VisionStage`` over an in-process ``VisionEncoderEngine`` (one image per ``encode`` call)."""

    def __init__(self, engine: VisionEncoderEngine, limits: Limits | None = None):
        self._engine = engine
        self._limits = limits or Limits()
        self.images_encoded = 0

    async def info(self) -> VisionInfo:
        return VisionInfo.from_fingerprint(self._engine.fingerprint, self._engine.num_visual_tokens)

    async def encode(self, image: bytes) -> VisionFeatures:
        return await asyncio.to_thread(self._encode, image)

    def _encode(self, image: bytes) -> VisionFeatures:
        pil = load_image(image, "image", self._limits.max_image_pixels, self._limits.max_image_bytes)
        self.images_encoded += 1
        return self._engine.encode([pil])[0]


class LocalDecoderStage:
    """``DecoderStage`` over an in-process ``LLMEngine``."""

    def __init__(self, engine: LLMEngine):
        self._engine = engine

    async def info(self) -> DecoderInfo:
        return DecoderInfo(model_id=self._engine.model_id, context_length=self._engine.context_length)

    async def generate(
        self, prompt_ids: list[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        deltas = self._engine.generate(prompt_ids, list(image_embeds), params)  # validates eagerly
        try:
            while (delta := await asyncio.to_thread(next, deltas, _DONE)) is not _DONE:
                yield delta
        finally:
            try:
                deltas.close()  # frees the KV cache now, also when the consumer stopped early
            except ValueError:  # cancelled while a worker thread still runs a step: it ends with it
                pass
