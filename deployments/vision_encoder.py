"""`VisionEncoder` deployment: batched image -> VisionFeatures, holding an engine (VisionEngineProtocol)."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.faults import NO_FAULTS, pass_gate
from encoders.engine import VisionEncoderEngine
from encoders.image_io import load_image
from encoders.protocol import VisionEngineProtocol
from models import load_vision_tower
from triptych.config import BatchOptions, FaultInjection, Limits
from triptych.types import VisionInfo


@serve.deployment
class VisionEncoder:
    def __init__(self, model_path: str, batch: BatchOptions, limits: Limits, device: str = "cpu",
                 faults: FaultInjection = NO_FAULTS):
        self._engine: VisionEngineProtocol = VisionEncoderEngine(load_vision_tower(model_path), device=device)
        self._limits = limits
        self._faults = faults
        self.encode.set_max_batch_size(batch.max_batch_size)
        self.encode.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        self._images_encoded = 0
        self._batches = 0

    def info(self) -> VisionInfo:
        return self._engine.info()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def encode(self, images: list[bytes]) -> list:
        # Images were validated at the edge; decoding again here is cheap next to the ViT.
        pil_images = [
            load_image(data, "image", self._limits.max_image_pixels, self._limits.max_image_bytes)
            for data in images
        ]
        self._images_encoded += len(images)
        self._batches += 1
        await pass_gate(self._faults, self._faults.gate_encoder)
        return await asyncio.to_thread(self._engine.encode, pil_images)

    def stats(self) -> dict[str, int | str]:
        return {"images_encoded": self._images_encoded, "batches": self._batches,
                "replica": serve.get_replica_context().replica_id.unique_id}
