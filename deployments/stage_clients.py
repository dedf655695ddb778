"""Adapters from Serve deployment handles to the pipeline's stage Protocols (pipelines/stages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import torch
from ray.serve.handle import DeploymentHandle

from pipelines.stages import DecoderInfo, VisionInfo
from triptych.types import SamplingParams, TextDelta, VisionFeatures


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
        self, prompt_ids: list[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        stream = self._handle.options(stream=True).generate.remote(prompt_ids, list(image_embeds), params)
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.cancel()  # the client went away or we finished: stop the decoder's loop
