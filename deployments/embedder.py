"""`Embedder` deployment: joint image-text embeddings, batched across requests with `@serve.batch`.

Holds a ClipEmbedder (through ``EmbedderEngineProtocol``). Each call (one request's texts, or its
images) is checked first in a worker thread: token counts, or the images decoded with their field
names, so a bad input fails only its own request. The checked calls that arrive together are then
merged into one forward pass per kind (all their texts, all their images) and split back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import torch
from ray import serve

from deployments.metrics import EmbedderMetrics
from encoders.clip_embedder import ClipEmbedder
from encoders.protocol import EmbedderEngineProtocol
from triptych.config import BatchOptions, Limits
from triptych.types import EmbedderInfo, Embeddings


@dataclass(frozen=True)
class _Job:
    kind: str  # "text" | "image"
    inputs: list  # texts, or RGB images from decode_images


@serve.deployment
class Embedder:
    def __init__(self, model_path: str, batch: BatchOptions, limits: Limits, device: str = "cpu"):
        self._engine: EmbedderEngineProtocol = ClipEmbedder.from_dir(model_path, device=device, limits=limits)
        self._embed_batch.set_max_batch_size(batch.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        self._metrics = EmbedderMetrics()
        self._embedded = {"text": 0, "image": 0}
        self._forwards = 0

    def info(self) -> EmbedderInfo:
        return self._engine.info()

    async def embed_texts(self, texts: list[str], fields: list[str]) -> Embeddings:
        tokens = await asyncio.to_thread(self._engine.count_tokens, texts, fields)
        return Embeddings(await self._embed_batch(_Job("text", list(texts))), tuple(tokens))

    async def embed_images(self, images: list[bytes], fields: list[str]) -> Embeddings:
        decoded = await asyncio.to_thread(self._engine.decode_images, images, fields)
        vectors = await self._embed_batch(_Job("image", decoded))
        return Embeddings(vectors, (self._engine.info().image_tokens,) * len(images))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, jobs: list[_Job]) -> list[torch.Tensor]:
        return await asyncio.to_thread(self._forward, jobs)

    def _forward(self, jobs: list[_Job]) -> list[torch.Tensor]:
        """One forward per kind over every job's inputs; each job gets its own rows (N_job, D)."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(jobs)
        for kind, embed in (("text", self._engine.embed_texts), ("image", self._engine.embed_decoded)):
            members = [i for i, job in enumerate(jobs) if job.kind == kind]
            if not members:
                continue
            vectors = embed([x for i in members for x in jobs[i].inputs])  # (sum of N_job, D)
            start = 0
            for i in members:
                count = len(jobs[i].inputs)
                out[i] = vectors[start : start + count].clone()  # its own storage: pickled alone
                start += count
            self._forwards += 1
            self._embedded[kind] += start
            self._metrics.embedded(kind, start)
        return out

    def stats(self) -> dict[str, int]:
        return {"texts_embedded": self._embedded["text"], "images_embedded": self._embedded["image"],
                "forwards": self._forwards}  # fmt: skip
