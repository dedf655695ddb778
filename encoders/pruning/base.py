"""The pruner protocol, its result type, and helpers every pruner shares.

Contract for every pruner (`pruner(features, keep)`):
- `features.tokens` is (N, D), `features.cls_attention` is (N,); `keep` is an int with 1 <= keep <= N,
  anything else raises ValueError;
- the result holds K = keep tokens (K, D) in the input dtype and their patch positions (K,) int64,
  strictly ascending (spatial order kept);
- keep == N returns the input tokens object itself (bit-identical) with positions arange(N).

Similarity-based pruners compute in at least float32 (`work_dtype`) and cast back at the end.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from triptych.types import VisionFeatures


@dataclass(frozen=True)
class PrunedTokens:
    tokens: torch.Tensor  # (K, D) kept (or merged) tokens in spatial order
    positions: torch.Tensor  # (K,) int64 patch index each kept token sits at, ascending


class Pruner(Protocol):
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        """Reduce features.tokens (N, D) to `keep` tokens (1 <= keep <= N), spatial order kept."""
        ...


def check_keep(features: VisionFeatures, keep: int) -> int:
    """Validate the inputs of a pruner call; returns N. Raises ValueError on a bad shape or budget."""
    tokens, attention = features.tokens, features.cls_attention
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (N, D), got shape {tuple(tokens.shape)}")
    num_tokens = tokens.shape[0]
    if attention.shape != (num_tokens,):
        raise ValueError(f"cls_attention must be ({num_tokens},), got shape {tuple(attention.shape)}")
    if isinstance(keep, bool):  # the contract is one error type, ValueError, for any bad budget
        raise ValueError(f"keep must be an integer, got {keep!r}")  # noqa: TRY004
    try:
        keep = operator.index(keep)
    except TypeError:
        raise ValueError(f"keep must be an integer, got {keep!r}") from None
    if not 1 <= keep <= num_tokens:
        raise ValueError(f"keep must be in [1, {num_tokens}], got {keep}")
    return num_tokens


def keep_all(features: VisionFeatures) -> PrunedTokens:
    """Every token, untouched: the same tensor object (bit-identical), positions arange(N)."""
    tokens = features.tokens  # (N, D)
    return PrunedTokens(tokens=tokens, positions=torch.arange(tokens.shape[0], device=tokens.device))


def select(tokens: torch.Tensor, indices: torch.Tensor) -> PrunedTokens:
    """Keep tokens[indices] (any order, no repeats) in spatial order."""
    positions = indices.to(device=tokens.device, dtype=torch.int64).sort().values  # (K,) ascending
    return PrunedTokens(tokens=tokens[positions], positions=positions)  # (K, D)


def top_by_attention(attention: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (count,) of the `count` largest attention values, highest first.

    Stable sort instead of topk so ties always resolve to the lower patch index (deterministic on any
    device).
    """
    order = torch.sort(attention, descending=True, stable=True).indices  # (N,)
    return order[:count]  # (count,)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype similarity and merging are computed in: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """(M, D) rows scaled to unit L2 norm (all-zero rows stay zero), in work_dtype."""
    return F.normalize(x.to(work_dtype(x.dtype)), dim=-1)
