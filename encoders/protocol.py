"""VisionEngineProtocol: what the vision-encoder deployment needs from its engine (no Serve, no Ray).

``encoders.engine.VisionEncoderEngine`` is the implementation; a deployment holds its engine
through this Protocol so another engine (another device, a compiled tower) fits without Serve code
changing.
"""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from triptych.types import VisionFeatures, VisionInfo


class VisionEngineProtocol(Protocol):
    """Decoded RGB images in, one VisionFeatures per image out, plus the facts cache keys need."""

    def info(self) -> VisionInfo:
        """Model id, revision, preprocessing config and visual tokens per image."""
        ...

    def encode(self, images: list[Image.Image]) -> list[VisionFeatures]:
        """Encode a batch of RGB images; one VisionFeatures (tokens (N, D), cls_attention (N,)) each."""
        ...
