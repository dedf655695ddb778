"""Train the toy text-to-image model: ``python -m toy.train_diffusion`` writes ``toy/checkpoints/toy-sd/``.

A Stable-Diffusion-format directory made of diffusers' / transformers' own classes, so
``DenoiserEngine.from_pretrained`` (and a plain ``StableDiffusionPipeline.from_pretrained``) loads it
exactly like a real SD 1.x folder:

    toy-sd/
      vae/            AutoencoderKL, 3 blocks (scale factor 4): 64x64x3 <-> 16x16x4 latents; with SD's 8
                      (8x8 latents) a 12-17 px shape is 2x2 latent cells and the round trip loses it
      text_encoder/   CLIPTextModel (hidden 64, 2 layers, 32 positions), trained jointly with the UNet
      tokenizer/      CLIPTokenizer: open_clip's BPE truncated to 4,000 merges (``models.tiny_diffusion``)
      unet/           UNet2DConditionModel on 16x16x4 latents, cross-attention at 8x8 and in the middle
      scheduler/      SD 1.x's noise schedule (scaled_linear 0.00085..0.012, 1,000 steps, epsilon):
                      the schedule the UNet was trained on
      training.json   recipe, wall times and the held-out oracle accuracies measured after training

Stages (all seeded; fixed step counts, so a rerun on this machine gives the same weights):
1. render single-object toy-world scenes with their prompts (``toy.diffusion_data``);
2. train the VAE (MSE + L1 reconstruction weighted towards the shape and its outline, a small KL
   term), encode the training set to latent means, set ``scaling_factor`` = 1 / latent std (SD's
   recipe for its 0.18215); grade VAE round trips of held-out scenes with the oracle (the ceiling);
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
TEXT_HIDDEN = 64
# Text context, BOS and EOS included: the longest toy prompt ("a large purple triangle at the
# bottom-right") is 15 tokens; 32 is the toy CLIP's context too. SD's 77 would make every
# cross-attention and the text encoder ~2.4x dearer for nothing; longer prompts are rejected by the
# engine with a message naming the limit (30 tokens), never truncated.
MAX_TEXT_TOKENS = 32

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
    vae_channels: str = "8,16,32"  # len - 1 downsamples: 3 blocks -> 16x16 latents at 64 px
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 3e-3
    fg_weight: float = 10.0  # extra loss weight on the shape's pixels (~7% of the image)
    edge_weight: float = 10.0  # extra loss weight on a 4-px ring around the shape's outline
    grad_weight: float = 1.0  # L1 on the error's image gradients: sharp outlines decide the shape
    kl_weight: float = 1e-3  # on the per-element KL; keeps latents smooth, barely costs sharpness
    unet_channels: str = "32,64"
    unet_steps: int = 2000
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


def _channels(spec: str) -> tuple[int, ...]:
    return tuple(int(c) for c in spec.split(","))


def build_vae(channels: str):
    from diffusers import AutoencoderKL

    ch = _channels(channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(ch),
        up_block_types=("UpDecoderBlock2D",) * len(ch),
        block_out_channels=ch,  # len(ch) - 1 downsamples: scale factor 2 ** (len(ch) - 1)
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,  # fully convolutional: nothing global to learn in a toy scene
        scaling_factor=1.0,  # set from the latent std after training
    )
    with torch.no_grad():  # start nearly deterministic (posterior std e^-4): noise would hide the signal
        vae.quant_conv.bias[LATENT_CHANNELS:] = -8.0
    return vae


def build_unet(channels: str, latent_size: int):
    from diffusers import UNet2DConditionModel

    ch = _channels(channels)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        # full latent resolution: plain ResNet block (cheap; DeepCache's shallow path); every lower
        # resolution and the middle: cross-attention to the prompt. The lowest level (4x4 at 16x16
        # latents) is what lets the convolutions tell the center from a corner: nothing else in a
        # UNet knows absolute position, and "at the top-left" / "centred" need it.
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
        block_out_channels=ch,
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


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Weighted MSE + 0.5 L1 + gradient L1 between (B, 3, H, W) images in [-1, 1].

    The shape covers a few percent of the image and its outline is what tells a square from a
    circle, so its pixels and a ring around its outline weigh more; without that a short run
    learns colour blobs on a grey background.
    """
    chroma = x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)  # (B, 1, H, W)
    fg = (chroma > 0.1).float()  # the shape (the background is neutral grey)
    ring = F.max_pool2d(fg, 5, 1, 2) + F.max_pool2d(-fg, 5, 1, 2)  # dilation - erosion
    weight = 1 + cfg.fg_weight * fg + cfg.edge_weight * ring
    err = recon - x
    loss = (err.pow(2) * weight).mean() + 0.5 * (err.abs() * weight).mean()
    if cfg.grad_weight:
        dy = (err[..., 1:, :] - err[..., :-1, :]).abs().mean()
        dx = (err[..., :, 1:] - err[..., :, :-1]).abs().mean()
        loss = loss + cfg.grad_weight * (dx + dy)
    return loss


def train_vae(vae, images: np.ndarray, cfg: TrainConfig, gen: torch.Generator) -> list[float]:
    """``reconstruction_loss`` + ``kl_weight`` x per-element KL; returns the loss curve."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, betas=(0.9, 0.99))
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
        rec = reconstruction_loss(recon, x, cfg)
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
    """Latent means (N, 4, h, w) of ``images``, unscaled."""
    out = [vae.encode(to_pixels(images[i : i + batch])).latent_dist.mode() for i in range(0, len(images), batch)]
    return torch.cat(out)


@torch.no_grad()
def reconstruction_accuracy(vae, n: int = 200) -> dict[str, float]:
    """Oracle accuracy of VAE round trips (encode, decode the mean) of ``n`` held-out t2i scenes.

    The ceiling of the whole model: a shape the VAE cannot reconstruct, the UNet cannot draw.
    """
    from . import oracle, world

    items = world.t2i_items(n, split="val", with_position=True, with_size=True)
    images = np.stack([world.render_array(it.scene) for it in items])  # (n, 64, 64, 3)
    recon = vae.decode(encode_latents(vae, images)).sample  # (n, 3, 64, 64) in [-1, 1]
    recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grades = [oracle.grade_image(img, it) for img, it in zip(recon, items)]
    return {
        "colour": float(np.mean([g.colour_ok for g in grades])),
        "shape": float(np.mean([g.shape_ok for g in grades])),
        "both": float(np.mean([g.both for g in grades])),
    }


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

    ``latents`` (N, 4, h, w) are already multiplied by the VAE's scaling factor.
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
        z0 = latents[idx]  # (B, 4, h, w)
        pid = prompt_ids[idx]
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.cfg_dropout
        pid = torch.where(drop, torch.full_like(pid, empty_id), pid)  # (B,)
        batch_prompts, inverse = torch.unique(pid, return_inverse=True)  # encode each prompt once
        context = text_encoder(tokens[batch_prompts]).last_hidden_state[inverse]  # (B, 32, D)
        t = torch.randint(0, len(ab), (cfg.unet_batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise  # (B, 4, h, w)
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
    vae = build_vae(cfg.vae_channels)
    vae_losses = train_vae(vae, images, cfg, gen)
    raw = encode_latents(vae, images)  # (N, 4, 16, 16)
    scaling = float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=round(scaling, 5))
    latents = raw * vae.config.scaling_factor
    times["vae_s"] = time.perf_counter() - t
    vae_accuracy = reconstruction_accuracy(vae)
    print(f"vae round trip, oracle accuracy on held-out scenes: {vae_accuracy}", flush=True)
    print(f"vae: rec {np.mean(vae_losses[-20:]):.4f}; latent mean {raw.mean():.3f} std {raw.std():.3f} "
          f"-> scaling_factor {vae.config.scaling_factor}", flush=True)  # fmt: skip

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer = build_tokenizer(Path(tok_dir))
    torch.manual_seed(cfg.seed + 2)
    text_encoder = build_text_encoder(tokenizer)
    torch.manual_seed(cfg.seed + 3)
    unet = build_unet(cfg.unet_channels, latents.shape[-1])
    unet, text_encoder, unet_losses = train_denoiser(unet, text_encoder, tokenizer, latents, prompts, cfg, gen)
    times["unet_text_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0

    record = {
        "config": asdict(cfg),
        "times": {k: round(v, 1) for k, v in times.items()},
        "vae_final_rec_loss": round(float(np.mean(vae_losses[-20:])), 5),
        "unet_final_mse": round(float(np.mean(unet_losses[-100:])), 5),
        "scaling_factor": vae.config.scaling_factor,
        "vae_round_trip_oracle": vae_accuracy,
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
