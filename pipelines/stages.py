"""What a workflow needs from each stage, as Protocols: Serve handles and in-process engines both fit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import torch

from triptych.types import (
    DecoderInfo,
    EmbedderInfo,
    Embeddings,
    GeneratedImages,
    ImageParams,
    ImageProgress,
    SamplingParams,
    TextDelta,
    TextEncoderInfo,
    VisionFeatures,
    VisionInfo,
    VisualInput,
)


class VisionStage(Protocol):
    async def info(self) -> VisionInfo: ...

    async def encode(self, image: bytes) -> VisionFeatures: ...


class DecoderStage(Protocol):
    async def info(self) -> DecoderInfo: ...

    def generate(
        self, prompt_ids: list[int], images: Sequence[VisualInput], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        """Stream the completion; each image is read by cache key (or given) and pruned by the stage.

        Raises `pipelines.chat_decoder.FeaturesNotCached` before the first delta when a key misses."""
        ...


class TextEncoderStage(Protocol):
    async def info(self) -> TextEncoderInfo: ...

    async def encode(self, text: str, field: str) -> torch.Tensor: ...  # (T, D)


class DenoiserStage(Protocol):
    def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[ImageProgress | GeneratedImages]: ...


class EmbedderStage(Protocol):
    """Joint image-text embeddings; ``fields`` name each input in errors (RequestError)."""

    async def info(self) -> EmbedderInfo: ...

    async def embed_texts(self, texts: Sequence[str], fields: Sequence[str]) -> Embeddings: ...

    async def embed_images(self, images: Sequence[bytes], fields: Sequence[str]) -> Embeddings: ...
