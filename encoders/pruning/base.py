"""The pruner protocol and its result type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from triptych.types import VisionFeatures


@dataclass(frozen=True)
class PrunedTokens:
    tokens: torch.Tensor  # (K, D) kept (or merged) tokens in spatial order
    positions: torch.Tensor  # (K,) int64 patch index each kept token sits at, ascending


class Pruner(Protocol):
    def __call__(self, features: VisionFeatures, keep: int) -> PrunedTokens:
        """Reduce features.tokens (N, D) to `keep` tokens (1 <= keep <= N), spatial order kept."""
        ...
