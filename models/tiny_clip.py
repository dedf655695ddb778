"""The ``tiny-clip`` embedder checkpoint: random open_clip weights from a config, built on first use (~1 s).

Written in open_clip's own ``local-dir`` format (like the shipped ``toy/checkpoints/toy-clip``), so
``encoders.clip_embedder.ClipEmbedder`` and open_clip's stock loaders read it unchanged::

    tiny-clip/open_clip_config.json        model_cfg (below) + preprocess_cfg
    tiny-clip/open_clip_model.safetensors  the CLIP state dict (seed 4)
    tiny-clip/tokenizer.json ...           the locally trained chat tokenizer (models.tokenizer_training)

ViT image 32 / patch 8 (16 patches), width 64, 2 layers; text context 16, width 32, 1 layer;
joint space 32. Deterministic, built in a temporary directory and renamed into place
(``models.checkpoint_dir``). The ``tiny`` and ``bench`` profiles serve it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .checkpoint_dir import ensure_checkpoint
from .tiny import IMAGE_SIZE, OPENAI_MEAN, OPENAI_STD, PATCH_SIZE

TINY_CLIP = "tiny-clip"
RECIPE_VERSION = 1  # bump when the recipe changes; stale directories are then rebuilt
CONTEXT_LENGTH = 16


def ensure_tiny_clip(root: Path | str) -> Path:
    """Create (once) and return ``root / "tiny-clip"``."""
    return ensure_checkpoint(Path(root), TINY_CLIP, _build, RECIPE_VERSION)


def _build(out: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from .tokenizer_training import train_chat_tokenizer

    tokenizer = train_chat_tokenizer()
    model_cfg = {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": 64, "layers": 2,
                       "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": len(tokenizer), "width": 32, "heads": 2,
                     "layers": 1, "mlp_ratio": 2.0, "pad_id": tokenizer.pad_token_id,
                     "hf_tokenizer_name": TINY_CLIP},  # any name: local-dir reads the directory's tokenizer
    }  # fmt: skip
    preprocess_cfg = {"size": IMAGE_SIZE, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                      "interpolation": "bicubic", "resize_mode": "squash", "fill_color": 0}  # fmt: skip
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    torch.manual_seed(4)
    logging.disable(logging.WARNING)  # "no CLIP weights found ... initialized randomly": on purpose
    try:
        model = open_clip.create_model(f"local-dir:{out}", load_weights=False, device="cpu")
    finally:
        logging.disable(logging.NOTSET)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "open_clip_model.safetensors")
    tokenizer.save_pretrained(out)
