"""``unipc``: UniPC, a multistep predictor-corrector (Zhao et al. 2023), best reported at 5-10 steps.

Settings: order 2 with the bh2 variant and x0 prediction (the diffusers defaults recommended for
guided sampling), ``timestep_spacing="trailing"`` to start at t = 999, lower order on the final
steps, and ``final_sigmas_type="zero"`` to finish on clean latents.
"""

from diffusers import UniPCMultistepScheduler

from .base import Sampler

SAMPLER = Sampler(
    name="unipc",
    scheduler_cls=UniPCMultistepScheduler,
    settings={
        "solver_order": 2,
        "solver_type": "bh2",
        "predict_x0": True,
        "timestep_spacing": "trailing",
        "lower_order_final": True,
        "use_karras_sigmas": False,
        "final_sigmas_type": "zero",
    },
)
