"""Triptych's Prometheus metrics, defined once: names, labels and buckets (modelled on vLLM's).

Recorded through ``ray.serve.metrics`` inside the replicas; Ray's metrics agent exports them with a
``ray_`` prefix and the ``deployment`` / ``replica`` / ``application`` tags, beside Serve's own
``ray_serve_*`` metrics (``triptych serve --metrics-port PORT`` -> ``http://127.0.0.1:PORT/metrics``).
Each deployment builds the recorder it needs in its constructor: `RequestMetrics` (the ingress),
`DecoderMetrics` (the LLMDecoder), `DenoiserMetrics`, `EmbedderMetrics`, and `CacheMetrics` (every
replica's EmbeddingCache observer, labelled by the cache key's stage: ``vision``, ``text``, ``clip_text``,
``clip_image``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from ray.serve.metrics import Counter, Gauge, Histogram

from cache.keys import key_stage
from decoders.batching import BatchingStats
from triptych.types import ChatUsage, ImageResult, TextDelta

# Seconds; vLLM's boundaries, cut at two minutes.
LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                     10.0, 20.0, 40.0, 80.0, 120.0]  # fmt: skip
TOKEN_LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                           1.0, 2.5, 5.0]  # fmt: skip
CACHE_EVENTS = ("hits", "misses", "errors")  # EmbeddingCache counters exported (not `coalesced`)


def _positive(counter: Counter, value: float) -> None:
    """Ray counters refuse an increment of 0."""
    if value > 0:
        counter.inc(value)


class RequestMetrics:
    """Per-request latencies and token counts, recorded where requests end: the ingress."""

    def __init__(self):
        self.ttft = Histogram("triptych_time_to_first_token_seconds", description="Chat: request start to first text.",
                              boundaries=LATENCY_BUCKETS_S)  # fmt: skip
        self.itl = Histogram("triptych_inter_token_latency_seconds", description="Chat: between text deltas.",
                             boundaries=TOKEN_LATENCY_BUCKETS_S)  # fmt: skip
        self.e2e = Histogram("triptych_e2e_request_latency_seconds",
                             description="Request start to its last event, by kind (chat, image).",
                             boundaries=LATENCY_BUCKETS_S, tag_keys=("kind",))  # fmt: skip
        self.prompt = Counter("triptych_prompt_tokens_total", description="Chat prompt tokens (with visual).")
        self.generation = Counter("triptych_generation_tokens_total", description="Chat tokens generated.")
        self.visual_in = Counter("triptych_visual_tokens_in_total", description="Visual tokens before pruning.")
        self.visual_kept = Counter("triptych_visual_tokens_kept_total", description="Visual tokens after pruning.")

    async def chat(self, events: AsyncIterator, started: float) -> AsyncIterator:
        """`events` passed through unchanged; each text delta and the usage are recorded on the way.
        The end-to-end latency is taken at the last event (the usage, or the image), before it is passed
        on: a caller may stop iterating once it has it."""
        last_text = None
        async for event in events:
            if isinstance(event, TextDelta) and event.text:
                now = time.perf_counter()
                if last_text is None:
                    self.ttft.observe(now - started)
                else:
                    self.itl.observe(now - last_text)
                last_text = now
            elif isinstance(event, ChatUsage):
                self.e2e.observe(time.perf_counter() - started, tags={"kind": "chat"})
                self._usage(event)
            yield event

    async def images(self, events: AsyncIterator, started: float) -> AsyncIterator:
        async for event in events:
            if isinstance(event, ImageResult):
                self.e2e.observe(time.perf_counter() - started, tags={"kind": "image"})
            yield event

    def _usage(self, usage: ChatUsage) -> None:
        _positive(self.prompt, usage.prompt_tokens)
        _positive(self.generation, usage.completion_tokens)
        _positive(self.visual_in, usage.visual_tokens_in)
        _positive(self.visual_kept, usage.visual_tokens_kept)


class DecoderMetrics:
    """The LLMDecoder's engine: queue time per request, and its load as gauges."""

    def __init__(self):
        self.queue = Histogram("triptych_request_queue_time_seconds",
                               description="Decoder: submitted to first prefill chunk.",
                               boundaries=LATENCY_BUCKETS_S)  # fmt: skip
        self.running = Gauge("triptych_num_requests_running", description="Decoder requests holding a KV slot.")
        self.waiting = Gauge("triptych_num_requests_waiting", description="Decoder requests waiting for a slot.")
        self.batch_size = Gauge("triptych_decoder_batch_size",
                                description="Mean rows per decode step since the last update.")  # fmt: skip
        self._steps, self._rows = 0, 0

    def queued(self, seconds: float) -> None:
        """The engine's admission hook (called from its loop thread)."""
        self.queue.observe(seconds)

    def load(self, stats: BatchingStats) -> None:
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        steps, rows = stats.decode_steps - self._steps, stats.decode_rows - self._rows
        if steps > 0:
            self.batch_size.set(rows / steps)
        self._steps, self._rows = stats.decode_steps, stats.decode_rows


class DenoiserMetrics:
    def __init__(self):
        self.steps = Counter("triptych_denoise_steps_total", description="Denoising steps run (per request).")
        self.images = Counter("triptych_images_generated_total", description="Images generated.")

    def generated(self, steps: int, images: int) -> None:
        _positive(self.steps, steps)
        _positive(self.images, images)


class EmbedderMetrics:
    def __init__(self):
        self.inputs = Counter("triptych_embedding_inputs_total", tag_keys=("kind",),
                              description="Embedder: inputs embedded (cache misses), by kind (text, image).")
        self.forwards = Counter("triptych_embedding_forwards_total", tag_keys=("kind",),
                                description="Embedder: batched forward passes, by kind.")

    def embedded(self, kind: str, inputs: int) -> None:
        self.forwards.inc(1, tags={"kind": kind})
        self.inputs.inc(inputs, tags={"kind": kind})


class CacheMetrics:
    """An `EmbeddingCache` observer: each counted event becomes one increment, labelled by stage."""

    def __init__(self):
        self._counters = {
            event: Counter(f"triptych_embedding_cache_{event}_total", tag_keys=("stage",),
                           description=f"Embedding cache {event} (a failed lookup is also a miss).")
            for event in CACHE_EVENTS
        }  # fmt: skip

    def __call__(self, event: str, key: str) -> None:
        counter = self._counters.get(event)
        if counter is not None:
            counter.inc(1, tags={"stage": key_stage(key)})
