"""The ``bench`` checkpoint: realistic shapes, random weights, built from fixed seeds on first use.

``bench-hf-llava`` (source ``hf_llava``) is a Hugging Face ``LlavaForConditionalGeneration``
sized so that compute, not plumbing, dominates a request on a small CPU box:

- CLIP vision tower: image 336, patch 14 -> 24 x 24 = 576 patch tokens (+ [CLS]), width 384,
  4 layers, 6 heads, feature layer -2 (LLaVA-1.5's geometry at a fraction of ViT-L's depth);
- projector: 2-layer GELU MLP 384 -> 1024 -> 1024;
- Llama: hidden 1024, 4 layers, 16 heads, intermediate 2816, context 2048 (~51M parameters in the
  blocks; a 600-token prefill takes about a second on two cores).

The vocabulary is the shared 512-token chat tokenizer of ``models.tiny`` (so the LM head is
small next to a real model's 32k rows). The LM head rows of the special tokens (``</s>``,
``<s>``, ``<pad>``, ``<unk>``, ``<image>``) are zeroed: with random weights the best other logit
is always positive, so greedy decoding never stops early or emits invisible text, and every
system benchmarked on it generates exactly ``max_tokens`` visible tokens.

Building takes seconds and ~250 MB on disk; it reuses ``models.tiny``'s build-in-a-temp-dir-then-
rename publishing, so concurrent builders never expose a half-written directory.
"""

from __future__ import annotations

from pathlib import Path

from . import tiny
from .checkpoint_dir import ensure_checkpoint

BENCH_HF_LLAVA = "bench-hf-llava"
BENCH_RECIPE_VERSION = 1  # bump when the recipe below changes; a stale directory is rebuilt

IMAGE_SIZE, PATCH_SIZE = 336, 14  # -> 576 patches
VISION_WIDTH = 384
LM_HIDDEN = 1024
CONTEXT_LENGTH = 2048


def ensure_bench_models(root: Path | str) -> dict[str, Path]:
    """Create (once) and return ``{"bench-hf-llava": path}`` under ``root``."""
    return {BENCH_HF_LLAVA: ensure_checkpoint(Path(root), BENCH_HF_LLAVA, _build_hf_llava, BENCH_RECIPE_VERSION)}


def _build_hf_llava(out: Path) -> None:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from .chat_format import IMAGE
    from .tokenizer_training import train_chat_tokenizer

    tokenizer = train_chat_tokenizer()
    tokenizer.model_max_length = CONTEXT_LENGTH  # prompts hold 576 image tokens: no length warnings
    vision_config = CLIPVisionConfig(
        hidden_size=VISION_WIDTH, intermediate_size=4 * VISION_WIDTH, num_hidden_layers=4,
        num_attention_heads=6, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=VISION_WIDTH,
    )  # fmt: skip
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=LM_HIDDEN, intermediate_size=2816, num_hidden_layers=4,
        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(10)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.all_special_ids] = 0.0  # (5, D): see the module docstring
    model.save_pretrained(out)
    tiny.save_llava_processor(out, tokenizer, IMAGE_SIZE, PATCH_SIZE)
