"""`none`: keep every visual token unchanged (keep ratio 1.0 equals no pruning, bit for bit)."""

from __future__ import annotations

from encoders.pruning.base import PrunedTokens, check_keep, keep_all
from triptych.types import VisionFeatures


class IdentityPruner:
    """Returns all N tokens whatever `keep` is (it is still validated: 1 <= keep <= N)."""

    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        check_keep(features, keep)
        return keep_all(features)  # (N, D), the input tensor itself
