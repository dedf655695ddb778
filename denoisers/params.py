"""Validation of ImageParams (``triptych.types``), the denoiser stage's per-request knobs (named fields).

Validation lives here, not in the engine, so the ingress can reject a bad request at the edge
without loading a model; ``DenoiserEngine.validate`` calls the same function with its own limits.
Field names are the public request fields (``size`` for width x height, as in OpenAI's API).
"""

from __future__ import annotations

import math
import secrets

from triptych.config import ImageDefaults
from triptych.errors import RequestError
from triptych.types import ImageParams

from .samplers import get_sampler

MIN_STEPS, DEFAULT_MAX_STEPS = 1, 150
MIN_SIZE, SIZE_MULTIPLE = 8, 8
DEFAULT_MAX_SIZE = ImageDefaults.model_fields["max_size"].default  # defined once, in the config
MAX_IMAGES = 8
MAX_SEED = 2**63 - 1
MAX_CACHE_INTERVAL = 10  # DeepCache: beyond ~5 the deep features are too stale (see README)


def draw_seed() -> int:
    """A fresh random seed for a request that gave none (report it back so the image can be redone)."""
    return secrets.randbits(31)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_image_params(
    params: ImageParams, max_size: int = DEFAULT_MAX_SIZE, max_steps: int = DEFAULT_MAX_STEPS
) -> None:
    """Raise RequestError naming the field (``steps``, ``size``, ``n``, ...) if ``params`` is invalid.

    ``max_size`` bounds width and height (pixels); ``max_steps`` bounds steps (a benchmark may
    raise it for high-step references; requests get the default 150).
    """
    sampler = get_sampler(params.sampler, "sampler")
    if not _is_int(params.steps) or not MIN_STEPS <= params.steps <= max_steps:
        raise RequestError("steps", f"must be an integer in {MIN_STEPS}..{max_steps}, got {params.steps!r}")
    if sampler.max_steps is not None and params.steps > sampler.max_steps:
        raise RequestError(
            "steps",
            f"sampler {sampler.name!r} supports at most {sampler.max_steps} steps, got {params.steps}",
        )
    for side in (params.width, params.height):
        if not _is_int(side) or side % SIZE_MULTIPLE or not MIN_SIZE <= side <= max_size:
            raise RequestError(
                "size",
                f"width and height must be multiples of {SIZE_MULTIPLE} in {MIN_SIZE}..{max_size}, "
                f"got {params.width!r}x{params.height!r}",
            )
    if not _is_int(params.n) or not 1 <= params.n <= MAX_IMAGES:
        raise RequestError("n", f"must be an integer in 1..{MAX_IMAGES}, got {params.n!r}")
    g = params.guidance_scale
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
        raise RequestError("guidance_scale", f"must be a finite number >= 0, got {g!r}")
    max_seed = MAX_SEED - (params.n - 1)  # image i uses seed + i, and every seed fits an int64 (gRPC)
    if not _is_int(params.seed) or not 0 <= params.seed <= max_seed:
        raise RequestError("seed", f"must be an integer in 0..{max_seed} for n={params.n}, got {params.seed!r}")
    if not _is_int(params.cache_interval) or not 1 <= params.cache_interval <= MAX_CACHE_INTERVAL:
        raise RequestError(
            "cache_interval",
            f"must be an integer in 1..{MAX_CACHE_INTERVAL} (1 = no feature caching), got {params.cache_interval!r}",
        )
