"""Visual token pruners, registered by name (the public knob `pruning_method`).

Each pruner takes the cached `VisionFeatures` of one image and a token budget K and returns the K
kept tokens in their original spatial order. Adding a pruner = one new file + one registry line.
"""

from __future__ import annotations

import math

from encoders.pruning.base import PrunedTokens, Pruner
from encoders.pruning.cls_attention import ClsAttentionPruner
from encoders.pruning.divprune import DivPrunePruner
from encoders.pruning.identity import IdentityPruner
from encoders.pruning.tome import ToMePruner
from encoders.pruning.visionzip import VisionZipPruner
from triptych.errors import RequestError

PRUNERS: dict[str, Pruner] = {
    "none": IdentityPruner(),
    "cls_attention": ClsAttentionPruner(),
    "visionzip": VisionZipPruner(),
    "tome": ToMePruner(),
    "divprune": DivPrunePruner(),
}


def get_pruner(name: str, field: str = "pruning_method") -> Pruner:
    """The pruner registered as `name`; unknown names raise RequestError listing the valid ones."""
    try:
        return PRUNERS[name]
    except KeyError:
        raise RequestError(field, f"unknown pruning method {name!r}; valid: {', '.join(sorted(PRUNERS))}") from None


def keep_count(num_tokens: int, keep_ratio: float) -> int:
    """Tokens kept out of num_tokens at keep_ratio in (0, 1]: ceil, at least 1."""
    return max(1, min(num_tokens, math.ceil(num_tokens * keep_ratio - 1e-9)))


__all__ = ["PRUNERS", "PrunedTokens", "Pruner", "get_pruner", "keep_count"]
