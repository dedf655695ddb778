"""Joint image-text embeddings: items -> one cache entry per item -> the misses in one stage call per kind.

Each item's vector is cached under its own content key (``cache_key`` with stage ``clip_text`` or
``clip_image``, the embedder's model id and revision, its preprocessing, and the exact text or image
bytes), so an item seen once is a hit in every later request, whatever else that request holds.
Equal items within a request are looked up and computed once; the items no one has cached go to the
embedder stage together (one ``embed_texts`` and one ``embed_images`` call, run concurrently), and
the stage batches them with other requests' items. Concurrent requests in one replica that miss on
the same key share one computation (single flight); if the computing request fails or goes away,
the waiting one computes the item itself (its own errors name its own fields).

Cheap shape checks happen here, before any stage runs (empty input, too many items, an item that is
neither a text nor an image); what needs the model (a text past the context, bytes that are not an
image) is checked by the stage for the items it computes, naming the item's field: a cached item was
already valid when it was stored (its key is the content's hash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch

from cache import EmbeddingCache, cache_key
from pipelines.stages import EmbedderStage
from pipelines.timing import StageTimings
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import EmbedderInfo, EmbeddingResult, EmbedItem

TEXT_CACHE_STAGE = "clip_text"
IMAGE_CACHE_STAGE = "clip_image"

Entry = dict[str, torch.Tensor]  # {"embedding": (D,) float32, "tokens": (1,) int64}


class EmbeddingPipeline:
    """Embeds texts and images into one normalised joint space, through the embedding cache."""

    def __init__(self, embedder: EmbedderStage, cache: EmbeddingCache, limits: Limits | None = None):
        self._embedder = embedder
        self._cache = cache
        self._limits = limits or Limits()
        self._inflight: dict[str, asyncio.Future] = {}  # key -> its entry (None: computing it failed)

    async def info(self) -> EmbedderInfo:
        """The embedder's model id, dimensions, context length, ... (asked once per stage client)."""
        return await self._embedder.info()

    async def embed(self, items: Sequence[EmbedItem], field: str = "input") -> EmbeddingResult:
        """(N, D) float32 unit vectors of ``items`` in order; RequestError names ``field[i]`` for a bad item."""
        fields = check_items(items, field, self._limits.max_embedding_inputs)
        info = await self._embedder.info()
        keys = await asyncio.to_thread(lambda: [item_key(item, info) for item in items])  # hashes: off the loop
        first = {}  # key -> index of the first item with that key
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        timings = StageTimings()
        with timings.stage("cache"):
            looked_up = await asyncio.gather(*(self._cache.get(key) for key in first))
        entries: dict[str, Entry] = {key: entry for key, entry in zip(first, looked_up) if entry is not None}
        missing = {key: index for key, index in first.items() if key not in entries}
        if missing:
            entries.update(await self._compute_once(missing, items, fields, timings))
        vectors = torch.stack([entries[key]["embedding"] for key in keys]).float()  # (N, D)
        tokens = sum(int(entries[key]["tokens"][0]) for key in keys)
        return EmbeddingResult(vectors, cache_hit=not missing, prompt_tokens=tokens, timings_ms=timings.ms)

    async def _compute_once(
        self, missing: dict[str, int], items: Sequence[EmbedItem], fields: list[str], timings: StageTimings
    ) -> dict[str, Entry]:
        """Entries of the missing keys: computed here, or awaited from a request already computing them."""
        waiting = {key: self._inflight[key] for key in missing if key in self._inflight}
        mine = {key: index for key, index in missing.items() if key not in waiting}
        entries = await self._compute_and_store(mine, items, fields, timings) if mine else {}
        for key, future in waiting.items():
            entry = await asyncio.shield(future)
            if entry is None:  # that request failed or went away: compute it here, with this request's field
                entry = (await self._compute_and_store({key: missing[key]}, items, fields, timings))[key]
            entries[key] = entry
        return entries

    async def _compute_and_store(
        self, mine: dict[str, int], items: Sequence[EmbedItem], fields: list[str], timings: StageTimings
    ) -> dict[str, Entry]:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in mine}
        self._inflight.update(futures)
        entries: dict[str, Entry] = {}
        try:
            entries = await self._run_stage(mine, items, fields, timings)
        finally:  # waiters get the entry, or None (then they compute it themselves)
            for key, future in futures.items():
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                future.set_result(entries.get(key))
        with timings.stage("cache"):
            await asyncio.gather(*(self._cache.put(key, entry) for key, entry in entries.items()))
        return entries

    async def _run_stage(
        self, mine: dict[str, int], items: Sequence[EmbedItem], fields: list[str], timings: StageTimings
    ) -> dict[str, Entry]:
        texts = [(key, index) for key, index in mine.items() if items[index].text is not None]
        images = [(key, index) for key, index in mine.items() if items[index].text is None]
        groups, calls = [], []
        if texts:
            groups.append(texts)
            calls.append(self._embedder.embed_texts([items[i].text for _, i in texts], [fields[i] for _, i in texts]))
        if images:
            groups.append(images)
            calls.append(self._embedder.embed_images([items[i].image for _, i in images],
                                                     [fields[i] for _, i in images]))  # fmt: skip
        with timings.stage("embed"):
            outputs = await asyncio.gather(*calls)
        entries = {}
        for group, output in zip(groups, outputs):
            for row, (key, _) in enumerate(group):
                entries[key] = {"embedding": output.vectors[row].float().clone(),  # (D,)
                                "tokens": torch.tensor([output.tokens[row]], dtype=torch.int64)}  # fmt: skip
        return entries


def check_items(items: Sequence[EmbedItem], field: str, max_inputs: int) -> list[str]:
    """The field name of each item (``field[i]``); RequestError for an empty or oversized request, or an
    item that is not exactly one non-empty text or image."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise RequestError(field, "must not be empty: send at least one text or image")
    if len(items) > max_inputs:
        raise RequestError(field, f"{len(items)} inputs; at most {max_inputs} per request are allowed")
    fields = []
    for index, item in enumerate(items):
        name = f"{field}[{index}]"
        if not isinstance(item, EmbedItem) or (item.text is None) == (item.image is None):
            raise RequestError(name, "must be exactly one of a text or an image")
        if item.text is not None and (not isinstance(item.text, str) or not item.text.strip()):
            raise RequestError(name, "must be a non-empty string")
        if item.image is not None and (not isinstance(item.image, (bytes, bytearray)) or not item.image):
            raise RequestError(name, "must be non-empty image file bytes")
        fields.append(name)
    return fields


def item_key(item: EmbedItem, info: EmbedderInfo) -> str:
    """The cache key of one item's vector: the embedder, its preprocessing and the exact content."""
    if item.text is not None:
        return cache_key(TEXT_CACHE_STAGE, info.model_id, info.revision, info.preprocess, item.text.encode("utf-8"))
    return cache_key(IMAGE_CACHE_STAGE, info.model_id, info.revision, info.preprocess, bytes(item.image))
