"""In-process embedder stage: a ``ClipEmbedder`` behind the pipeline's ``EmbedderStage`` (no Ray).

``LocalEmbedderStage`` lets ``EmbeddingPipeline`` run in one process (tests, benchmarks, notebooks).
It does what the ``Embedder`` deployment does minus Serve's cross-request batching: validation and
the forward pass run in a worker thread, so the event loop is never blocked by compute, and
``info()`` is the engine's, so cache keys equal the served pipeline's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from encoders.protocol import EmbedderEngineProtocol
from triptych.types import EmbedderInfo, Embeddings


class LocalEmbedderStage:
    """``EmbedderStage`` over an in-process engine; counts the calls and inputs it ran (for tests)."""

    def __init__(self, engine: EmbedderEngineProtocol):
        self._engine = engine
        self.calls = 0
        self.inputs_embedded = 0

    async def info(self) -> EmbedderInfo:
        return self._engine.info()

    async def embed_texts(self, texts: Sequence[str], fields: Sequence[str]) -> Embeddings:
        return await asyncio.to_thread(self._texts, list(texts), list(fields))

    async def embed_images(self, images: Sequence[bytes], fields: Sequence[str]) -> Embeddings:
        return await asyncio.to_thread(self._images, list(images), list(fields))

    def _texts(self, texts: list[str], fields: list[str]) -> Embeddings:
        tokens = self._engine.count_tokens(texts, fields)
        self._count(len(texts))
        return Embeddings(self._engine.embed_texts(texts, fields), tuple(tokens))

    def _images(self, images: list[bytes], fields: list[str]) -> Embeddings:
        vectors = self._engine.embed_decoded(self._engine.decode_images(images, fields))
        self._count(len(images))
        return Embeddings(vectors, (self._engine.info().image_tokens,) * len(images))

    def _count(self, inputs: int) -> None:
        self.calls += 1
        self.inputs_embedded += inputs
