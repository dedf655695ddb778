"""``euler``: Euler's method on the probability-flow ODE in sigma space (k-diffusion's ``euler``).

First order like DDIM; a simple baseline for 20-30 steps. ``timestep_spacing="trailing"`` so the
first step starts at t = 999 (sigma_max) rather than at the "linspace" default's slightly lower
interpolated point; the last sigma is 0 (``final_sigmas_type="zero"``). ``s_churn`` stays 0, so
sampling is deterministic.
"""

from diffusers import EulerDiscreteScheduler

from .base import Sampler

SAMPLER = Sampler(
    name="euler",
    scheduler_cls=EulerDiscreteScheduler,
    settings={"timestep_spacing": "trailing", "final_sigmas_type": "zero", "use_karras_sigmas": False},
)
