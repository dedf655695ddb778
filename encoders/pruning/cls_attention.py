"""`cls_attention` (FasterVLM, arXiv 2412.01818): keep the top-K patches by [CLS] attention.

FasterVLM ranks the patches by the attention of the [CLS] query in the vision encoder's last block
(the one whose output the VLM consumes), averaged over heads, and keeps the top K in spatial order.
Ties resolve to the lower patch index.
"""

from __future__ import annotations

from encoders.pruning.base import PrunedTokens, check_keep, keep_all, select, top_by_attention
from triptych.types import VisionFeatures


class ClsAttentionPruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        num_tokens = check_keep(features, keep)
        if keep == num_tokens:
            return keep_all(features)
        # cls_attention: (N,) [CLS]->patch attention averaged over heads, from the consumed block
        top = top_by_attention(features.cls_attention, keep)  # (K,)
        return select(features.tokens, top)  # (K, D), positions ascending
