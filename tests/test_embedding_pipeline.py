"""EmbeddingPipeline in one process (tiny CLIP, an embedded Redis, no Ray): per-item cache entries (a
second call is a hit and the stage is not called again), misses in one batched call per kind, equal
items computed once, single flight across concurrent requests, fail-open without Redis, and bad items
rejected naming the field before (or, for what needs the model, by) the stage."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cache import EmbeddedRedis, EmbeddingCache
from encoders.clip_embedder import ClipEmbedder
from models.tiny_clip import ensure_tiny_clip
from pipelines.embeddings import EmbeddingPipeline
from pipelines.local_embedder import LocalEmbedderStage
from tests.serving import image_bytes
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.types import EmbedItem


@pytest.fixture(scope="module")
def engine(tmp_path_factory, one_torch_thread) -> ClipEmbedder:
    return ClipEmbedder.from_dir(ensure_tiny_clip(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def redis_url():
    with EmbeddedRedis(maxmemory_mb=32) as server:
        yield server.url


class RecordingStage(LocalEmbedderStage):
    """Records each call's inputs; `gate` (when set) holds every call until it is opened."""

    def __init__(self, engine):
        super().__init__(engine)
        self.texts: list[list[str]] = []
        self.images: list[int] = []
        self.gate: asyncio.Event | None = None

    async def embed_texts(self, texts, fields):
        self.texts.append(list(texts))
        if self.gate is not None:
            await self.gate.wait()
        return await super().embed_texts(texts, fields)

    async def embed_images(self, images, fields):
        self.images.append(len(images))
        return await super().embed_images(images, fields)


def _pipeline(engine, url, limits=None) -> tuple[EmbeddingPipeline, RecordingStage]:
    stage = RecordingStage(engine)
    return EmbeddingPipeline(stage, EmbeddingCache(url), limits), stage


def test_second_call_is_a_hit_and_the_stage_is_not_called_again(engine, redis_url):
    pipeline, stage = _pipeline(engine, redis_url)
    items = [EmbedItem(text="a unique red circle"), EmbedItem(image=image_bytes((1, 2, 3))),
             EmbedItem(text="a unique blue square")]
    first = asyncio.run(pipeline.embed(items))
    assert (stage.calls, stage.texts, stage.images) == (2, [["a unique red circle", "a unique blue square"]], [1])
    assert first.vectors.shape == (3, 32) and not first.cache_hit and {"embed", "cache"} <= set(first.timings_ms)
    torch.testing.assert_close(first.vectors.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(first.vectors[0], engine.embed_texts(["a unique red circle"])[0])
    second = asyncio.run(pipeline.embed(items))
    assert stage.calls == 2 and second.cache_hit and "embed" not in second.timings_ms
    torch.testing.assert_close(second.vectors, first.vectors, rtol=0, atol=0)
    assert second.prompt_tokens == first.prompt_tokens == sum(engine.count_tokens(
        ["a unique red circle", "a unique blue square"])) + engine.info().image_tokens


def test_each_item_is_its_own_entry_and_equal_items_are_computed_once(engine, redis_url):
    pipeline, stage = _pipeline(engine, redis_url)
    asyncio.run(pipeline.embed([EmbedItem(text="seen before")]))
    result = asyncio.run(pipeline.embed([EmbedItem(text="new one"), EmbedItem(text="seen before"),
                                         EmbedItem(text="new one")]))  # fmt: skip
    assert stage.texts == [["seen before"], ["new one"]]  # only the unseen text, once
    assert not result.cache_hit
    torch.testing.assert_close(result.vectors[0], result.vectors[2], rtol=0, atol=0)


def test_concurrent_requests_for_one_new_item_compute_it_once(engine, redis_url):
    pipeline, stage = _pipeline(engine, redis_url)

    async def go():
        stage.gate = asyncio.Event()
        first = asyncio.ensure_future(pipeline.embed([EmbedItem(text="shared and new")]))
        while not stage.texts:  # the first request is inside the stage
            await asyncio.sleep(0)
        second = asyncio.ensure_future(pipeline.embed([EmbedItem(text="shared and new"), EmbedItem(text="other")]))
        while len(stage.texts) < 2:
            await asyncio.sleep(0)
        stage.gate.set()
        return await asyncio.gather(first, second)

    first, second = asyncio.run(go())
    assert stage.texts == [["shared and new"], ["other"]]
    torch.testing.assert_close(first.vectors[0], second.vectors[0], rtol=0, atol=0)


def test_without_redis_every_call_computes_and_still_answers(engine):
    pipeline, stage = _pipeline(engine, None)
    for _ in range(2):
        result = asyncio.run(pipeline.embed([EmbedItem(text="no cache")]))
        assert not result.cache_hit and result.vectors.shape == (1, 32)
    assert stage.calls == 2


@pytest.mark.parametrize("items, field, message", [
    ([], "input", "must not be empty"),
    ([EmbedItem(text="x")] * 4, "input", "at most 3"),
    ([EmbedItem(text="ok"), EmbedItem()], "input[1]", "exactly one of a text or an image"),
    ([EmbedItem(text="ok", image=b"x")], "input[0]", "exactly one"),
    ([EmbedItem(text="  ")], "input[0]", "non-empty string"),
    ([EmbedItem(image=b"")], "input[0]", "non-empty image"),
])
def test_bad_requests_are_rejected_before_any_stage(engine, items, field, message):
    pipeline, stage = _pipeline(engine, None, Limits(max_embedding_inputs=3))
    with pytest.raises(RequestError, match=message) as caught:
        asyncio.run(pipeline.embed(items))
    assert caught.value.field == field and stage.calls == 0


def test_what_needs_the_model_is_rejected_by_the_stage_naming_the_item(engine, redis_url):
    pipeline, _ = _pipeline(engine, redis_url)
    with pytest.raises(RequestError, match="at most 16") as caught:
        asyncio.run(pipeline.embed([EmbedItem(text="fine"), EmbedItem(text="word " * 40)], field="inputs"))
    assert caught.value.field == "inputs[1]"
    with pytest.raises(RequestError, match="not a recognised image") as caught:
        asyncio.run(pipeline.embed([EmbedItem(text="fine"), EmbedItem(image=b"GIF? no")]))
    assert caught.value.field == "input[1]"
    assert asyncio.run(pipeline.embed([EmbedItem(text="fine")])).vectors.shape == (1, 32)  # still serving
