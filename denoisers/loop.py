"""The sampling loop: walk a scheduler's timesteps with a noise predictor, stoppable after any step.

Kept apart from the engine so it can be tested with an analytic predictor instead of a UNet (for
data that is a single point, the ideal predictor is known in closed form and every consistent
sampler must land exactly on that point).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from diffusers import SchedulerMixin

# (scaled model input (B, C, h, w), timestep) -> predicted noise (B, C, h, w), guidance applied
NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def denoising_loop(
    scheduler: SchedulerMixin,
    latents: torch.Tensor,
    predict_noise: NoisePredictor,
    *,
    step_kwargs: Mapping[str, Any] | None = None,
    on_step: Callable[[int, int], bool] | None = None,
) -> tuple[torch.Tensor, int]:
    """Run ``scheduler.timesteps`` from ``latents`` (B, C, h, w), already scaled by ``init_noise_sigma``.

    ``on_step(steps_done, total)`` runs after each step; when it returns False the loop stops at
    once. Returns the latents reached and the number of steps run. Everything but the callback
    runs in inference mode.
    """
    timesteps = scheduler.timesteps
    total = len(timesteps)
    step_kwargs = dict(step_kwargs or {})
    for i, t in enumerate(timesteps):
        with torch.inference_mode():
            model_in = scheduler.scale_model_input(latents, t)  # (B, C, h, w)
            # DeepCache (cache_interval > 1) lives inside predict_noise: one call per step, and
            # the engine's DeepCacheUNet reuses the last full step's deep features in between.
            eps = predict_noise(model_in, t)  # (B, C, h, w)
            latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample  # (B, C, h, w)
        if on_step is not None and on_step(i + 1, total) is False:
            return latents, i + 1
    return latents, total
