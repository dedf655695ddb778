"""DenoiserEngine: prompt -> text embeddings -> denoised latents -> images, for an SD-format model.

Plain PyTorch on the components of a ``StableDiffusionPipeline`` (tokenizer, CLIP text encoder,
UNet, VAE, the checkpoint's scheduler config); the pipeline's ``__call__`` is never used, so the
sampling loop is ours: per-image seeded noise, batching, a progress callback and cancellation.
The three stages are separate methods so they can live in separate deployments:

    cond = engine.encode_prompt("a red circle")              # (T, D)   text_encode
    uncond = engine.encode_prompt("", allow_empty=True)      # (T, D)   (or a negative prompt)
    latents = engine.denoise(cond, uncond, params, on_step)  # (n, C, h, w)   denoise
    images = engine.decode(latents)                          # n x PIL RGB     vae_decode

Reproducibility: image i of a request starts from ``torch.randn`` of a CPU generator seeded with
``seed + i`` (the same on every machine and process, whatever device runs the UNet), and a
stochastic sampler (``lcm``) draws its later noise from that same generator. So the same seed
gives the same image whether it is the first or the fifth of ``n``.

Prompts longer than the text encoder takes are *rejected* (RequestError on ``prompt``), never
silently truncated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from triptych.errors import RequestError
from triptych.types import ImageParams

from .deep_cache import DeepCacheUNet, unsupported_reason
from .loop import denoising_loop
from .params import DEFAULT_MAX_SIZE, DEFAULT_MAX_STEPS, validate_image_params
from .samplers import get_sampler

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

OnStep = Callable[[int, int], "bool | None"]  # (steps done, total steps) -> False to cancel


class DenoiseCancelled(Exception):
    """The ``on_step`` callback asked the loop to stop; ``steps_run`` steps of ``total`` ran."""

    def __init__(self, steps_run: int, total: int):
        super().__init__(f"denoising cancelled after {steps_run} of {total} steps")
        self.steps_run = steps_run
        self.total = total

    def __reduce__(self):  # keep the counts when Ray pickles the exception across processes
        return (type(self), (self.steps_run, self.total))


@dataclass(frozen=True)
class DenoiseJob:
    """One request's share of a batched denoising loop."""

    cond: torch.Tensor  # (T, D) prompt embeddings
    uncond: torch.Tensor  # (T, D) negative-prompt (or empty-prompt) embeddings
    params: ImageParams
    on_step: OnStep | None = None


def _files_digest(paths: Sequence[Path], length: int = 16) -> str:
    """Short sha256 over names and bytes of ``paths`` (in order), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(8 * 2**20):
                digest.update(chunk)
    return digest.hexdigest()[:length]


class DenoiserEngine:
    """Text-to-image on a loaded ``StableDiffusionPipeline``'s components.

    Args:
        pipeline: a loaded ``StableDiffusionPipeline`` (only its components are used).
        model_id: the model's name, for cache keys and messages.
        revision: identifies the text encoder weights (cache keys of text embeddings).
        tokenizer_id: identifies the tokenizer files (cache keys of text embeddings).
        max_image_size: the largest width / height accepted, in pixels.
        max_steps: the most steps accepted (raise it only for offline high-step references).

    Attributes:
        steps_run: denoising steps the most recent ``denoise`` / ``denoise_batch`` call ran.
    """

    def __init__(
        self,
        pipeline: StableDiffusionPipeline,
        *,
        model_id: str,
        revision: str,
        tokenizer_id: str,
        max_image_size: int = DEFAULT_MAX_SIZE,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        self.tokenizer = pipeline.tokenizer
        self.text_encoder = pipeline.text_encoder.eval()
        self.unet = pipeline.unet.eval()
        self.vae = pipeline.vae.eval()
        self.scheduler_config = dict(pipeline.scheduler.config)  # the model's noise schedule
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.unet.config.in_channels)
        self.device = self.unet.device
        self.model_id = model_id
        self.revision = revision
        self.tokenizer_id = tokenizer_id
        self.max_image_size = max_image_size
        self.max_steps = max_steps
        self.steps_run = 0
        self.deep_cache_unsupported = unsupported_reason(self.unet)  # None: cache_interval > 1 works

    @classmethod
    def from_pretrained(
        cls,
        model_dir: Path | str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_image_size: int = DEFAULT_MAX_SIZE,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> DenoiserEngine:
        """Load an SD-format directory offline with diffusers' own loader (no safety checker)."""
        from diffusers import StableDiffusionPipeline

        model_dir = Path(model_dir).resolve()
        pipeline = StableDiffusionPipeline.from_pretrained(
            model_dir,
            dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=True,
        ).to(device)
        text_encoder_files = sorted(
            p for p in (model_dir / "text_encoder").iterdir() if p.suffix in (".json", ".safetensors", ".bin")
        )
        tokenizer_files = sorted(p for p in (model_dir / "tokenizer").iterdir() if p.is_file())
        return cls(
            pipeline,
            model_id=model_dir.name,
            revision=_files_digest(text_encoder_files),
            tokenizer_id=_files_digest(tokenizer_files),
            max_image_size=max_image_size,
            max_steps=max_steps,
        )

    # -- text_encode -----------------------------------------------------------------------------

    @property
    def max_prompt_tokens(self) -> int:
        """The most prompt tokens the text encoder takes (its context minus BOS and EOS)."""
        return int(self.tokenizer.model_max_length) - 2

    def encode_prompt(self, text: str, *, field: str = "prompt", allow_empty: bool = False) -> torch.Tensor:
        """CLIP last hidden state of ``text`` padded to the tokenizer's max length: (T, D) float32 on CPU.

        Raises RequestError(field) for a non-string, for an empty prompt (unless ``allow_empty``,
        as for negative prompts) and for a prompt longer than ``max_prompt_tokens``: it is
        rejected, not truncated.
        """
        if not isinstance(text, str):
            raise RequestError(field, f"must be a string, got {type(text).__name__}")
        if not allow_empty and not text.strip():
            raise RequestError(field, "must not be empty")
        max_length = int(self.tokenizer.model_max_length)
        ids = self.tokenizer(text, truncation=False).input_ids  # BOS + tokens + EOS
        if len(ids) > max_length:
            raise RequestError(
                field,
                f"is {len(ids) - 2} tokens; the text encoder of {self.model_id!r} takes at most "
                f"{self.max_prompt_tokens} (longer prompts are rejected, not truncated)",
            )
        inputs = self.tokenizer(text, padding="max_length", max_length=max_length, return_tensors="pt")
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = inputs.attention_mask.to(self.text_encoder.device)
        with torch.inference_mode():
            out = self.text_encoder(
                inputs.input_ids.to(self.text_encoder.device), attention_mask=attention_mask
            )
        return out.last_hidden_state[0].float().cpu()  # (T, D)

    # -- denoise ---------------------------------------------------------------------------------

    def validate(self, params: ImageParams) -> None:
        """Raise RequestError naming the field if ``params`` is not servable by this engine."""
        validate_image_params(params, max_size=self.max_image_size, max_steps=self.max_steps)
        if params.cache_interval > 1 and self.deep_cache_unsupported:
            raise RequestError("cache_interval", f"model {self.model_id!r}: {self.deep_cache_unsupported}")

    def initial_noise(self, params: ImageParams) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Unscaled starting noise (n, C, h, w) on CPU and the per-image generators it came from."""
        shape = (1, self.latent_channels, params.height // self.vae_scale_factor,
                 params.width // self.vae_scale_factor)  # fmt: skip
        generators = [torch.Generator("cpu").manual_seed(params.seed + i) for i in range(params.n)]
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return noise, generators  # (n, C, h, w)

    def denoise(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        params: ImageParams,
        on_step: OnStep | None = None,
    ) -> torch.Tensor:
        """Sample ``params.n`` latents (n, C, h, w) float32 on CPU with classifier-free guidance.

        ``on_step(steps_done, total)`` runs after every step; returning False stops the loop at
        once and raises DenoiseCancelled (``self.steps_run`` then says how many steps ran).
        Raises RequestError for invalid ``params``.
        """
        (result,) = self.denoise_batch([DenoiseJob(cond, uncond, params, on_step)])
        if isinstance(result, DenoiseCancelled):
            raise result
        return result

    def denoise_batch(self, jobs: Sequence[DenoiseJob]) -> list[torch.Tensor | DenoiseCancelled]:
        """Run several requests through one sampling loop (one UNet call per step for all images).

        Jobs must share size, sampler, steps and cache_interval (ValueError otherwise); guidance,
        seeds, ``n`` and prompts may differ. ``cache_interval`` k > 1 runs the full UNet on every
        k-th step only and the shallow path of DeepCache in between (``denoisers.deep_cache``). Returns, per job, its latents (n, C, h, w) or a DenoiseCancelled if its
        ``on_step`` returned False. A cancelled job's rows keep being computed while other jobs
        run (multistep scheduler state is per batch), and the loop stops as soon as every job is
        cancelled. An image's latents do not depend on the other jobs in its batch except for
        float rounding of the batched UNet kernels.
        """
        if not jobs:
            return []
        for job in jobs:
            self.validate(job.params)
            if job.cond.dim() != 2 or job.cond.shape != job.uncond.shape:
                raise ValueError(
                    f"cond and uncond must both be (T, D), got {job.cond.shape}, {job.uncond.shape}"
                )
        first = jobs[0].params
        def shared(p: ImageParams) -> tuple:
            return (p.width, p.height, p.steps, p.sampler, p.cache_interval)

        if any(shared(j.params) != shared(first) for j in jobs):
            raise ValueError("denoise_batch: jobs must share width, height, steps, sampler and cache_interval")
        sampler = get_sampler(first.sampler)
        scheduler = sampler.make_scheduler(self.scheduler_config)  # fresh: schedulers are stateful
        sampler.set_timesteps(scheduler, first.steps, device=self.device)

        noises, generators, conds, unconds, scales = [], [], [], [], []
        for job in jobs:
            noise, gens = self.initial_noise(job.params)
            noises.append(noise)
            generators += gens
            n = job.params.n
            conds.append(job.cond.expand(n, -1, -1))  # (n, T, D)
            unconds.append(job.uncond.expand(n, -1, -1))
            scales += [float(job.params.guidance_scale)] * n
        dtype = self.unet.dtype
        latents = torch.cat(noises).to(self.device) * scheduler.init_noise_sigma  # (B, C, h, w) float32
        guided = any(g != 1.0 for g in scales)  # guidance 1 is the conditional prediction alone
        if guided:
            context = torch.cat(unconds + conds).to(self.device, dtype)  # (2B, T, D): uncond rows first
        else:
            context = torch.cat(conds).to(self.device, dtype)  # (B, T, D)
        scale = torch.tensor(scales, device=self.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        step_kwargs = dict(sampler.step_kwargs)
        if sampler.stochastic:
            step_kwargs["generator"] = generators if len(generators) > 1 else generators[0]

        unet = DeepCacheUNet(self.unet, first.cache_interval)  # one per loop: it holds the deep features

        def predict_noise(model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = torch.cat([model_in, model_in]) if guided else model_in  # (2B or B, C, h, w)
            eps = unet(x.to(dtype), t, context).float()
            if not guided:
                return eps
            eps_uncond, eps_cond = eps.chunk(2)  # (B, C, h, w) each
            return eps_uncond + scale * (eps_cond - eps_uncond)

        cancelled: list[DenoiseCancelled | None] = [None] * len(jobs)

        def on_step(done: int, total: int) -> bool:
            self.steps_run = done
            for k, job in enumerate(jobs):
                if cancelled[k] is None and job.on_step is not None and job.on_step(done, total) is False:
                    cancelled[k] = DenoiseCancelled(done, total)
            return not all(c is not None for c in cancelled)  # stop once every job is cancelled

        self.steps_run = 0
        latents, _ = denoising_loop(
            scheduler, latents, predict_noise, step_kwargs=step_kwargs, on_step=on_step
        )

        results: list[torch.Tensor | DenoiseCancelled] = []
        start = 0
        for job, cancel in zip(jobs, cancelled):
            rows = latents[start : start + job.params.n]  # (n, C, h, w)
            start += job.params.n
            results.append(cancel if cancel is not None else rows.float().cpu())
        return results

    # -- vae_decode ------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """VAE-decode latents (n, C, h, w) into n RGB images of (h * 8) x (w * 8) pixels."""
        vae = self.vae
        z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None) is not None:
            z = z + vae.config.shift_factor
        with torch.inference_mode():
            pixels = vae.decode(z).sample  # (n, 3, H, W) in about [-1, 1]
        pixels = (pixels.float() / 2 + 0.5).clamp(0, 1)
        rgb = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (n, H, W, 3)
        return [Image.fromarray(np.ascontiguousarray(image)) for image in rgb]
