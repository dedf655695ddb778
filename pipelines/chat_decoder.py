"""The chat workflow's decoder-side step: features by cache key -> prune -> stream the LLM's deltas.

`ChatDecoder` is what the `LLMDecoder` replica runs (and, in one process, what benchmarks and tests
use as the `DecoderStage`). The ingress sends each image as a `VisualInput`: a cache key, plus the
features themselves only when they may not be cached. So unpruned features are not relayed through
the ingress on a cache hit, and pruning (DivPrune builds an N x N matrix) runs here, next to the
model that needs its output. Every CPU step (cache codec, pruning, prefill, each decode step) runs
off the event loop: the cache codec in the cache's threads, the rest in one worker thread per
request.

A key that is no longer in the cache (evicted, or Redis went down after the ingress looked) raises
`FeaturesNotCached` before the first delta; the ingress then sends the features themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Sequence

import torch

from cache import EmbeddingCache
from decoders.protocol import DecoderEngineProtocol
from encoders.pruning import get_pruner
from pipelines.timing import StageTimings
from triptych.types import DecoderInfo, SamplingParams, TextDelta, VisionFeatures, VisualInput

_DONE = object()


class FeaturesNotCached(LookupError):
    """A `VisualInput` named a cache key whose features the decoder could not read."""

    def __init__(self, key: str):
        super().__init__(f"visual features not in the embedding cache: {key}")
        self.key = key

    def __reduce__(self):  # keep the key when Ray pickles the exception back to the ingress
        return (type(self), (self.key,))


class ChatDecoder:
    """`DecoderStage` over a decoder engine (`LLMEngine`, or the replica's continuous-batching
    `BatchingEngine`) and this process's `EmbeddingCache`."""

    def __init__(self, engine: DecoderEngineProtocol, cache: EmbeddingCache):
        self._engine = engine
        self._cache = cache
        self.images_by_key = 0  # images whose features this stage read from the cache
        self.images_given = 0  # images whose features came with the request

    async def info(self) -> DecoderInfo:
        return self._engine.info()

    async def generate(
        self, prompt_ids: list[int], images: Sequence[VisualInput], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        """Stream the completion; the last delta's `timings_ms` also has `cache` (reads here) and `prune`."""
        timings = StageTimings()
        features = await asyncio.gather(*(self._features(image, timings) for image in images))
        # Pruning, prefill and every decode step run in one worker thread per request (like Serve runs
        # a sync generator): a thread hand-off per token would cost more than it saves.
        out: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        worker = threading.Thread(
            target=self._produce, name="chat-decoder", daemon=True,
            args=(asyncio.get_running_loop(), out, stop, prompt_ids, features, images, params, timings),
        )  # fmt: skip
        worker.start()
        try:
            while (item := await out.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()  # the consumer is done or gone: the worker stops after its current step

    def _produce(self, loop, out, stop, prompt_ids, features, images, params, timings) -> None:
        """The worker thread: prune, then the engine's whole generation; each delta (or the error) to `out`."""

        def send(item) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                stop.set()

        try:
            embeds = _prune(features, images, timings)  # [(K_i, D)]
            deltas = self._engine.generate(prompt_ids, embeds, params)  # validates and embeds eagerly
            try:
                for delta in deltas:
                    if stop.is_set():
                        return
                    if delta.finish_reason is not None:
                        delta = dataclasses.replace(delta, timings_ms={**delta.timings_ms, **timings.ms})
                    send(delta)
            finally:
                deltas.close()  # frees the KV cache now, also when the consumer stopped early
        except Exception as exc:  # noqa: BLE001  raised again on the event loop, for the caller
            send(exc)
            return
        send(_DONE)

    async def _features(self, image: VisualInput, timings: StageTimings) -> VisionFeatures:
        if image.features is not None:
            self.images_given += 1
            return image.features
        with timings.stage("cache"):
            tensors = await self._cache.get(image.key)
        if tensors is None:
            raise FeaturesNotCached(image.key)
        self.images_by_key += 1
        return VisionFeatures.from_tensors(tensors)


def _prune(
    features: Sequence[VisionFeatures], images: Sequence[VisualInput], timings: StageTimings
) -> list[torch.Tensor]:
    """Each image's kept tokens (K_i, D), by its own pruner and budget (runs in a worker thread)."""
    with timings.stage("prune"):
        return [get_pruner(image.pruning_method)(f, image.keep).tokens for f, image in zip(features, images)]
