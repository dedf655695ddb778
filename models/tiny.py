"""The ``tiny`` checkpoints: random weights from fixed seeds, built on first use in about a second.

Two directories under ``root``, written with the real savers so the real loaders read them:

- ``tiny-open-clip-llava`` (source ``open_clip_llava``): open_clip ViT, image 32, patch 8 ->
  16 patches, width 64, 2 layers; MLP projector 64 -> 64; Llama 2 layers, hidden 64, context 512.
- ``tiny-hf-llava`` (source ``hf_llava``): ``LlavaForConditionalGeneration`` with a CLIP vision
  tower (image 32, patch 8, width 32, 3 layers, feature layer -2) and the same-shaped Llama, plus
  a ``LlavaProcessor`` (CLIP image processor, tokenizer, chat template).

Both share the locally trained chat tokenizer (``models.tokenizer_training``). Building is
deterministic (same bytes every time). Each model is built in a temporary directory next to its
final place and renamed into it (``models.checkpoint_dir``), so concurrent builders never expose a
half-written directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .checkpoint_dir import ensure_checkpoint

TINY_OPEN_CLIP_LLAVA = "tiny-open-clip-llava"
TINY_HF_LLAVA = "tiny-hf-llava"
RECIPE_VERSION = 1  # bump when a recipe changes; stale directories are then rebuilt

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_SIZE, PATCH_SIZE = 32, 8
LM_HIDDEN = 64
CONTEXT_LENGTH = 512


def ensure_tiny_models(root: Path | str) -> dict[str, Path]:
    """Create (once) and return ``{"tiny-open-clip-llava": path, "tiny-hf-llava": path}`` under ``root``."""
    root = Path(root)
    return {name: ensure_checkpoint(root, name, build, RECIPE_VERSION) for name, build in _BUILDERS.items()}


def _build_open_clip_llava(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from encoders.open_clip_tower import ProjectorMLP

    from .sources import open_clip_llava as src
    from .tokenizer_training import train_chat_tokenizer

    tokenizer = train_chat_tokenizer()
    open_clip_config = {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": 64, "layers": 2,
                       "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }  # fmt: skip
    preprocess_cfg = {"size": IMAGE_SIZE, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                      "interpolation": "bicubic", "resize_mode": "squash", "fill_color": 0}  # fmt: skip

    torch.manual_seed(0)
    visual, _ = src.create_visual(open_clip_config, preprocess_cfg)
    save_file(_contiguous(visual.state_dict()), out / src.VISION_WEIGHTS)
    torch.manual_seed(1)
    projector = ProjectorMLP(64, LM_HIDDEN)
    save_file(_contiguous(projector.state_dict()), out / src.PROJECTOR_WEIGHTS)
    torch.manual_seed(2)
    language_model = _tiny_llama(len(tokenizer))
    language_model.save_pretrained(out / "language_model")
    tokenizer.save_pretrained(out / "language_model")

    manifest = {
        "source": src.NAME,
        "format_version": src.FORMAT_VERSION,
        "model_id": TINY_OPEN_CLIP_LLAVA,
        "open_clip_config": open_clip_config,
        "preprocess_cfg": preprocess_cfg,
        "image_size": IMAGE_SIZE,
        "num_patches": (IMAGE_SIZE // PATCH_SIZE) ** 2,
        "projector": {"type": "mlp2x_gelu", "in_features": 64, "out_features": LM_HIDDEN},
        "language_model": "language_model",
        "image_token": "<image>",
    }
    (out / src.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _build_hf_llava(out: Path) -> None:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from .chat_format import IMAGE
    from .tokenizer_training import train_chat_tokenizer

    tokenizer = train_chat_tokenizer()
    vision_config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=_tiny_llama_config(len(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(3)
    LlavaForConditionalGeneration(config).eval().save_pretrained(out)
    save_llava_processor(out, tokenizer, IMAGE_SIZE, PATCH_SIZE)


def save_llava_processor(out: Path, tokenizer, image_size: int, patch_size: int) -> None:
    """Write a ``LlavaProcessor`` (CLIP image processor + tokenizer + chat template) beside a Llava."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    from .chat_format import CHAT_TEMPLATE

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the [CLS] token
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tiny_llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=LM_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


def _tiny_llama(vocab_size: int):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(_tiny_llama_config(vocab_size)).eval()


def _contiguous(state_dict: dict) -> dict:
    return {k: v.detach().contiguous() for k, v in state_dict.items()}


_BUILDERS: dict[str, Callable[[Path], None]] = {
    TINY_OPEN_CLIP_LLAVA: _build_open_clip_llava,
    TINY_HF_LLAVA: _build_hf_llava,
}
