"""`TextEncoder` deployment: prompt -> CLIP text embeddings (T, D), for the denoiser stage.

Holds a TextEncoderEngine (through ``TextEncoderEngineProtocol``): the replica loads only the
model's text encoder and tokenizer, never its UNet or VAE.
"""

from __future__ import annotations

import asyncio

import torch
from ray import serve

from denoisers.protocol import TextEncoderEngineProtocol
from denoisers.text_encoder import TextEncoderEngine
from triptych.types import TextEncoderInfo


@serve.deployment
class TextEncoder:
    def __init__(self, model_path: str, device: str = "cpu"):
        self._engine: TextEncoderEngineProtocol = TextEncoderEngine.from_pretrained(model_path, device=device)
        self._prompts_encoded = 0

    def info(self) -> TextEncoderInfo:
        return self._engine.info()

    async def encode(self, text: str, field: str) -> torch.Tensor:
        self._prompts_encoded += 1
        allow_empty = field == "negative_prompt"
        return await asyncio.to_thread(self._engine.encode_prompt, text, field=field, allow_empty=allow_empty)

    def stats(self) -> dict[str, int | str]:
        return {"prompts_encoded": self._prompts_encoded, "replica": serve.get_replica_context().replica_id.unique_id}
