"""The chat benchmark's paths: one request each, timed the same way (see ``benchmarks.chat``).

TTFT = request start -> first non-empty text chunk (for ``transformers``: the first generated ids
whose text is non-empty, by the same incremental detokenizer Triptych streams with); total =
request start -> end of stream; decode tok/s = (completion tokens - 1) / (total - TTFT); outside
stages = TTFT or total minus the stage timings the path reports (``timings_ms``: encode, cache,
prune, prefill, decode), i.e. the time not spent computing in a stage.

Every path runs the same ``Workload``: the same question, token budget and pruning settings (the
Serve paths send them explicitly, so the server's defaults never change what is measured).
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

QUESTION = "Describe the picture."
FIRST_TOKEN_STAGES = ("encode", "cache", "prune", "prefill")  # timings_ms entries before the first token


@dataclass(frozen=True)
class Workload:
    """What every path of one benchmark run does: greedy, ``max_tokens`` new tokens, this pruning."""

    max_tokens: int
    pruning_method: str = "none"
    keep_ratio: float = 1.0

    def describe(self) -> str:
        if self.pruning_method == "none":
            return "pruning `none` (every visual token)"
        return f"pruning `{self.pruning_method}` at keep ratio {self.keep_ratio:g}"


@dataclass(frozen=True)
class Run:
    """One request as the caller saw it."""

    ttft_s: float
    total_s: float
    tokens: int
    stages_ms: dict[str, float] = field(default_factory=dict)  # the server's own timings_ms, if any
    cache_hit: bool | None = None
    visual_tokens_kept: int | None = None  # as the path reported it (usage), if it reports one

    @property
    def decode_tok_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode_s if self.tokens > 1 and decode_s > 0 else float("nan")

    @property
    def outside_stages_ms(self) -> tuple[float, float] | None:
        """(TTFT, total) minus the reported stage timings: time not spent computing in a stage.

        On a busy machine compute slows down in every path alike; this is what the plumbing adds.
        """
        if not self.stages_ms:
            return None
        before_first = sum(v for k, v in self.stages_ms.items() if k in FIRST_TOKEN_STAGES)
        return self.ttft_s * 1000 - before_first, self.total_s * 1000 - sum(self.stages_ms.values())


def photo_bytes(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A photo-like JPEG (smooth colour field + sensor noise), distinct bytes per seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    field_ = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(field_, dtype=np.float32) + rng.normal(0, 12, (size[1], size[0], 3))  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def chat_request(image: bytes, workload: Workload):
    from pipelines.chat_request import ChatRequest
    from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

    return ChatRequest(
        messages=(ChatMessage("user", (ImagePart(image), TextPart(QUESTION))),),
        sampling=SamplingParams(max_tokens=workload.max_tokens, temperature=0.0),
        pruning_method=workload.pruning_method,
        visual_token_keep_ratio=workload.keep_ratio,
    )


# ---- the paths ----------------------------------------------------------------------------------


def _elapsed(start: float, first: float | None, end: float) -> tuple[float, float]:
    """(ttft, total); a stream with no visible text counts its end as the first text."""
    return (first if first is not None else end) - start, end - start


def serve_once(client, image: bytes, workload: Workload) -> Run:
    start, first, usage = time.perf_counter(), None, None
    stream = client.chat(QUESTION, [image], max_tokens=workload.max_tokens, temperature=0.0,
                         pruning_method=workload.pruning_method, visual_token_keep_ratio=workload.keep_ratio)
    for message in stream:
        if message.delta and first is None:
            first = time.perf_counter()
        if message.HasField("usage"):
            usage = message.usage
    ttft, total = _elapsed(start, first, time.perf_counter())
    return Run(ttft, total, usage.completion_tokens, dict(usage.timings_ms), usage.cache_hit,
               usage.visual_tokens_kept)


async def pipeline_once(pipeline, request, limits) -> Run:
    """What the ingress does for a request (validate, run the pipeline), minus Serve."""
    from pipelines.chat_request import validate_chat_request
    from triptych.types import ChatUsage

    start, first, usage = time.perf_counter(), None, None
    await asyncio.to_thread(validate_chat_request, request, limits)
    async for event in pipeline.run(request):
        if isinstance(event, ChatUsage):
            usage = event
        elif event.text and first is None:
            first = time.perf_counter()
    ttft, total = _elapsed(start, first, time.perf_counter())
    return Run(ttft, total, usage.completion_tokens, dict(usage.timings_ms), usage.cache_hit,
               usage.visual_tokens_kept)


def engine_once(engine, prompt_ids: list[int], tokens, params) -> Run:
    """``LLMEngine.generate`` on features in hand: ``tokens`` (K, D) already pruned as the workload says."""
    start, first, last = time.perf_counter(), None, None
    for delta in engine.generate(prompt_ids, [tokens], params):
        if delta.text and first is None:
            first = time.perf_counter()
        last = delta
    ttft, total = _elapsed(start, first, time.perf_counter())
    return Run(ttft, total, last.completion_tokens, dict(last.timings_ms), visual_tokens_kept=tokens.shape[0])


class TransformersBaseline:
    """The plain ``transformers`` way: processor(text, image) -> ``LlavaForConditionalGeneration.generate``."""

    def __init__(self, model_path: Path, prompt_text: str, eos_ids: frozenset[int]):
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = LlavaForConditionalGeneration.from_pretrained(
            model_path, dtype=torch.float32, local_files_only=True
        ).eval()
        self.prompt_text = prompt_text
        self.eos_ids = eos_ids

    def prompt_ids(self, image: bytes) -> list[int]:
        return self._inputs(image)["input_ids"][0].tolist()

    def _inputs(self, image: bytes):
        from PIL import Image

        pil = Image.open(io.BytesIO(image)).convert("RGB")
        return self.processor(text=self.prompt_text, images=[pil], return_tensors="pt")

    def once(self, image: bytes, max_tokens: int) -> Run:
        import torch

        start = time.perf_counter()
        inputs = self._inputs(image)  # input_ids (1, T), attention_mask (1, T), pixel_values (1, 3, H, W)
        streamer = _FirstTextStreamer(self.processor.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=max_tokens, streamer=streamer)
        ttft, total = _elapsed(start, streamer.first, time.perf_counter())
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        tokens = len(new) - (1 if new and new[-1] in self.eos_ids else 0)
        image_token_id = self.processor.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        visual = int((inputs["input_ids"] == image_token_id).sum())  # placeholders = visual tokens run
        return Run(ttft, total, tokens, visual_tokens_kept=visual)


class _FirstTextStreamer:
    """A ``generate`` streamer that notes when the first visible text exists (same rule as Triptych)."""

    def __init__(self, tokenizer):
        from decoders.detokenizer import IncrementalDetokenizer

        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._prompt_seen = False
        self.first: float | None = None

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt ids
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if self._detokenizer.push(token) and self.first is None:
                self.first = time.perf_counter()

    def end(self) -> None:
        pass


def encoder_rate(engine, images: list, batch: int) -> float:
    """Images per second of ``engine.encode`` over ``images`` in calls of ``batch`` images."""
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        engine.encode(images[i : i + batch])
    return len(images) / (time.perf_counter() - start)
