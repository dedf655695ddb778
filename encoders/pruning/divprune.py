"""`divprune` (DivPrune, Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large
Multimodal Models", CVPR 2025): max-min diversity selection.

With the cosine distance d(i, j) = 1 - cos(x_i, x_j) over the N tokens:
1. the first token is the one whose minimum distance to all OTHER tokens is largest;
2. then, until K are chosen, add the unchosen token whose minimum distance to the chosen set is
   largest (ties -> the lower patch index).
The kept tokens are returned unchanged, in position order. No attention is used.

The greedy loop keeps a running (N,) minimum distance to the chosen set, so it is K vectorised
steps of O(N) each after the O(N^2 D) distance matrix, with no host-device sync.

Deviations from the paper / official code, deliberate:
- Not a deviation, noted for symmetry with the other pruners: distances are on the projected
  FEATURES (`VisionFeatures.tokens`), the visual tokens at the LLM input, which is where DivPrune
  computes them too (it needs no keys or attention).
- Already-chosen tokens are masked out of the argmax. The official code relies on their distance
  being 0, so with duplicate tokens it can pick the same index twice; here the K indices are distinct.
"""

from __future__ import annotations

import torch

from encoders.pruning.base import PrunedTokens, check_keep, keep_all, select, unit_rows
from triptych.types import VisionFeatures


def max_min_diverse(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (keep,) of the greedy max-min diverse subset of tokens (N, D), in choice order."""
    num_tokens = tokens.shape[0]
    unit = unit_rows(tokens)  # (N, D)
    distance = 1.0 - unit @ unit.T  # (N, N) cosine distance
    # Minimum distance of each token to all others (itself excluded).
    eye = torch.eye(num_tokens, dtype=torch.bool, device=tokens.device)
    min_distance = distance.masked_fill(eye, float("inf")).min(dim=1).values  # (N,)
    chosen = torch.empty(keep, dtype=torch.int64, device=tokens.device)  # (K,)
    for step in range(keep):
        best = min_distance.argmax()  # () first max on ties
        chosen[step] = best
        if step == 0:  # from now on: min distance to the chosen set
            min_distance = distance[best].clone()  # (N,)
        else:
            min_distance = torch.minimum(min_distance, distance[best])  # (N,)
        min_distance[best] = float("-inf")  # never choose a token twice (stays -inf under minimum)
    return chosen


class DivPrunePruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        num_tokens = check_keep(features, keep)
        if keep == num_tokens:
            return keep_all(features)
        chosen = max_min_diverse(features.tokens, keep)  # (K,)
        return select(features.tokens, chosen)  # (K, D) positions ascending
