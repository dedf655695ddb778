"""The toy VLM: an ``open_clip_llava`` checkpoint (toy CLIP visual + MLP projector + small Llama).

Directory (written by ``python -m toy.train_vlm``, read unchanged by ``models.load_vision_tower`` /
``models.load_language_model``)::

    toy/checkpoints/toy-vlm/
        triptych_model.json          source open_clip_llava, the toy CLIP's open_clip config
        vision_tower.safetensors     the toy CLIP's ``visual``, fine-tuned during VLM training
        projector.safetensors        mlp2x_gelu, 96 -> 128
        language_model/              LlamaForCausalLM (hidden 128, 4 layers, 8 heads) + chat tokenizer

Training and serving build inputs the same way: ``ChatPromptBuilder`` renders the chat template and
expands ``<image>`` to K visual tokens, and ``embed_inputs`` replaces those rows by the projected
visual tokens exactly like ``LLMEngine.embed_prompt`` (tests check both). ``ToyVLM`` answers
questions through the serving engines (``VisionEncoderEngine`` + pruner + ``LLMEngine``);
``evaluate_vqa`` grades it on held-out items per question type.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from . import world
from .clip import CHECKPOINTS

TOY_VLM_DIR = CHECKPOINTS / "toy-vlm"
IGNORE = -100  # label of positions without loss


def tokenizer_corpus() -> list[str]:
    """The chat tokenizer's built-in corpus plus toy-world text, so world words are single tokens."""
    from models.tokenizer_training import training_corpus

    lines = list(training_corpus())
    rng = random.Random("toy-tokenizer")
    for i in range(300):
        scene = world.make_scene("train", i)
        lines.append(world.caption(scene))
        lines += [f"{qa.question} {qa.answer}" for qa in world.questions(scene, rng)]
    return lines


def build_toy_tokenizer():
    """The locally trained byte-level BPE chat tokenizer (``models.tokenizer_training``), on the world's text."""
    from models.tokenizer_training import train_chat_tokenizer

    return train_chat_tokenizer(corpus=tokenizer_corpus())


def llama_config(vocab_size: int, hidden: int = 128, layers: int = 4, heads: int = 8, rope_theta: float = 10000.0):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        # a large base leaves most rotary pairs nearly still over the ~300-token sequences, so a
        # question word can match visual tokens by content whatever their distance
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


# ---------------------------------------------------------------------------------------------
# Inputs, shared by training and the tests that pin them to serving


def user_message(question: str, image_first: bool = True, with_image: bool = True):
    """A user ChatMessage with one image part (placeholder bytes) and the question."""
    from triptych.types import ChatMessage, ImagePart, TextPart

    parts: list = [TextPart(question)]
    if with_image:
        parts.insert(0 if image_first else 1, ImagePart(b""))
    return ChatMessage("user", tuple(parts))


def build_sequence(
    builder, tokenizer, turns: Sequence[tuple[str, str]], n_visual: int, image_first: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a chat about one image: turn 1 carries the image, then ``turns``.

    Each prefix up to an assistant answer is exactly what serving sends for that conversation
    (``ChatPromptBuilder.build``, K = ``n_visual`` image tokens); the answer is `` answer</s>``.
    Labels are ``IGNORE`` everywhere but on answer tokens (incl. ``</s>``).
    """
    from triptych.types import ChatMessage, TextPart

    messages: list = []
    ids: list[int] = []
    labels: list[int] = []
    for j, (question, answer) in enumerate(turns):
        messages.append(user_message(question, image_first, with_image=j == 0))
        prompt = builder.build(messages, [n_visual])  # ends with "assistant:"
        if prompt[: len(ids)] != ids:
            raise AssertionError("chat template is not prefix-stable across turns")
        labels += [IGNORE] * (len(prompt) - len(ids))
        ids = list(prompt)
        answer_ids = tokenizer(" " + answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids += answer_ids
        labels += answer_ids
        messages.append(ChatMessage("assistant", (TextPart(answer),)))
    return ids, labels


def embed_inputs(
    ids: torch.Tensor, visual: torch.Tensor, embed_tokens: torch.nn.Embedding, image_token_id: int
) -> torch.Tensor:
    """(B, T) ids + (B, K, D) projected visual tokens -> (B, T, D) inputs_embeds, with gradients.

    Row b's image-token slots (exactly K of them) are replaced in order by ``visual[b]`` — the same
    rule as ``LLMEngine.embed_prompt``.
    """
    is_image = ids == image_token_id  # (B, T)
    embeds = embed_tokens(ids.masked_fill(is_image, 0))  # (B, T, D)
    return embeds.masked_scatter(is_image.unsqueeze(-1), visual.to(embeds.dtype))  # row-major fill


# ---------------------------------------------------------------------------------------------
# Serving-path inference and evaluation


@dataclass
class ToyVLM:
    """The toy VLM behind Triptych's own engines (the chat pipeline's code path, minus Serve)."""

    vision: object  # encoders.engine.VisionEncoderEngine
    llm: object  # decoders.engine.LLMEngine

    def answer(
        self,
        image: Image.Image,
        question: str,
        keep_ratio: float = 1.0,
        pruning_method: str = "cls_attention",
        max_tokens: int = 48,
        image_first: bool = True,
    ) -> str:
        """Greedy answer to one question about one image, keeping ``keep_ratio`` of the visual tokens."""
        return self.answer_batch([image], [question], keep_ratio, pruning_method, max_tokens, image_first)[0]

    def answer_batch(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        keep_ratio: float = 1.0,
        pruning_method: str = "cls_attention",
        max_tokens: int = 48,
        image_first: bool = True,
    ) -> list[str]:
        """Answers for (image, question) pairs; images are encoded in one batch, answers decoded one by one."""
        from encoders.pruning import get_pruner, keep_count
        from triptych.types import SamplingParams

        pruner = get_pruner(pruning_method)
        features = self.vision.encode(list(images))
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        out = []
        for feats, question in zip(features, questions):
            kept = pruner(feats, keep_count(feats.tokens.shape[0], keep_ratio)).tokens  # (K, D)
            ids = self.llm.prompt_builder.build([user_message(question, image_first)], [kept.shape[0]])
            text = "".join(delta.text for delta in self.llm.generate(ids, [kept], params))
            out.append(text.strip())
        return out


def load_vlm(path: Path | str = TOY_VLM_DIR) -> ToyVLM:
    """Load a toy-VLM checkpoint with the real loaders (``models.load_vision_tower`` / ``load_language_model``)."""
    from decoders.engine import LLMEngine
    from encoders.engine import VisionEncoderEngine
    from models import load_language_model, load_vision_tower

    path = Path(path)
    if not (path / "triptych_model.json").is_file():
        raise FileNotFoundError(f"no toy VLM at {path} (run `python -m toy.train_vlm`)")
    return ToyVLM(VisionEncoderEngine(load_vision_tower(path)), LLMEngine(load_language_model(path)))


def evaluate_vqa(
    vlm: ToyVLM,
    items: Sequence[world.VQAItem],
    keep_ratio: float = 1.0,
    pruning_method: str = "cls_attention",
    batch_size: int = 32,
) -> dict[str, float]:
    """Exact-match accuracy per qtype (plus "all") of ``vlm`` on ``items`` (see ``world.vqa_items``)."""
    from .oracle import grade_answer

    right: dict[str, list[bool]] = defaultdict(list)
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        answers = vlm.answer_batch(
            [it.image for it in chunk], [it.question for it in chunk], keep_ratio, pruning_method
        )
        for it, ans in zip(chunk, answers):
            right[it.qtype].append(grade_answer(ans, it.answer))
    acc = {q: sum(v) / len(v) for q, v in sorted(right.items())}
    acc["all"] = sum(sum(v) for v in right.values()) / max(1, sum(len(v) for v in right.values()))
    return acc
