"""The toy VLM's exact-match accuracy on held-out questions, in-process, optionally with visual
token pruning, graded by `toy.oracle` (the images' side is ``toy.diffusion_eval``).

The chat path is the served one minus Serve: the same vision tower, pruners, prompt builder and
LLM engine, greedy decoding. Image features are computed once per image and reused for every
pruning setting (as the embedding cache would).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from decoders.chat_template import ChatPromptBuilder
from decoders.engine import LLMEngine
from encoders.engine import VisionEncoderEngine
from encoders.pruning import PRUNERS, keep_count
from models import load_chat_tokenizer, load_language_model, load_vision_tower
from toy.oracle import grade_answer
from toy.world import VQAItem
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
