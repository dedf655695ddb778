"""Denoiser stage engine (plain PyTorch + diffusers, no Ray): text-to-image with named samplers.

- ``engine``: DenoiserEngine (encode_prompt / denoise / decode), DenoiseJob, DenoiseCancelled
- ``params``: validation of ``triptych.types.ImageParams``
- ``samplers``: the sampler registry (``ddim``, ``euler``, ``dpmpp_2m``, ``unipc``, ``lcm``)
- ``deep_cache``: DeepCache feature caching (``ImageParams.cache_interval``), used by the engine
"""

from .engine import DenoiseCancelled, DenoiseJob, DenoiserEngine
from .params import draw_seed, validate_image_params
from .samplers import SAMPLERS, get_sampler, make_scheduler

__all__ = [
    "SAMPLERS",
    "DenoiseCancelled",
    "DenoiseJob",
    "DenoiserEngine",
    "draw_seed",
    "get_sampler",
    "make_scheduler",
    "validate_image_params",
]
