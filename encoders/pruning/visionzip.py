"""`visionzip` (VisionZip, Yang et al., arXiv 2412.04467): dominant + contextual visual tokens.

The budget K is split into K_d dominant and K_c contextual tokens in the paper's 54:10 ratio (its
64-token setting; 108:20 at 128 and 162:30 at 192 follow the same ratio):
K_c = max(1, round_half_up(K * 10 / 64)) for K >= 2, K_c = 0 for K == 1; K_d = K - K_c.

1. Dominant: the K_d patches with the highest [CLS] attention (ties -> lower patch index).
2. Contextual: the R = N - K_d remaining patches, in spatial order, are split into K_c targets taken
   uniformly every `step = R // K_c` (remaining indices 0, step, 2*step, ..., as in the official code)
   and the other R - K_c tokens. Each other token joins the target it is most similar to (cosine
   similarity; ties -> the earlier target), and each target is replaced by the mean of its group,
   itself included.

Each dominant token sits at its own position, each contextual token at its target's position; the
output is in position order.

Deviations from the paper / official code, both deliberate:
- Similarity uses cosine on the projected FEATURES (`VisionFeatures.tokens`), not on the attention
  keys of the vision encoder as the paper does: the embedding cache stores only the tokens and the
  [CLS] attention per image, so that one cache entry serves every method and ratio.
- The contextual token is the plain mean of its group with the target included, as the paper
  describes ("merge ... by averaging"). The official code instead adds the target to the mean of the
  tokens assigned to it (target + mean(others)), which is not an average; we follow the description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from encoders.pruning.base import PrunedTokens, check_keep, keep_all, top_by_attention, unit_rows, work_dtype
from triptych.types import VisionFeatures

# The paper's split for 64 tokens: 54 dominant + 10 contextual.
_CONTEXTUAL, _TOTAL = 10, 64


def contextual_count(keep: int) -> int:
    """K_c for a budget of `keep` tokens: the paper's 10/64 share, at least 1 when keep >= 2."""
    if keep < 2:
        return 0
    return max(1, (keep * _CONTEXTUAL * 2 + _TOTAL) // (_TOTAL * 2))  # round half up, integer math


class VisionZipPruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        num_tokens = check_keep(features, keep)
        if keep == num_tokens:
            return keep_all(features)
        tokens = features.tokens  # (N, D)
        device = tokens.device
        num_contextual = contextual_count(keep)  # K_c
        num_dominant = keep - num_contextual  # K_d >= 1

        # 1. Dominant tokens by [CLS] attention.
        dominant = top_by_attention(features.cls_attention, num_dominant).to(device)  # (K_d,)
        if num_contextual == 0:
            positions = dominant.sort().values  # (K,)
            return PrunedTokens(tokens=tokens[positions], positions=positions)

        # 2. Contextual tokens from the rest, in spatial order.
        is_rest = torch.ones(num_tokens, dtype=torch.bool, device=device)
        is_rest[dominant] = False
        rest = is_rest.nonzero().squeeze(1)  # (R,) patch positions, ascending; R > K_c since K < N
        num_rest = rest.shape[0]
        step = num_rest // num_contextual  # >= 1
        target_slots = torch.arange(num_contextual, device=device) * step  # (K_c,) indices into rest

        rest_tokens = tokens[rest].to(work_dtype(tokens.dtype))  # (R, D)
        unit = unit_rows(rest_tokens)  # (R, D)
        similarity = unit @ unit[target_slots].T  # (R, K_c) cosine of every rest token to every target
        group = similarity.argmax(dim=1)  # (R,) target each token joins (first max on ties)
        # A target always joins its own group (not left to argmax, which could tie on duplicates).
        group[target_slots] = torch.arange(num_contextual, device=device)
        members = F.one_hot(group, num_contextual).to(rest_tokens.dtype)  # (R, K_c) one-hot membership
        sums = members.T @ rest_tokens  # (K_c, D) deterministic (no atomics), unlike index_add_ on GPU
        counts = members.sum(dim=0)  # (K_c,) >= 1: the target itself
        contextual = (sums / counts[:, None]).to(tokens.dtype)  # (K_c, D) group means

        # Dominant tokens at their own positions, contextual ones at their targets'; spatial order.
        positions = torch.cat([dominant, rest[target_slots]])  # (K,)
        merged = torch.cat([tokens[dominant], contextual])  # (K, D)
        order = positions.argsort()  # (K,) positions are distinct
        return PrunedTokens(tokens=merged[order], positions=positions[order])
