"""In-process vision stage: a ``VisionEncoderEngine`` behind the pipeline's ``VisionStage`` (no Ray).

``LocalVisionStage`` with ``pipelines.chat_decoder.ChatDecoder`` (the decoder side, which runs in
the ``LLMDecoder`` replica too) lets ``ChatPipeline`` run in one process (benchmarks, tests,
notebooks). It does what the ``VisionEncoder`` deployment does minus Serve: it decodes the (already
validated) image bytes and encodes a batch of one in a worker thread, so the event loop is never
blocked by compute. ``info()`` returns what the deployment's ``info()`` returns, so cache keys are
the same as in the served pipeline.
"""

from __future__ import annotations

import asyncio

from encoders.engine import VisionEncoderEngine
from encoders.image_io import load_image
from triptych.config import Limits
from triptych.types import VisionFeatures, VisionInfo


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
