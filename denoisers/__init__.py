"""Text-to-image stage engines (plain PyTorch + transformers/diffusers, no Ray), with named samplers.

- ``text_encoder``: TextEncoderEngine (prompt -> CLIP text embeddings; loads only the text encoder)
- ``engine``: DenoiserEngine (denoise / decode; loads UNet, VAE, scheduler config), DenoiseJob,
  DenoiseCancelled, ``batch_key`` (what requests share to run in one sampling loop)
- ``protocol``: TextEncoderEngineProtocol, DenoiserEngineProtocol (what the deployments hold)
- ``params``: validation of ``triptych.types.ImageParams``
- ``samplers``: the sampler registry (``ddim``, ``euler``, ``dpmpp_2m``, ``unipc``, ``lcm``)
- ``deep_cache``: DeepCache feature caching (``ImageParams.cache_interval``), used by the engine
"""

from .engine import DenoiseCancelled, DenoiseJob, DenoiserEngine, batch_key
from .params import draw_seed, validate_image_params
from .protocol import DenoiserEngineProtocol, TextEncoderEngineProtocol
from .samplers import SAMPLERS, get_sampler, make_scheduler
from .text_encoder import TextEncoderEngine

__all__ = [
    "SAMPLERS",
    "DenoiseCancelled",
    "DenoiseJob",
    "DenoiserEngine",
    "DenoiserEngineProtocol",
    "TextEncoderEngine",
    "TextEncoderEngineProtocol",
    "batch_key",
    "draw_seed",
    "get_sampler",
    "make_scheduler",
    "validate_image_params",
]
