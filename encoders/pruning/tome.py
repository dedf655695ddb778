"""`tome` (Token Merging, Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023).

Bipartite soft matching, applied in rounds to the encoder output until exactly K tokens remain.
One round over the current t tokens (in position order, each with a `size` = patches merged into it):

1. Alternate the tokens into A (even ranks 0, 2, 4, ...) and B (odd ranks 1, 3, ...); |A| = ceil(t/2).
2. Cosine similarity A x B; each A token's best B match (ties -> the earlier B token).
3. Take the r = min(t - K, |A|) A tokens with the most similar matches (ties -> the earlier A token)
   and merge each into its match by size-weighted mean: x_b <- (s_b x_b + sum s_a x_a) / (s_b + sum s_a),
   s_b <- s_b + sum s_a (several A tokens may merge into one B token). A merged token keeps its B
   token's position; unmerged tokens stay bit-identical.
4. The t - r survivors, in position order, are the next round's tokens.

Each round removes r tokens, at most about half, so N -> K takes about log2(N / K) + 1 rounds.

Deviations from the paper, deliberate:
- Similarity is cosine on the projected FEATURES (`VisionFeatures.tokens`), not on the attention keys
  averaged over heads: the embedding cache stores only the tokens and [CLS] attention per image.
- ToMe merges a fixed r per transformer block inside the ViT (and uses proportional attention with
  the sizes); here all merging happens after the encoder, in as many rounds as it takes to reach
  exactly K, the sizes only weight the means, and r is the brief's min(t - K, |A|) rather than
  ToMe's min(r, t // 2) (with an odd t all of A may merge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from encoders.pruning.base import PrunedTokens, check_keep, keep_all, unit_rows, work_dtype
from triptych.types import VisionFeatures


def merge_round(x: torch.Tensor, size: torch.Tensor, positions: torch.Tensor, r: int):
    """One bipartite soft matching round removing r tokens (1 <= r <= ceil(t/2)).

    x (t, D) tokens in work dtype, size (t,), positions (t,) ascending -> the same three, t - r long.
    """
    device = x.device
    t = x.shape[0]
    a_idx = torch.arange(0, t, 2, device=device)  # (|A|,) even ranks
    b_idx = torch.arange(1, t, 2, device=device)  # (|B|,) odd ranks
    num_b = b_idx.shape[0]

    unit = unit_rows(x)  # (t, D)
    scores = unit[a_idx] @ unit[b_idx].T  # (|A|, |B|) cosine similarity
    best_b = scores.argmax(dim=1)  # (|A|,) each A token's best B match (first on ties)
    best_score = scores.gather(1, best_b[:, None]).squeeze(1)  # (|A|,)
    order = torch.sort(best_score, descending=True, stable=True).indices  # (|A|,) most similar first
    src = order[:r]  # (r,) A ranks that merge away
    stay_a = order[r:].sort().values  # (|A| - r,) A ranks that survive, in order

    dst = best_b[src]  # (r,) B ranks they merge into
    into = F.one_hot(dst, num_b).to(x.dtype).T  # (|B|, r) which merged A token goes to which B token
    a_size = size[a_idx][src]  # (r,)
    b_size = size[b_idx]  # (|B|,)
    new_size = b_size + into @ a_size  # (|B|,) sizes add
    weighted = b_size[:, None] * x[b_idx] + into @ (a_size[:, None] * x[a_idx][src])  # (|B|, D)
    received = into.sum(dim=1) > 0  # (|B|,) B tokens that took a merge
    # Size-weighted mean where something merged in; untouched B tokens keep their exact values.
    x_b = torch.where(received[:, None], weighted / new_size[:, None], x[b_idx])  # (|B|, D)

    keep_a = a_idx[stay_a]  # (|A| - r,) ranks in the current sequence
    new_positions = torch.cat([positions[keep_a], positions[b_idx]])  # (t - r,)
    new_x = torch.cat([x[keep_a], x_b])  # (t - r, D)
    new_sizes = torch.cat([size[keep_a], new_size])  # (t - r,)
    order = new_positions.argsort()  # positions are distinct
    return new_x[order], new_sizes[order], new_positions[order]


class ToMePruner:
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        num_tokens = check_keep(features, keep)
        if keep == num_tokens:
            return keep_all(features)
        tokens = features.tokens  # (N, D)
        x = tokens.to(work_dtype(tokens.dtype))  # (t, D) current tokens (means of what merged in)
        size = torch.ones(num_tokens, dtype=x.dtype, device=x.device)  # (t,) patches per token
        positions = torch.arange(num_tokens, device=x.device)  # (t,) ascending
        while x.shape[0] > keep:
            t = x.shape[0]
            r = min(t - keep, (t + 1) // 2)  # |A| = ceil(t / 2)
            x, size, positions = merge_round(x, size, positions, r)
        return PrunedTokens(tokens=x.to(tokens.dtype), positions=positions)  # (K, D), (K,)
