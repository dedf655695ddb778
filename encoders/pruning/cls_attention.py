"""`cls_attention` (FasterVLM, arXiv 2412.01818): keep the top-K patches by [CLS] attention."""

from __future__ import annotations

from encoders.pruning.base import PrunedTokens
from triptych.types import VisionFeatures


class ClsAttentionPruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        # cls_attention: (N,) [CLS]->patch attention averaged over heads, from the consumed block
        top = features.cls_attention.topk(keep).indices  # (K,)
        positions = top.sort().values  # (K,) back to spatial order
        return PrunedTokens(tokens=features.tokens[positions], positions=positions)  # (K, D)
