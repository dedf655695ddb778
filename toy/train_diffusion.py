"""Train the toy text-to-image model: ``python -m toy.train_diffusion`` writes ``toy/checkpoints/toy-sd/``.

A Stable-Diffusion-format directory made of diffusers' / transformers' own classes, so
``DenoiserEngine.from_pretrained`` (and a plain ``StableDiffusionPipeline.from_pretrained``) loads it
exactly like a real SD 1.x folder:

    toy-sd/
      vae/            AutoencoderKL, 4 blocks (scale factor 8): 64x64x3 <-> 8x8x4 latents
      text_encoder/   CLIPTextModel (hidden 64, 2 layers, 77 positions), trained jointly with the UNet
      tokenizer/      CLIPTokenizer: open_clip's BPE truncated to 4,000 merges (``models.tiny_diffusion``)
      unet/           UNet2DConditionModel on 8x8x4 latents, cross-attention at 4x4 and in the middle
      scheduler/      SD 1.x's noise schedule (scaled_linear 0.00085..0.012, 1,000 steps, epsilon):
                      the schedule the UNet was trained on
      training.json   recipe, wall times and the held-out oracle accuracies measured after training

Stages (all seeded; fixed step counts, so a rerun on this machine gives the same weights):
1. render single-object toy-world scenes with their prompts (``toy.diffusion_data``);
2. train the VAE (MSE + L1 reconstruction, a small KL term), encode the training set to latent
   means, set ``scaling_factor`` = 1 / latent std (SD's recipe for its 0.18215);
3. train text encoder + UNet together with the epsilon-prediction DDPM loss on the SD schedule,
   min-SNR-5 loss weights (faster convergence), 10% empty prompts (classifier-free guidance) and
   an EMA of the weights (what is saved);
4. save with ``StableDiffusionPipeline.save_pretrained``, then (unless ``--no-eval``) grade images
   sampled through ``DenoiserEngine`` with the oracle (``toy.diffusion_eval``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import CHECKPOINTS

TOY_SD_DIR = CHECKPOINTS / "toy-sd"
IMAGE_SIZE = 64
LATENT_CHANNELS = 4
VAE_SCALE_FACTOR = 8  # 2 ** (len(vae block_out_channels) - 1)
LATENT_SIZE = IMAGE_SIZE // VAE_SCALE_FACTOR  # 8
TEXT_HIDDEN = 64
MAX_TEXT_TOKENS = 77  # CLIP's context (BOS + 75 + EOS), as SD

# SD 1.x's noise schedule: what the UNet is trained on and what scheduler/ records.
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class TrainConfig:
    """The whole recipe (``training.json`` records it)."""

    seed: int = 0
    n_images: int = 8000  # rendered training items (images + prompts)
    vae_steps: int = 400
    vae_batch: int = 32
    vae_lr: float = 2e-3
    kl_weight: float = 1e-3  # on the per-element KL; keeps latents smooth, barely costs sharpness
    unet_steps: int = 1500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    text_lr: float = 1e-3
    warmup_steps: int = 100
    cfg_dropout: float = 0.1  # share of empty prompts: the unconditional model for guidance
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.998
    threads: int = 1


# ---------------------------------------------------------------------------------------------
# Components


def build_tokenizer(out_dir: Path):
    """CLIPTokenizer from open_clip's BPE (first 4,000 merges), written to ``out_dir`` and loaded back."""
    from transformers import CLIPTokenizer

    from models.tiny_diffusion import NUM_MERGES, clip_bpe_vocab

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab(NUM_MERGES)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer.from_pretrained(out_dir, model_max_length=MAX_TEXT_TOKENS)


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=2 * TEXT_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TEXT_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 64),  # 4 blocks -> 3 downsamples -> scale factor 8, as SD
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        scaling_factor=1.0,  # set from the latent std after training
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        # 8x8: plain ResNet block (cheap; DeepCache's shallow path), 4x4 + middle: cross-attention
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 96),
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=16,
    )


def sd_scheduler():
    """The scheduler saved with the model: PNDM (SD 1.x's class) on exactly the training schedule."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(**SD_SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)


def alphas_cumprod() -> torch.Tensor:
    """(1000,) alpha-bar of the training schedule, from diffusers' own DDPMScheduler."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULE).alphas_cumprod.float()


# ---------------------------------------------------------------------------------------------
# Training stages


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def lr_lambda(warmup: int, total: int):
    """Linear warmup, then cosine decay to 10% of the peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def train_vae(vae, images: np.ndarray, cfg: TrainConfig, gen: torch.Generator) -> list[float]:
    """Reconstruction (MSE + 0.5 L1) + ``kl_weight`` x per-element KL; returns the loss curve."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps // 2, cfg.vae_steps))
    n_elem = 3 * IMAGE_SIZE * IMAGE_SIZE
    losses = []
    vae.train()
    bar = tqdm(range(cfg.vae_steps), desc="vae", dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = to_pixels(images[idx.numpy()])  # (B, 3, 64, 64)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample  # (B, 3, 64, 64)
        rec = F.mse_loss(recon, x) + 0.5 * (recon - x).abs().mean()
        kl = posterior.kl().mean() / n_elem
        loss = rec + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(rec.item())
        if step % 10 == 0 or step == cfg.vae_steps - 1:
            bar.set_postfix(rec=f"{np.mean(losses[-10:]):.4f}", kl=f"{kl.item():.3f}")
    vae.eval()
    return losses


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latent means (N, 4, 8, 8) of ``images``, unscaled."""
    out = [vae.encode(to_pixels(images[i : i + batch])).latent_dist.mode() for i in range(0, len(images), batch)]
    return torch.cat(out)


class EMA:
    """Exponential moving average of a module's parameters (warm-up decay, as diffusers' EMAModel)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for ema_p, p in zip(self.module.parameters(), module.parameters()):
            ema_p.lerp_(p.detach(), 1 - d)


def train_denoiser(
    unet, text_encoder, tokenizer, latents: torch.Tensor, prompts: list[str], cfg: TrainConfig,
    gen: torch.Generator,
) -> tuple[Any, Any, list[float]]:  # fmt: skip
    """Epsilon-prediction DDPM loss on the SD schedule; returns the EMA UNet, EMA text encoder, losses.

    ``latents`` (N, 4, 8, 8) are already multiplied by the VAE's scaling factor.
    """
    unique = sorted(set(prompts)) + [""]  # "" last: the classifier-free-guidance prompt
    empty_id = len(unique) - 1
    index = {p: i for i, p in enumerate(unique)}
    prompt_ids = torch.tensor([index[p] for p in prompts])  # (N,)
    tokens = tokenizer(unique, padding="max_length", max_length=MAX_TEXT_TOKENS, return_tensors="pt").input_ids
    ab = alphas_cumprod()  # (1000,)
    snr = ab / (1 - ab)
    loss_weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # min-SNR-gamma for epsilon targets

    params = [
        {"params": list(unet.parameters()), "lr": cfg.unet_lr},
        {"params": list(text_encoder.parameters()), "lr": cfg.text_lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.unet_steps))
    ema_unet, ema_text = EMA(unet, cfg.ema_decay), EMA(text_encoder, cfg.ema_decay)
    unet.train()
    text_encoder.train()
    losses = []
    bar = tqdm(range(cfg.unet_steps), desc="unet+text", dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(latents), (cfg.unet_batch,), generator=gen)
        z0 = latents[idx]  # (B, 4, 8, 8)
        pid = prompt_ids[idx]
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.cfg_dropout
        pid = torch.where(drop, torch.full_like(pid, empty_id), pid)  # (B,)
        batch_prompts, inverse = torch.unique(pid, return_inverse=True)  # encode each prompt once
        context = text_encoder(tokens[batch_prompts]).last_hidden_state[inverse]  # (B, 77, D)
        t = torch.randint(0, len(ab), (cfg.unet_batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise  # (B, 4, 8, 8)
        pred = unet(zt, t, encoder_hidden_states=context).sample
        per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))  # (B,)
        loss = (loss_weight[t] * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        losses.append(per_sample.mean().item())
        if step % 10 == 0 or step == cfg.unet_steps - 1:
            bar.set_postfix(mse=f"{np.mean(losses[-50:]):.4f}")
    return ema_unet.module, ema_text.module, losses


# ---------------------------------------------------------------------------------------------
# Saving


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet, extra: dict[str, Any]) -> Path:
    """Write the SD-format directory with ``StableDiffusionPipeline.save_pretrained``, atomically."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sd_scheduler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(extra, indent=2) + "\n")
        for dirpath, _, filenames in os.walk(tmp):  # mkdtemp is owner-only; the checkpoint is shared
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Run every stage and write ``out``; returns the record also saved as ``training.json``."""
    from .diffusion_data import render_training_set

    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # denormals make CPU convs crawl once activations get tiny
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    images, prompts = render_training_set(cfg.n_images, cfg.seed)
    times["render_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    torch.manual_seed(cfg.seed + 1)
    vae = build_vae()
    vae_losses = train_vae(vae, images, cfg, gen)
    raw = encode_latents(vae, images)  # (N, 4, 8, 8)
    scaling = float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=round(scaling, 5))
    latents = raw * vae.config.scaling_factor
    times["vae_s"] = time.perf_counter() - t
    print(f"vae: rec {np.mean(vae_losses[-20:]):.4f}; latent mean {raw.mean():.3f} std {raw.std():.3f} "
          f"-> scaling_factor {vae.config.scaling_factor}", flush=True)  # fmt: skip

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer = build_tokenizer(Path(tok_dir))
    torch.manual_seed(cfg.seed + 2)
    text_encoder = build_text_encoder(tokenizer)
    torch.manual_seed(cfg.seed + 3)
    unet = build_unet()
    unet, text_encoder, unet_losses = train_denoiser(unet, text_encoder, tokenizer, latents, prompts, cfg, gen)
    times["unet_text_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0

    record = {
        "config": asdict(cfg),
        "times": {k: round(v, 1) for k, v in times.items()},
        "vae_final_rec_loss": round(float(np.mean(vae_losses[-20:])), 5),
        "unet_final_mse": round(float(np.mean(unet_losses[-100:])), 5),
        "scaling_factor": vae.config.scaling_factor,
        "params": {
            "vae": sum(p.numel() for p in vae.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
        },
    }
    save_pipeline(out, vae, text_encoder, tokenizer, unet, record)
    record["size_mb"] = round(dir_size_mb(out), 2)
    print(f"saved {out} ({record['size_mb']} MB) after {times['total_s'] / 60:.1f} min", flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TOY_SD_DIR)
    parser.add_argument("--eval-n", type=int, default=200, help="held-out prompts graded after training")
    parser.add_argument("--no-eval", action="store_true")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    record = train(cfg, args.out)
    if not args.no_eval:
        from .diffusion_eval import DEFAULT_SETTINGS, evaluate_settings

        results = evaluate_settings(args.out, DEFAULT_SETTINGS, n=args.eval_n)
        record["eval"] = results
        (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
