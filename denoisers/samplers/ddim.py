"""``ddim``: DDIM, deterministic (eta 0), the first-order baseline and the high-step reference.

Settings and why:
- ``timestep_spacing="trailing"``: the first step starts at t = 999 (pure noise, which is what the
  initial latents are). SD's default "leading" starts at 1000 - 1000 / steps + 1 (751 for 4
  steps), a mismatch that hurts at few steps (Lin et al. 2023, "Common diffusion noise schedules
  and sample steps are flawed").
- ``set_alpha_to_one=True``: the last step lands on clean latents (alpha_bar = 1), like the other
  samplers' ``final_sigmas_type="zero"``; SD's config (False) stops at alpha_bar(0) = 0.99915, i.e.
  leaves sigma ~0.03 of noise, which would make ddim disagree with every other sampler by that
  much however many steps it runs.
- ``clip_sample=False``: latents are not in [-1, 1]; DDIMScheduler's default (True) would clamp them.
"""

from diffusers import DDIMScheduler

from .base import Sampler

SAMPLER = Sampler(
    name="ddim",
    scheduler_cls=DDIMScheduler,
    settings={"timestep_spacing": "trailing", "set_alpha_to_one": True, "clip_sample": False},
    step_kwargs={"eta": 0.0},
)
