"""The ``tiny`` text-to-image checkpoint: a Stable-Diffusion-format directory with random weights.

``ensure_tiny_diffusion(root)`` builds ``root/tiny-sd`` once (about a second) with diffusers' own
``StableDiffusionPipeline.save_pretrained``, so ``StableDiffusionPipeline.from_pretrained(dir)``
reads it offline exactly as it reads a real SD 1.x folder::

    tiny-sd/
      model_index.json          StableDiffusionPipeline, safety_checker / feature_extractor null
      unet/                     UNet2DConditionModel: latents 4 x 8 x 8 at 64 px, channels (32, 64),
                                2 cross-attention down blocks + 2 up blocks, 1 layer each
      vae/                      AutoencoderKL: 4 blocks -> scale factor 8 (as SD), channels 16..32
      text_encoder/             CLIPTextModel: hidden 32, 2 layers, 77 positions
      tokenizer/                CLIPTokenizer from open_clip's bundled BPE (first 4,000 merges):
                                vocab.json + merges.txt (older readers) and tokenizer.json
      scheduler/                PNDMScheduler with SD 1.x's scheduler_config.json values

Sizes: the VAE has 4 blocks like SD, so ``vae_scale_factor`` is 8 and any multiple of 8 is a
valid image size (64 px -> 8 x 8 latents, the UNet's ``sample_size``).

The tokenizer is CLIP's real byte-level BPE, truncated: vocab = 256 byte symbols + 256 ``</w>``
symbols + the first ``NUM_MERGES`` merges + ``<|startoftext|>`` / ``<|endoftext|>``. Any text
still encodes (unmerged words fall back to byte symbols); it just takes more tokens than full CLIP.

Building is deterministic (fixed seeds, same bytes every time); it happens in a temporary
directory next to the final one and is renamed into place, so concurrent builders never expose a
half-written directory. A recipe marker lets a changed recipe rebuild stale directories.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from .checkpoint_dir import ensure_checkpoint

TINY_SD = "tiny-sd"
RECIPE_VERSION = 1  # bump when the recipe changes; stale directories are then rebuilt

NUM_MERGES = 4000  # of open_clip's 48,894; keeps vocab.json/merges.txt and the embedding small
MAX_TEXT_TOKENS = 77  # CLIP's context, BOS and EOS included
TEXT_HIDDEN = 32
IMAGE_SIZE = 64
VAE_SCALE_FACTOR = 8  # 2 ** (len(vae block_out_channels) - 1)

# SD 1.x's scheduler/scheduler_config.json (the pipeline's default scheduler).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def ensure_tiny_diffusion(root: Path | str) -> Path:
    """Create (once) and return the ``tiny-sd`` Stable Diffusion directory under ``root``."""
    return ensure_checkpoint(Path(root), TINY_SD, _build, RECIPE_VERSION)


def save_sd_pipeline(out: Path, *, vae, text_encoder, tokenizer, unet) -> None:
    """Save the parts as a Stable Diffusion directory with SD 1.x's default scheduler (no safety checker)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(out)


def clip_bpe_vocab(num_merges: int = NUM_MERGES) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocab and merges from open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz``, truncated.

    Same layout as ``open_clip.tokenizer.SimpleTokenizer`` (and OpenAI's ``vocab.json``): byte
    symbols, byte symbols + ``</w>``, one token per merge, then the two special tokens.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + num_merges]]  # line 0 is "#version"
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _write_bpe_files(out: Path) -> None:
    """vocab.json + merges.txt in the format ``CLIPTokenizer.from_pretrained`` reads."""
    vocab, merges = clip_bpe_vocab()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def _build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    bpe_dir = out / "tokenizer"
    bpe_dir.mkdir()
    _write_bpe_files(bpe_dir)  # kept: older transformers read these, newer ones tokenizer.json
    tokenizer = CLIPTokenizer.from_pretrained(bpe_dir, model_max_length=MAX_TEXT_TOKENS)

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TEXT_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // VAE_SCALE_FACTOR,  # 8 x 8 latents
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=32,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
    ).eval()
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),  # 4 blocks -> 3 downsamples -> scale factor 8
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        scaling_factor=0.18215,
    ).eval()
    save_sd_pipeline(out, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)
