"""VisionEncoderEngine: decoded images in, one VisionFeatures per image out (plain PyTorch, no Serve).

One batched forward per call under ``torch.inference_mode``; results come back on the CPU, each
image's tensors cloned out of the batch so that serialising one never drags the whole batch along.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from triptych.types import VisionFeatures, VisionInfo

from .vision_tower import VisionTower


class VisionEncoderEngine:
    """Runs a VisionTower on batches of RGB PIL images."""

    def __init__(
        self, tower: VisionTower, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.tower = tower.to(device=self.device, dtype=dtype).eval()

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Tower fingerprint plus the compute dtype; everything that changes outputs, for cache keys."""
        return {**self.tower.fingerprint, "dtype": str(self.dtype).removeprefix("torch.")}

    @property
    def num_visual_tokens(self) -> int:
        """N, patch tokens per image before pruning."""
        return self.tower.num_patches

    def info(self) -> VisionInfo:
        """Model id, revision and preprocessing config (from ``fingerprint``) and tokens per image."""
        return VisionInfo.from_fingerprint(self.fingerprint, self.num_visual_tokens)

    def encode(self, images: list[Image.Image]) -> list[VisionFeatures]:
        """Encode RGB images (see ``encoders.image_io.load_image``) in one batch."""
        if not images:
            return []
        pixel_values = torch.stack([self.tower.preprocess(image) for image in images])  # (B, 3, H, W)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            tokens, cls_attention = self.tower(pixel_values)  # (B, N, D), (B, N)
        tokens, cls_attention = tokens.cpu(), cls_attention.float().cpu()
        return [
            VisionFeatures(tokens=tokens[i].clone(), cls_attention=cls_attention[i].clone())  # (N, D), (N,)
            for i in range(len(images))
        ]
