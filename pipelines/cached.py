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
    *,
    read: bool = True,
) -> tuple[Tensors | None, bool]:
    """(tensors, cache_hit). Timings get `stage` (only when it ran) and `cache` (lookup + store only).

    read=True: `cache.get_or_compute`, the tensors always come back. read=False: `cache.ensure`, a hit
    comes back as (None, True) without reading the value (the caller passes the key on).
    """
    stage_ms = StageTimings()

    async def timed_compute() -> Tensors:
        with stage_ms.stage(stage):
            return await compute()

    lookup = cache.get_or_compute if read else cache.ensure
    with stage_ms.stage("cache"):
        tensors, hit = await lookup(key, timed_compute)
    ran_ms = stage_ms.ms.get(stage)
    timings.add("cache", stage_ms.ms["cache"] - (ran_ms or 0.0))
    if ran_ms is not None:
        timings.add(stage, ran_ms)
    return tensors, hit
