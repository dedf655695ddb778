"""What the text-to-image deployments need from their engines, as Protocols (no Serve, no Ray).

``TextEncoderEngineProtocol`` (implemented by ``denoisers.text_encoder.TextEncoderEngine``) serves
the TextEncoder deployment; ``DenoiserEngineProtocol`` (``denoisers.engine.DenoiserEngine``) the
Denoiser deployment. Deployments hold engines through these so another engine fits without Serve
code changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from PIL import Image

from triptych.types import TextEncoderInfo

from .engine import DenoiseCancelled, DenoiseJob


class TextEncoderEngineProtocol(Protocol):
    """Prompt text in, text embeddings (T, D) out, plus the facts prompt-embedding cache keys need."""

    def info(self) -> TextEncoderInfo:
        """Model id, text encoder revision, tokenizer id."""
        ...

    def encode_prompt(self, text: str, *, field: str = "prompt", allow_empty: bool = False) -> torch.Tensor:
        """(T, D) embeddings; RequestError(field) for an empty (unless allowed) or too-long prompt."""
        ...


class DenoiserEngineProtocol(Protocol):
    """Batched sampling of latents from text embeddings, and VAE decoding of them."""

    def denoise_batch(self, jobs: Sequence[DenoiseJob]) -> list[torch.Tensor | DenoiseCancelled]:
        """Per job: latents (n, C, h, w) or the DenoiseCancelled its ``on_step`` asked for.

        Jobs must share ``denoisers.engine.batch_key`` of their params.
        """
        ...

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents (n, C, h, w) -> n RGB images."""
        ...
