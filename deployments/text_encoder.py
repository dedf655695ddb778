"""`TextEncoder` deployment: prompt -> CLIP text embeddings (T, D), for the denoiser stage."""

from __future__ import annotations

import asyncio

import torch
from ray import serve

from denoisers.engine import DenoiserEngine
from triptych.types import TextEncoderInfo


@serve.deployment
class TextEncoder:
    def __init__(self, model_path: str):
        # Loads the whole SD directory with diffusers' loader, then keeps only the text side.
        engine = DenoiserEngine.from_pretrained(model_path)
        engine.unet = engine.vae = None
        self._engine = engine
        self._prompts_encoded = 0

    def info(self) -> TextEncoderInfo:
        e = self._engine
        return TextEncoderInfo(model_id=e.model_id, revision=e.revision, tokenizer_id=e.tokenizer_id)

    async def encode(self, text: str, field: str) -> torch.Tensor:
        self._prompts_encoded += 1
        allow_empty = field == "negative_prompt"
        return await asyncio.to_thread(self._engine.encode_prompt, text, field=field, allow_empty=allow_empty)

    def stats(self) -> dict[str, int]:
        return {"prompts_encoded": self._prompts_encoded}
