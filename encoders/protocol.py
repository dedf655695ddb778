"""VisionEngineProtocol / EmbedderEngineProtocol: what the vision-encoder and embedder deployments
need from their engines (no Serve, no Ray).

``encoders.engine.VisionEncoderEngine`` and ``encoders.clip_embedder.ClipEmbedder`` are the
implementations; a deployment holds its engine through its Protocol so another engine (another
device, a compiled tower) fits without Serve code changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from PIL import Image

from triptych.types import EmbedderInfo, VisionFeatures, VisionInfo


class VisionEngineProtocol(Protocol):
    """Decoded RGB images in, one VisionFeatures per image out, plus the facts cache keys need."""

    def info(self) -> VisionInfo:
        """Model id, revision, preprocessing config and visual tokens per image."""
        ...

    def encode(self, images: list[Image.Image]) -> list[VisionFeatures]:
        """Encode a batch of RGB images; one VisionFeatures (tokens (N, D), cls_attention (N,)) each."""
        ...


class EmbedderEngineProtocol(Protocol):
    """Texts and images in, L2-normalised vectors (N, D) in one joint space out."""

    def info(self) -> EmbedderInfo:
        """Model id, revision, dimensions, context length, image tokens, preprocessing."""
        ...

    def count_tokens(self, texts: Sequence[str], fields: Sequence[str] | None = None) -> list[int]:
        """Tokens per text; RequestError naming the field for a non-string, empty or too-long text."""
        ...

    def decode_images(self, images: Sequence[bytes], fields: Sequence[str] | None = None) -> list[Image.Image]:
        """Validated RGB images; RequestError naming the field for bytes that are not an allowed image."""
        ...

    def embed_texts(self, texts: Sequence[str], fields: Sequence[str] | None = None) -> torch.Tensor:
        """(N, D) float32 unit vectors."""
        ...

    def embed_images(self, images: Sequence[bytes], fields: Sequence[str] | None = None) -> torch.Tensor:
        """(N, D) float32 unit vectors of image file bytes."""
        ...

    def embed_decoded(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) float32 unit vectors of images from ``decode_images``."""
        ...
