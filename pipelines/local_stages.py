"""In-process stages: engines behind the pipelines' stage Protocols (``pipelines.stages``), no Ray.

``LocalVisionStage`` with ``pipelines.chat_decoder.ChatDecoder`` (the decoder side, which runs in
the ``LLMDecoder`` replica too) lets ``ChatPipeline`` run in one process (benchmarks, tests,
notebooks). It does what the ``VisionEncoder`` deployment does minus Serve: it decodes the (already
validated) image bytes and encodes a batch of one in a worker thread, so the event loop is never
blocked by compute. ``info()`` returns what the deployment's ``info()`` returns, so cache keys are
the same as in the served pipeline. ``LocalTextEncoderStage`` and ``LocalDenoiserStage`` do the same
for ``TextToImagePipeline``: one prompt, or one request's sampling loop and VAE decode, per worker
thread call (no cross-request batching and no per-step progress events, unlike the ``Denoiser``
deployment).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import torch

from denoisers.engine import DenoiserEngine
from denoisers.text_encoder import TextEncoderEngine
from encoders.engine import VisionEncoderEngine
from encoders.image_io import load_image
from pipelines.timing import StageTimings
from triptych.config import Limits
from triptych.types import GeneratedImages, ImageParams, TextEncoderInfo, VisionFeatures, VisionInfo


class LocalVisionStage:
    """``VisionStage`` over an in-process ``VisionEncoderEngine`` (one image per ``encode`` call)."""

    def __init__(self, engine: VisionEncoderEngine, limits: Limits | None = None):
        self._engine = engine
        self._limits = limits or Limits()
        self.images_encoded = 0

    async def info(self) -> VisionInfo:
        return self._engine.info()

    async def encode(self, image: bytes) -> VisionFeatures:
        return await asyncio.to_thread(self._encode, image)

    def _encode(self, image: bytes) -> VisionFeatures:
        pil = load_image(image, "image", self._limits.max_image_pixels, self._limits.max_image_bytes)
        self.images_encoded += 1
        return self._engine.encode([pil])[0]


class LocalTextEncoderStage:
    """``TextEncoderStage`` over an in-process ``TextEncoderEngine`` (one prompt per worker-thread call)."""

    def __init__(self, engine: TextEncoderEngine):
        self._engine = engine
        self.prompts_encoded = 0

    async def info(self) -> TextEncoderInfo:
        return self._engine.info()

    async def encode(self, text: str, field: str) -> torch.Tensor:
        self.prompts_encoded += 1
        allow_empty = field == "negative_prompt"  # as the TextEncoder deployment: only it may be empty
        return await asyncio.to_thread(self._engine.encode_prompt, text, field=field, allow_empty=allow_empty)


class LocalDenoiserStage:
    """``DenoiserStage`` over an in-process ``DenoiserEngine``: yields one ``GeneratedImages`` per request."""

    def __init__(self, engine: DenoiserEngine):
        self._engine = engine
        self.images_generated = 0

    async def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[GeneratedImages]:
        yield await asyncio.to_thread(self._generate, cond, uncond, params)

    def _generate(self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams) -> GeneratedImages:
        timings = StageTimings()
        with timings.stage("denoise"):
            latents = self._engine.denoise(cond, uncond, params)  # (n, C, h, w)
        with timings.stage("vae_decode"):
            pngs = tuple(_png(image) for image in self._engine.decode(latents))
        self.images_generated += len(pngs)
        return GeneratedImages(pngs, tuple(params.seed + i for i in range(params.n)), timings.ms)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
