"""DecoderEngineProtocol: what the LLM-decoder deployment needs from its engine (no Serve, no Ray).

``decoders.engine.LLMEngine`` is the implementation; a deployment holds its engine through this
Protocol so another engine fits without Serve code changing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from triptych.types import DecoderInfo, SamplingParams, TextDelta


class DecoderEngineProtocol(Protocol):
    """Prompt ids + per-image visual tokens in, streamed TextDeltas out."""

    def info(self) -> DecoderInfo:
        """Model id and context length."""
        ...

    def generate(
        self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> Iterator[TextDelta]:
        """Stream the completion; ``image_embeds`` holds one (K_i, D) tensor per image, in prompt order."""
        ...
