"""Quality on the toy world, in-process: the toy VLM's exact-match accuracy (optionally with visual
token pruning) and the toy text-to-image model's oracle accuracy, both graded by `toy.oracle`.

The chat path is the served one minus Serve: the same vision tower, pruners, prompt builder and
LLM engine, greedy decoding. Image features are computed once per image and reused for every
pruning setting (as the embedding cache would).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from decoders.chat_template import ChatPromptBuilder
from decoders.engine import LLMEngine
from denoisers.engine import DenoiserEngine
from denoisers.params import ImageParams
from encoders.engine import VisionEncoderEngine
from encoders.pruning import PRUNERS, keep_count
from models import load_chat_tokenizer, load_language_model, load_vision_tower
from toy.oracle import grade_answer, grade_image
from toy.world import T2IItem, VQAItem
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

ANSWER_TOKENS = 32  # enough for the longest canonical caption ("describe" questions)


@dataclass(frozen=True)
class Accuracy:
    """Exact-match accuracy overall and per question type, and how many items it counts."""

    overall: float
    per_type: dict[str, float]
    n: int


class VLMEvaluator:
    def __init__(self, model_dir, items: Sequence[VQAItem]):
        self.vision = VisionEncoderEngine(load_vision_tower(model_dir))
        self.engine = LLMEngine(load_language_model(model_dir))
        chat = load_chat_tokenizer(model_dir)
        self.builder = ChatPromptBuilder(chat.tokenizer, chat.image_token, chat.image_token_id)
        self.items = list(items)
        self.features = []
        for start in range(0, len(self.items), 16):  # encode once, batches of 16
            batch = self.items[start : start + 16]
            self.features += self.vision.encode([item.image for item in batch])

    @property
    def num_visual_tokens(self) -> int:
        return self.vision.num_visual_tokens

    def accuracy(self, method: str = "none", keep_ratio: float = 1.0) -> Accuracy:
        num_tokens = self.num_visual_tokens
        keep = num_tokens if method == "none" else keep_count(num_tokens, keep_ratio)
        pruner = PRUNERS[method]
        right: dict[str, list[bool]] = defaultdict(list)
        params = SamplingParams(max_tokens=ANSWER_TOKENS)
        for item, features in zip(self.items, self.features):
            messages = (ChatMessage("user", (ImagePart(b""), TextPart(item.question))),)
            prompt_ids = self.builder.build(messages, [keep])
            tokens = pruner(features, keep).tokens  # (K, D)
            answer = "".join(d.text for d in self.engine.generate(prompt_ids, [tokens], params))
            right[item.qtype].append(grade_answer(answer, item.answer))
        per_type = {q: sum(v) / len(v) for q, v in sorted(right.items())}
        n = sum(len(v) for v in right.values())
        return Accuracy(sum(sum(v) for v in right.values()) / n, per_type, n)


@dataclass(frozen=True)
class OracleScore:
    colour: float
    shape: float
    both: float
    denoise_ms: float  # median per image
    n: int


class ImageEvaluator:
    def __init__(self, model_dir, items: Sequence[T2IItem]):
        self.engine = DenoiserEngine.from_pretrained(model_dir)
        self.items = list(items)
        empty = self.engine.encode_prompt("", allow_empty=True)  # (T, D)
        self.prompts = {item.prompt: self.engine.encode_prompt(item.prompt) for item in self.items}
        self.uncond = empty

    def score(self, sampler: str, steps: int, cache_interval: int = 1, guidance_scale: float = 5.0,
              seed: int = 0) -> OracleScore:
        colour = shape = both = 0
        times = []
        size = self.engine.vae_scale_factor * self.engine.unet.config.sample_size
        for i, item in enumerate(self.items):
            params = ImageParams(width=size, height=size, steps=steps, sampler=sampler,
                                 guidance_scale=guidance_scale, seed=seed + i, n=1, cache_interval=cache_interval)
            start = time.perf_counter()
            latents = self.engine.denoise(self.prompts[item.prompt], self.uncond, params)  # (1, C, h, w)
            times.append((time.perf_counter() - start) * 1000)
            grade = grade_image(self.engine.decode(latents)[0], item)
            colour += grade.colour_ok
            shape += grade.shape_ok
            both += grade.both
        n = len(self.items)
        return OracleScore(colour / n, shape / n, both / n, sorted(times)[n // 2], n)
