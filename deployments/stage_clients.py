"""Adapters from Serve deployment handles to the pipeline's stage Protocols (pipelines/stages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import torch
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from pipelines.chat_decoder import FeaturesNotCached
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


class _Memo:
    """Fetches a stage's static info once per replica (no async __init__)."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._value = None
        self._lock = asyncio.Lock()

    async def get(self):
        async with self._lock:
            if self._value is None:
                self._value = await self._handle.info.remote()
        return self._value


class ServeVisionStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> VisionInfo:
        return await self._info.get()

    async def encode(self, image: bytes) -> VisionFeatures:
        return await self._handle.encode.remote(image)


class ServeDecoderStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> DecoderInfo:
        return await self._info.get()

    async def generate(
        self, prompt_ids: list[int], images: Sequence[VisualInput], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        stream = self._handle.options(stream=True).generate.remote(prompt_ids, list(images), params)
        try:
            async for delta in _cancel_on_exit(stream):
                yield delta
        except RayTaskError as exc:  # the replica's own FeaturesNotCached, so the pipeline can fall back
            if isinstance(exc.cause, FeaturesNotCached):
                raise exc.cause from None
            raise


class ServeTextEncoderStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> TextEncoderInfo:
        return await self._info.get()

    async def encode(self, text: str, field: str) -> torch.Tensor:
        return await self._handle.encode.remote(text, field)


class ServeEmbedderStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> EmbedderInfo:
        return await self._info.get()

    async def embed_texts(self, texts: Sequence[str], fields: Sequence[str]) -> Embeddings:
        return await self._handle.embed_texts.remote(list(texts), list(fields))

    async def embed_images(self, images: Sequence[bytes], fields: Sequence[str]) -> Embeddings:
        return await self._handle.embed_images.remote(list(images), list(fields))


class ServeDenoiserStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle

    async def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[ImageProgress | GeneratedImages]:
        stream = self._handle.options(stream=True).generate.remote(cond, uncond, params)
        async for event in _cancel_on_exit(stream):
            yield event


async def _cancel_on_exit(stream) -> AsyncIterator:
    """Relay a streaming response; if we stop early (the client went away), cancel the remote
    generator so the stage stops its loop instead of computing for nobody."""
    try:
        async for item in stream:
            yield item
    finally:
        stream.cancel()
