"""EmbeddingCache.ensure against a real Redis: a hit is found without reading the value back, a miss
computes and stores once per key (single flight), and a disabled or dead Redis still returns the value."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
import torch

from cache.embedded import EmbeddedRedis
from cache.embedding_cache import EmbeddingCache

LIVENESS_S = 30  # only so that a broken timeout fails the test instead of hanging it


@pytest.fixture(scope="module")
def server():
    with EmbeddedRedis(maxmemory_mb=32) as srv:
        yield srv


def _value() -> dict[str, torch.Tensor]:
    return {"tokens": torch.arange(12, dtype=torch.float32).reshape(3, 4), "cls_attention": torch.ones(3)}


class Counter:
    def __init__(self):
        self.calls = 0
        self.release = asyncio.Event()

    async def compute(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        await self.release.wait()
        return _value()


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIVENESS_S))


def test_miss_computes_and_stores_then_a_hit_reads_nothing(server):
    cache, key, counter = EmbeddingCache(server.url), f"triptych:test:{uuid.uuid4().hex}", Counter()
    counter.release.set()

    async def go():
        first = await cache.ensure(key, counter.compute)
        second = await cache.ensure(key, counter.compute)
        return first, second, await cache.get(key)

    (tensors, hit), second, stored = _run(go())
    assert hit is False and torch.equal(tensors["tokens"], _value()["tokens"])
    assert second == (None, True) and counter.calls == 1
    assert torch.equal(stored["tokens"], _value()["tokens"])
    assert cache.stats().as_dict() == {"hits": 2, "misses": 1, "errors": 0, "coalesced": 0}  # ensure hit + get


def test_concurrent_callers_share_one_compute(server):
    cache, key, counter = EmbeddingCache(server.url), f"triptych:test:{uuid.uuid4().hex}", Counter()

    async def go():
        calls = [asyncio.ensure_future(cache.ensure(key, counter.compute)) for _ in range(5)]
        while cache.stats().coalesced < 4:  # every later caller joined the first one's flight
            await asyncio.sleep(0)
        counter.release.set()
        return await asyncio.gather(*calls)

    results = _run(go())
    assert counter.calls == 1 and all(hit is False and tensors is not None for tensors, hit in results)


@pytest.mark.parametrize("url", [None, "dead"])
def test_without_redis_the_value_still_comes_back(url):
    if url == "dead":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens once closed
    cache, counter = EmbeddingCache(url), Counter()
    counter.release.set()
    tensors, hit = _run(cache.ensure("triptych:test:k", counter.compute))
    assert hit is False and torch.equal(tensors["cls_attention"], torch.ones(3)) and counter.calls == 1
