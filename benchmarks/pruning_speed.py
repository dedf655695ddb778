"""Pruning speed on the `bench` profile, in-process: for each pruner and keep ratio, the pruner's
own time, the LLM prefill time, time to first token (prune + prefill + first token) and the
prefill FLOPs (counted by torch's FlopCounterMode), plus the machine's measured matmul peak.

Vision features are computed once and reused (as a cache hit would): what varies is only the
number of visual tokens the LLM sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import Samples
from decoders.chat_template import ChatPromptBuilder
from decoders.engine import LLMEngine
from encoders.engine import VisionEncoderEngine
from encoders.pruning import PRUNERS, keep_count
from models import load_chat_tokenizer, load_language_model, load_vision_tower
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

KEEP_RATIOS = (1.0, 0.5, 0.25, 0.11, 0.05)
QUESTION = "Describe the picture."


@dataclass(frozen=True)
class PruneRow:
    method: str
    keep_ratio: float
    visual_tokens: int
    prune_ms: float
    prefill_ms: float
    ttft_ms: float
    prefill_gflop: float

    @property
    def gflops_per_s(self) -> float:
        return self.prefill_gflop / (self.prefill_ms / 1000.0)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of a float32 (size x size) @ (size x size) matmul at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    samples = Samples()
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        samples.add(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return samples.median


class PruningSpeedBench:
    def __init__(self, model_dir, image):
        self.vision = VisionEncoderEngine(load_vision_tower(model_dir))
        self.engine = LLMEngine(load_language_model(model_dir))
        chat = load_chat_tokenizer(model_dir)
        self.builder = ChatPromptBuilder(chat.tokenizer, chat.image_token, chat.image_token_id)
        self.features = self.vision.encode([image])[0]  # tokens (N, D), cls_attention (N,)
        self.messages = (ChatMessage("user", (ImagePart(b""), TextPart(QUESTION))),)

    def measure(self, methods: list[str], ratios=KEEP_RATIOS, repeats: int = 3) -> list[PruneRow]:
        rows = []
        num_tokens = self.features.tokens.shape[0]
        self._measure_one("none", 1.0, num_tokens, repeats=2)  # warm up allocators and kernels first
        for method in methods:
            for ratio in ratios:
                keep = num_tokens if method == "none" else keep_count(num_tokens, ratio)
                if method == "none" and ratio != 1.0:
                    continue
                rows.append(self._measure_one(method, ratio, keep, repeats))
        return rows

    def _measure_one(self, method: str, ratio: float, keep: int, repeats: int) -> PruneRow:
        pruner = PRUNERS[method]
        prompt_ids = self.builder.build(self.messages, [keep])
        params = SamplingParams(max_tokens=1)
        prune, prefill, ttft = Samples(), Samples(), Samples()
        for _ in range(repeats + 1):  # the first round warms up
            start = time.perf_counter()
            tokens = pruner(self.features, keep).tokens  # (K, D)
            pruned_at = time.perf_counter()
            deltas = list(self.engine.generate(prompt_ids, [tokens], params))
            end = time.perf_counter()
            prune.add((pruned_at - start) * 1000)
            prefill.add(deltas[-1].timings_ms["prefill"])
            ttft.add((end - start) * 1000)
        for samples in (prune, prefill, ttft):
            del samples.values[0]
        return PruneRow(method, ratio, keep, prune.median, prefill.median, ttft.median,
                        self._prefill_gflop(prompt_ids, tokens))

    def _prefill_gflop(self, prompt_ids: list[int], tokens: torch.Tensor) -> float:
        embeds = self.engine.embed_prompt(prompt_ids, [tokens])  # (1, T, D)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            self.engine.model(inputs_embeds=embeds, use_cache=True)
        return counter.get_total_flops() / 1e9
