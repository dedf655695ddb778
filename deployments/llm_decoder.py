"""`LLMDecoder` deployment: streams TextDeltas from prompt ids + images by cache key (DecoderEngineProtocol).

The replica reads each image's features from the embedding cache and prunes them itself
(`pipelines.chat_decoder.ChatDecoder`), so the ingress relays keys, not unpruned features.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from decoders.batching import BatchingConfig, BatchingEngine
from decoders.protocol import DecoderEngineProtocol
from deployments.cache_server import replica_cache
from deployments.faults import NO_FAULTS, fail_after_first_event, gated_seed, pass_gate
from deployments.metrics import DecoderMetrics
from models import load_language_model
from pipelines.chat_decoder import ChatDecoder
from triptych.config import CacheOptions, DecoderBatching, FaultInjection
from triptych.types import DecoderInfo, SamplingParams, TextDelta, VisualInput


@serve.deployment
class LLMDecoder:
    def __init__(
        self,
        model_path: str,
        batching: DecoderBatching,
        cache: CacheOptions,
        cache_server: DeploymentHandle | None,
        device: str = "cpu",
        faults: FaultInjection = NO_FAULTS,
    ):
        parts = load_language_model(model_path)
        parts.model.to(device)  # the token embeddings are part of the model: they move with it
        # One continuous-batching loop per replica: every request joins the running batch.
        self._metrics = DecoderMetrics()
        self._batching = BatchingEngine(parts, BatchingConfig(**batching.model_dump()), on_admit=self._metrics.queued)
        self._engine: DecoderEngineProtocol = self._batching
        self._chat = ChatDecoder(self._engine, replica_cache(cache, cache_server))
        self._requests = 0
        self._faults = faults

    def info(self) -> DecoderInfo:
        return self._engine.info()

    async def generate(
        self, prompt_ids: list[int], images: list[VisualInput], params: SamplingParams
    ) -> AsyncIterator[TextDelta]:
        # Cache reads, pruning and every model step run in worker threads: the event loop stays free.
        self._requests += 1
        self._metrics.load(self._batching.stats())
        first = True
        try:
            async for delta in self._chat.generate(prompt_ids, images, params):
                yield delta
                if first and delta.text:  # test-only faults (FaultInjection), after the first text
                    first = False
                    fail_after_first_event(self._faults, params.seed, "decoder")
                    await pass_gate(self._faults, gated_seed(self._faults, params.seed))
        finally:
            self._metrics.load(self._batching.stats())

    def stats(self) -> dict[str, int | str]:
        engine = self._batching.stats()
        return {"requests": self._requests, "images_by_key": self._chat.images_by_key,
                "images_given": self._chat.images_given, "running": engine.running, "waiting": engine.waiting,
                "kv_slots_in_use": engine.kv_slots_in_use, "cancelled": engine.cancelled,
                "finished": engine.finished, "replica": serve.get_replica_context().replica_id.unique_id}  # fmt: skip

    def __del__(self):
        self._batching.close()
