"""The ``bench-sd`` text-to-image checkpoint: SD 1.x's U-Net layout at reduced width, random weights.

``ensure_bench_diffusion(root)`` builds ``root/bench-sd`` once (seconds, ~150 MB) with diffusers'
own ``save_pretrained``, in the same Stable Diffusion folder layout as ``models.tiny_diffusion``
(whose tokenizer, scheduler config and publishing it reuses), so every loader reads it as it reads
a real SD 1.x folder. Sized for speed benchmarks, where the *depth* of the U-Net matters (DeepCache
skips its deep levels; samplers trade steps for error), not the weights:

- unet/: ``UNet2DConditionModel`` with SD 1.x's block structure (3 ``CrossAttnDownBlock2D`` + a
  ``DownBlock2D``, mirrored up blocks, 2 layers per block, mid block with cross-attention),
  channels (64, 128, 256, 256) = SD's (320, 640, 1280, 1280) / 5, heads of 64 channels (SD 2.x's
  head size), native latents 4 x 24 x 24 (192 px). One CFG step (batch 2) is ~0.19 s of one core
  on the 2-core development box.
- vae/: ``AutoencoderKL`` with SD's 4 blocks x 2 layers at (32, 64, 128, 128) = SD's / 4, so a VAE
  decode costs about what it costs SD relative to a U-Net step (~1.5 CFG steps per image).
- text_encoder/: ``CLIPTextModel`` hidden 256, 4 layers, 77 positions (cross-attention width 256).
- tokenizer/, scheduler/: as ``tiny-sd`` (open_clip's BPE, truncated; SD 1.x's PNDM config).

Deterministic: fixed seeds, the same bytes every build. A recipe marker rebuilds stale folders.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint_dir import ensure_checkpoint
from .tiny_diffusion import MAX_TEXT_TOKENS, VAE_SCALE_FACTOR, _write_bpe_files, save_sd_pipeline

BENCH_SD = "bench-sd"
RECIPE_VERSION = 1  # bump when the recipe below changes; a stale directory is rebuilt

IMAGE_SIZE = 192  # native size: 24 x 24 latents (a multiple of 8 = the U-Net's total downsampling)
TEXT_HIDDEN = 256
UNET_CHANNELS = (64, 128, 256, 256)
VAE_CHANNELS = (32, 64, 128, 128)
HEAD_CHANNELS = 64


def ensure_bench_diffusion(root: Path | str) -> Path:
    """Create (once) and return the ``bench-sd`` Stable Diffusion directory under ``root``."""
    return ensure_checkpoint(Path(root), BENCH_SD, _build, RECIPE_VERSION)


def _build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    bpe_dir = out / "tokenizer"
    bpe_dir.mkdir()
    _write_bpe_files(bpe_dir)
    tokenizer = CLIPTokenizer.from_pretrained(bpe_dir, model_max_length=MAX_TEXT_TOKENS)

    torch.manual_seed(20)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=4 * TEXT_HIDDEN,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=MAX_TEXT_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(21)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // VAE_SCALE_FACTOR,  # 24 x 24 latents
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),  # SD 1.x
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=2,
        norm_num_groups=32,
        cross_attention_dim=TEXT_HIDDEN,
        # diffusers' legacy name: the number of heads per block (SD 2.x: 64 channels per head)
        attention_head_dim=tuple(c // HEAD_CHANNELS for c in UNET_CHANNELS),
    ).eval()
    torch.manual_seed(22)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=VAE_CHANNELS,  # 4 blocks -> scale factor 8 (as SD)
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
        scaling_factor=0.18215,
    ).eval()
    save_sd_pipeline(out, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)
