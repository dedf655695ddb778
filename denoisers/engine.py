"""DenoiserEngine: text embeddings -> denoised latents -> images, for an SD-format model.

Plain PyTorch on the UNet, the VAE and the scheduler config of an SD-format directory (the text
encoder is ``denoisers.text_encoder.TextEncoderEngine``'s, and is never loaded here); no diffusers
pipeline is used, so the sampling loop is ours: per-image seeded noise, batching, a progress
callback and cancellation. Denoising and decoding are separate methods:

    cond = text.encode_prompt("a red circle")                # (T, D)   text_encode (TextEncoderEngine)
    uncond = text.encode_prompt("", allow_empty=True)        # (T, D)   (or a negative prompt)
    latents = engine.denoise(cond, uncond, params, on_step)  # (n, C, h, w)   denoise
    images = engine.decode(latents)                          # n x PIL RGB     vae_decode

Reproducibility: image i of a request starts from ``torch.randn`` of a CPU generator seeded with
``seed + i`` (the same on every machine and process, whatever device runs the UNet), and a
stochastic sampler (``lcm``) draws its later noise from that same generator. So the same seed
gives the same image whether it is the first or the fifth of ``n``.

Requests batch into one loop when they share ``batch_key(params)``; the Serve deployment groups
its queue with the same function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from diffusers import AutoencoderKL, UNet2DConditionModel

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


def batch_key(params: ImageParams) -> tuple:
    """What requests must share to run in one sampling loop: (width, height, steps, sampler, cache_interval)."""
    return (params.width, params.height, params.steps, params.sampler, params.cache_interval)


class DenoiserEngine:
    """Text-to-image sampling and decoding on an SD-format model's UNet and VAE.

    Holds no per-request state: one engine serves concurrent calls (from a replica's threads).

    Args:
        unet: the model's ``UNet2DConditionModel``.
        vae: the model's ``AutoencoderKL``.
        scheduler_config: the checkpoint's scheduler config (its noise schedule; ``denoisers.samplers``).
        model_id: the model's name, for messages.
        max_image_size: the largest width / height accepted, in pixels.
        max_steps: the most steps accepted (raise it only for offline high-step references).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler_config: dict[str, Any],
        *,
        model_id: str,
        max_image_size: int = DEFAULT_MAX_SIZE,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.scheduler_config = dict(scheduler_config)  # the model's noise schedule
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.unet.config.in_channels)
        self.device = self.unet.device
        self.model_id = model_id
        self.max_image_size = max_image_size
        self.max_steps = max_steps
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
        """Load ``unet/``, ``vae/`` and ``scheduler/`` of an SD-format directory offline (diffusers' loaders).

        The scheduler config is read through the checkpoint's own scheduler class, as diffusers'
        pipeline loader does, so keys the file leaves out get that class's defaults.
        """
        import diffusers
        from diffusers import AutoencoderKL, UNet2DConditionModel

        model_dir = Path(model_dir).resolve()
        unet = UNet2DConditionModel.from_pretrained(
            model_dir, subfolder="unet", torch_dtype=dtype, local_files_only=True
        ).to(device)
        vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", torch_dtype=dtype, local_files_only=True)
        config_path = model_dir / "scheduler" / "scheduler_config.json"
        raw = json.loads(config_path.read_text())
        scheduler_cls = getattr(diffusers, str(raw.get("_class_name")), None)
        if scheduler_cls is None:
            raise ValueError(f"{config_path}: _class_name {raw.get('_class_name')!r} is not a diffusers scheduler")
        return cls(
            unet,
            vae.to(device),
            scheduler_cls.from_config(raw).config,
            model_id=model_dir.name,
            max_image_size=max_image_size,
            max_steps=max_steps,
        )

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
        once and raises DenoiseCancelled (its ``steps_run`` says how many steps ran).
        Raises RequestError for invalid ``params``.
        """
        (result,) = self.denoise_batch([DenoiseJob(cond, uncond, params, on_step)])
        if isinstance(result, DenoiseCancelled):
            raise result
        return result

    def denoise_batch(self, jobs: Sequence[DenoiseJob]) -> list[torch.Tensor | DenoiseCancelled]:
        """Run several requests through one sampling loop (one UNet call per step for all images).

        Jobs must share ``batch_key`` (size, sampler, steps, cache_interval; ValueError otherwise); guidance,
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
        if any(batch_key(j.params) != batch_key(first) for j in jobs):
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
            for k, job in enumerate(jobs):
                if cancelled[k] is None and job.on_step is not None and job.on_step(done, total) is False:
                    cancelled[k] = DenoiseCancelled(done, total)
            return not all(c is not None for c in cancelled)  # stop once every job is cancelled

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
