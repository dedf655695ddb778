"""What a workflow needs from each stage, as Protocols: Serve handles and in-process engines both fit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from denoisers.params import ImageParams
from triptych.types import GeneratedImages, ImageProgress, SamplingParams, TextDelta, VisionFeatures


@dataclass(frozen=True)
class VisionInfo:
    """Static facts about the vision stage, used for cache keys and token budgets."""

    model_id: str
    revision: str
    preprocess: dict
    num_visual_tokens: int

    @classmethod
    def from_fingerprint(cls, fingerprint: dict, num_visual_tokens: int) -> VisionInfo:
        """Split an encoder fingerprint into model id, revision and the preprocessing config."""
        rest = dict(fingerprint)
        return cls(str(rest.pop("model_id")), str(rest.pop("revision")), rest, num_visual_tokens)


@dataclass(frozen=True)
class DecoderInfo:
    model_id: str
    context_length: int


class VisionStage(Protocol):
    async def info(self) -> VisionInfo: ...

    async def encode(self, image: bytes) -> VisionFeatures: ...


class DecoderStage(Protocol):
    async def info(self) -> DecoderInfo: ...

    def generate(
        self, prompt_ids: list[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> AsyncIterator[TextDelta]: ...


@dataclass(frozen=True)
class TextEncoderInfo:
    model_id: str
    revision: str
    tokenizer_id: str


class TextEncoderStage(Protocol):
    async def info(self) -> TextEncoderInfo: ...

    async def encode(self, text: str, field: str) -> torch.Tensor: ...  # (T, D)


class DenoiserStage(Protocol):
    def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[ImageProgress | GeneratedImages]: ...
