"""What a sampler is: a diffusers scheduler class plus the settings that make it one named recipe.

A checkpoint's ``scheduler_config.json`` says two different things: which noise schedule the model
was *trained* with (betas, ``num_train_timesteps``, ``prediction_type``, ...) and how its authors
liked to *sample* (scheduler class, timestep spacing, Karras sigmas, ...). A sampler keeps only the
first kind (``MODEL_KEYS``) and supplies the second itself, so a sampler name means the same
integrator on every checkpoint (e.g. ``euler`` never silently inherits ``use_karras_sigmas`` from a
DPM-Solver config, and no "unexpected config attribute" warning is logged per request).

``Sampler.set_timesteps`` also repairs a diffusers off-by-one: "trailing" spacing builds
``np.arange(1000, 0, -1000 / steps)``, which has ``steps + 1`` entries when ``1000 / (1000 / steps)``
rounds above ``steps`` (61, 103, 121 and 122 steps in 1..150); the extra entry is t = -1, which
UNet and ``alphas_cumprod[-1]`` (the *noisiest* level) would then be asked about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from diffusers import SchedulerMixin

# Keys of a scheduler config that describe the trained model, not the sampling recipe.
MODEL_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
)


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Sampler:
    """One named sampling recipe. Make a fresh scheduler per request: schedulers are stateful.

    Attributes:
        name: the public knob (``ImageParams.sampler``).
        scheduler_cls: the diffusers scheduler class.
        settings: constructor arguments that define the recipe (override the checkpoint's).
        step_kwargs: extra keyword arguments for ``scheduler.step`` (e.g. DDIM's ``eta``).
        max_steps: the most steps this recipe supports, if it has a limit of its own.
        stochastic: ``step`` draws noise, so it must get the per-image generators.
    """

    name: str
    scheduler_cls: type[SchedulerMixin]
    settings: Mapping[str, Any] = field(default_factory=_frozen)
    step_kwargs: Mapping[str, Any] = field(default_factory=_frozen)
    max_steps: int | None = None
    stochastic: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _frozen(self.settings))
        object.__setattr__(self, "step_kwargs", _frozen(self.step_kwargs))

    def make_scheduler(self, base_config: Mapping[str, Any]) -> SchedulerMixin:
        """A new scheduler: the model keys of ``base_config`` (a checkpoint's scheduler config) + settings."""
        model = {key: base_config[key] for key in MODEL_KEYS if key in base_config}
        return self.scheduler_cls(**{**model, **self.settings})

    def set_timesteps(
        self, scheduler: SchedulerMixin, steps: int, device: str | torch.device | None = None
    ) -> None:
        """``scheduler.set_timesteps(steps)``, guaranteeing exactly ``steps`` timesteps, all >= 0."""
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps  # (steps,) descending
        if len(timesteps) == steps + 1 and timesteps[-1] < 0:  # the trailing-spacing off-by-one
            scheduler.timesteps = timesteps[:-1]
            sigmas = getattr(scheduler, "sigmas", None)  # (steps + 2,) ending with the final sigma
            if sigmas is not None:
                scheduler.sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])  # drop sigma(t=-1), keep the last
            scheduler.num_inference_steps = steps
        if len(scheduler.timesteps) != steps or scheduler.timesteps[-1] < 0:
            raise RuntimeError(f"{self.name}: {steps} steps gave timesteps {scheduler.timesteps.tolist()}")
