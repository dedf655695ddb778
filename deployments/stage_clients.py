"""Adapters from Serve deployment handles to the pipeline's stage Protocols (pipelines/stages.py).

Every call fails the same ways: a stage with no live replica to take it (one was killed or is being
replaced) raises `StageUnavailableError` (503 / RESOURCE_EXHAUSTED: nothing was sent, a retry is safe),
unless a stream had already produced part of the answer; a stream still running at the request's
deadline (`deployments.deadline`) is cancelled and raises `DeadlineExceeded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.deadline import until_deadline
from pipelines.chat_decoder import FeaturesNotCached
from triptych.errors import StageUnavailableError
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

T = TypeVar("T")
# The replica died or was being replaced when the call reached it; Serve's router drops it and picks a
# live one for the next call.
_REPLICA_GONE = (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError)


async def _answer(call: Awaitable[T], stage: str) -> T:
    """A unary stage call's result; a replica lost under it is `StageUnavailableError`."""
    try:
        return await call
    except _REPLICA_GONE as exc:
        raise StageUnavailableError(f"no {stage} replica could take the request ({type(exc).__name__}); "
                                    "retry") from exc


class _Memo:
    """Fetches a stage's static info once per replica (no async __init__)."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._value = None
        self._lock = asyncio.Lock()

    async def get(self):
        async with self._lock:
            if self._value is None:
                self._value = await _answer(self._handle.info.remote(), self._handle.deployment_id.name)
        return self._value


class ServeVisionStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> VisionInfo:
        return await self._info.get()

    async def encode(self, image: bytes) -> VisionFeatures:
        return await _answer(self._handle.encode.remote(image), "vision encoder")


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
            async for delta in _relayed(stream, "decoder"):
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
        return await _answer(self._handle.encode.remote(text, field), "text encoder")


class ServeEmbedderStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info = _Memo(handle)

    async def info(self) -> EmbedderInfo:
        return await self._info.get()

    async def embed_texts(self, texts: Sequence[str], fields: Sequence[str]) -> Embeddings:
        return await _answer(self._handle.embed_texts.remote(list(texts), list(fields)), "embedder")

    async def embed_images(self, images: Sequence[bytes], fields: Sequence[str]) -> Embeddings:
        return await _answer(self._handle.embed_images.remote(list(images), list(fields)), "embedder")


class ServeDenoiserStage:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle

    async def generate(
        self, cond: torch.Tensor, uncond: torch.Tensor, params: ImageParams
    ) -> AsyncIterator[ImageProgress | GeneratedImages]:
        stream = self._handle.options(stream=True).generate.remote(cond, uncond, params)
        async for event in _relayed(stream, "denoiser"):
            yield event


async def _relayed(stream, stage: str) -> AsyncIterator:
    """Relay a streaming response until the request's deadline. If we stop early (the client went away,
    the deadline passed, an error), cancel the remote generator so the stage stops its loop instead of
    computing for nobody. A replica lost before the first item is `StageUnavailableError`."""
    started = False
    try:
        async for item in until_deadline(stream, stage):
            started = True
            yield item
    except _REPLICA_GONE as exc:
        if started:
            raise
        raise StageUnavailableError(f"no {stage} replica could take the request ({type(exc).__name__}); "
                                    "retry") from exc
    finally:
        stream.cancel()
