"""``lcm``: latent consistency model sampling, 2-4 steps, for consistency-distilled models only.

Each step predicts clean latents with the consistency-model boundary conditions and, between
steps, re-noises them to the next timestep with fresh noise. That makes it *stochastic*: the
engine passes each image's own seeded generator so results stay reproducible.

On a model that was not distilled for it (SD itself, the tiny profile) it is a poor sampler and
does not converge to the ODE solution as steps grow; it is offered so the benchmark can show that
honestly. Its timesteps are picked from the distillation grid of ``original_inference_steps=50``
(t = 19, 39, ..., 999), so it supports at most 50 steps; ``timestep_spacing`` does not apply.
"""

from diffusers import LCMScheduler

from .base import Sampler

ORIGINAL_INFERENCE_STEPS = 50

SAMPLER = Sampler(
    name="lcm",
    scheduler_cls=LCMScheduler,
    settings={
        "original_inference_steps": ORIGINAL_INFERENCE_STEPS,
        "set_alpha_to_one": True,
        "clip_sample": False,
    },
    max_steps=ORIGINAL_INFERENCE_STEPS,
    stochastic=True,
)
