"""`none`: keep every visual token unchanged (keep ratio 1.0 equals no pruning, bit for bit)."""

from __future__ import annotations

import torch

from encoders.pruning.base import PrunedTokens
from triptych.types import VisionFeatures


class IdentityPruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        num_tokens = features.tokens.shape[0]
        return PrunedTokens(tokens=features.tokens, positions=torch.arange(num_tokens))
