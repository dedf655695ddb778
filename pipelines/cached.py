"""One cached stage call: look a key up in the embedding cache, run the stage only on a miss."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import torch

from cache import EmbeddingCache
from pipelines.timing import StageTimings

Tensors = dict[str, torch.Tensor]


async def cached_stage_call(
    cache: EmbeddingCache,
    key: str,
    compute: Callable[[], Awaitable[Tensors]],
    stage: str,
    timings: StageTimings,
) -> tuple[Tensors, bool]:
    """(tensors, cache_hit). Timings get `stage` (only when it ran) and `cache` (lookup + store only)."""
    stage_ms = StageTimings()

    async def timed_compute() -> Tensors:
        with stage_ms.stage(stage):
            return await compute()

    with stage_ms.stage("cache"):
        tensors, hit = await cache.get_or_compute(key, timed_compute)
    ran_ms = stage_ms.ms.get(stage)
    timings.add("cache", stage_ms.ms["cache"] - (ran_ms or 0.0))
    if ran_ms is not None:
        timings.add(stage, ran_ms)
    return tensors, hit
