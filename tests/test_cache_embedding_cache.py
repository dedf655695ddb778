"""cache.embedding_cache against real Redis servers: hits/misses, TTL, corruption, single flight, fail-open.

Every test starts its own servers on free ports (never the machine's 6379) and drives coroutines with
asyncio.run. Waits are event- or deadline-driven, never sleep-and-hope.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import socket
import time
import uuid

import pytest
import redis
import torch

from cache.embedded import EmbeddedRedis
from cache.embedding_cache import CacheStats, EmbeddingCache

LIVENESS_S = 30  # only so that a broken timeout fails the test instead of hanging it


@pytest.fixture(scope="module")
def server():
    with EmbeddedRedis(maxmemory_mb=64) as srv:
        yield srv


def _key() -> str:
    return f"triptych:test:{uuid.uuid4().hex}"


def _features(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"tokens": torch.randn(6, 8, generator=gen).half(), "cls_attention": torch.rand(6, generator=gen)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name, tensor in a.items():
        assert tensor.dtype == b[name].dtype and torch.equal(tensor, b[name])


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIVENESS_S))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_miss_put_hit_counts(server):
    cache = EmbeddingCache(server.url)
    key, value = _key(), _features()

    async def main():
        assert await cache.get(key) is None
        await cache.put(key, value)
        got = await cache.get(key)
        await cache.close()
        return got

    _assert_same(_run(main()), value)
    assert cache.stats() == CacheStats(hits=1, misses=1, errors=0, coalesced=0)
    assert cache.stats().as_dict() == {"hits": 1, "misses": 1, "errors": 0, "coalesced": 0}


def test_values_are_shared_across_instances(server):
    key, value = _key(), _features(3)
    writer, reader = EmbeddingCache(server.url), EmbeddingCache(server.url)

    async def main():
        await writer.put(key, value)
        got = await reader.get(key)
        await writer.close()
        await reader.close()
        return got

    _assert_same(_run(main()), value)


def test_put_sets_ttl(server):
    cache = EmbeddingCache(server.url, ttl_s=120)
    key = _key()

    async def main():
        await cache.put(key, _features())
        await cache.close()

    _run(main())
    ttl = redis.Redis.from_url(server.url).ttl(key)
    assert 0 < ttl <= 120


def test_get_or_compute_miss_then_hit(server):
    cache = EmbeddingCache(server.url)
    key, value = _key(), _features(1)
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        return value

    async def main():
        first = await cache.get_or_compute(key, compute)
        second = await cache.get_or_compute(key, compute)
        await cache.close()
        return first, second

    (first, first_hit), (second, second_hit) = _run(main())
    assert (first_hit, second_hit) == (False, True)
    assert calls == 1
    _assert_same(first, value)
    _assert_same(second, value)
    assert cache.stats() == CacheStats(hits=1, misses=1, errors=0, coalesced=0)


def test_corrupted_value_is_a_miss_and_an_error_then_repaired(server, caplog):
    key, value = _key(), _features(2)
    redis.Redis.from_url(server.url).set(key, b"TRPT\x01\x00garbage")
    cache = EmbeddingCache(server.url)

    async def compute():
        return value

    async def main():
        assert await cache.get(key) is None
        got, hit = await cache.get_or_compute(key, compute)  # recompute overwrites the bad entry
        again = await cache.get(key)
        await cache.close()
        return got, hit, again

    with caplog.at_level(logging.WARNING, logger="cache.embedding_cache"):
        got, hit, again = _run(main())
    assert hit is False
    _assert_same(got, value)
    _assert_same(again, value)
    assert cache.stats() == CacheStats(hits=1, misses=2, errors=2, coalesced=0)
    assert "failed to decode" in caplog.text


def test_single_flight_runs_compute_once(server):
    cache = EmbeddingCache(server.url)
    key, value = _key(), _features(4)
    calls = 0

    async def main():
        started, release = asyncio.Event(), asyncio.Event()

        async def compute():
            nonlocal calls
            calls += 1
            started.set()
            await release.wait()  # hold every caller inside the same flight
            return value

        callers = [asyncio.ensure_future(cache.get_or_compute(key, compute)) for _ in range(10)]
        await started.wait()
        coalesced_while_running = cache.stats().coalesced
        release.set()
        results = await asyncio.gather(*callers)
        later = await cache.get_or_compute(key, compute)
        await cache.close()
        return coalesced_while_running, results, later

    coalesced_while_running, results, (later_value, later_hit) = _run(main())
    assert calls == 1
    assert coalesced_while_running == 9
    assert [hit for _, hit in results] == [False] * 10
    for got, _ in results:
        _assert_same(got, value)
    assert later_hit is True
    _assert_same(later_value, value)
    assert cache.stats() == CacheStats(hits=1, misses=1, errors=0, coalesced=9)


def test_single_flight_shares_exceptions_and_then_forgets(server):
    cache = EmbeddingCache(server.url)
    key = _key()
    calls = 0

    async def main():
        started, release = asyncio.Event(), asyncio.Event()

        async def failing():
            nonlocal calls
            calls += 1
            started.set()
            await release.wait()
            raise RuntimeError("encoder exploded")

        callers = [asyncio.ensure_future(cache.get_or_compute(key, failing)) for _ in range(3)]
        await started.wait()
        release.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)

        async def working():
            nonlocal calls
            calls += 1
            return _features(5)

        _, hit = await cache.get_or_compute(key, working)  # the failed flight is not reused
        await cache.close()
        return outcomes, hit

    outcomes, hit = _run(main())
    assert all(isinstance(o, RuntimeError) and "exploded" in str(o) for o in outcomes)
    assert calls == 2 and hit is False


def test_cancelled_leader_does_not_cancel_the_shared_compute(server):
    cache = EmbeddingCache(server.url)
    key, value = _key(), _features(6)

    async def main():
        started, release = asyncio.Event(), asyncio.Event()

        async def compute():
            started.set()
            await release.wait()
            return value

        leader = asyncio.ensure_future(cache.get_or_compute(key, compute))
        follower = asyncio.ensure_future(cache.get_or_compute(key, compute))
        await started.wait()
        leader.cancel()
        release.set()
        got, _ = await follower
        stored = await cache.get(key)
        await cache.close()
        return leader.cancelled(), got, stored

    leader_cancelled, got, stored = _run(main())
    assert leader_cancelled
    _assert_same(got, value)
    _assert_same(stored, value)


def test_different_keys_do_not_coalesce(server):
    cache = EmbeddingCache(server.url)
    calls: list[str] = []

    async def main():
        both_started = asyncio.Event()

        def make(name):
            async def compute():
                calls.append(name)
                if len(calls) == 2:
                    both_started.set()
                await both_started.wait()  # deadlocks (and times out) if the two keys were coalesced
                return _features()

            return compute

        await asyncio.gather(cache.get_or_compute(_key(), make("a")), cache.get_or_compute(_key(), make("b")))
        await cache.close()

    _run(main())
    assert sorted(calls) == ["a", "b"]
    assert cache.stats().coalesced == 0


@pytest.mark.parametrize("url", [None, ""])
def test_disabled_cache_always_computes(url):
    cache = EmbeddingCache(url)
    assert not cache.enabled
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        return _features()

    async def main():
        await cache.put("k", _features())
        assert await cache.get("k") is None
        first = await cache.get_or_compute("k", compute)
        second = await cache.get_or_compute("k", compute)
        await cache.close()
        return first[1], second[1]

    assert _run(main()) == (False, False)
    assert calls == 2
    assert cache.stats() == CacheStats(hits=0, misses=3, errors=0, coalesced=0)


def test_closed_port_fails_open_and_skips_redis_while_down(caplog):
    cache = EmbeddingCache(f"redis://127.0.0.1:{_closed_port()}/0", retry_after_s=60)
    value = _features()

    async def compute():
        return value

    async def main():
        results = [await cache.get_or_compute(_key(), compute) for _ in range(20)]
        await cache.put(_key(), value)
        assert await cache.get(_key()) is None
        await cache.close()
        return results

    with caplog.at_level(logging.WARNING, logger="cache.embedding_cache"):
        results = _run(main())
    assert all(hit is False for _, hit in results)
    for got, _ in results:
        _assert_same(got, value)
    stats = cache.stats()
    assert stats.errors == 1  # the first failure trips the breaker; the rest never touch the socket
    assert stats.misses == 21 and stats.hits == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


def test_dead_redis_warnings_are_rate_limited(caplog):
    cache = EmbeddingCache(f"redis://127.0.0.1:{_closed_port()}/0", retry_after_s=0)

    async def main():
        for _ in range(25):
            assert await cache.get(_key()) is None
        await cache.close()

    with caplog.at_level(logging.WARNING, logger="cache.embedding_cache"):
        _run(main())
    assert cache.stats().errors == 25  # retry_after_s=0: every lookup really tries
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_unresponsive_server_times_out_as_a_miss():
    # Accepts TCP connections (kernel backlog) but never answers: a hung Redis.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        cache = EmbeddingCache(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.1)

        async def main():
            got = await cache.get(_key())
            await cache.close()
            return got

        assert _run(main()) is None
    assert cache.stats().errors == 1 and cache.stats().misses == 1


def test_outage_and_recovery_on_same_port():
    first = EmbeddedRedis().start()
    port = first.port
    cache = EmbeddingCache(first.url, retry_after_s=0.05)
    value = _features(7)
    key = _key()

    async def compute():
        return value

    async def main():
        _, hit = await cache.get_or_compute(key, compute)
        assert hit is False
        _, hit = await cache.get_or_compute(key, compute)
        assert hit is True

        first.stop()
        during = [await cache.get_or_compute(_key(), compute) for _ in range(5)]
        errors_during_outage = cache.stats().errors

        second = EmbeddedRedis(port=port).start()  # empty server: the old entries are gone
        try:
            deadline = time.monotonic() + 10
            recovered_key = _key()
            while True:
                await cache.put(recovered_key, value)
                if await cache.get(recovered_key) is not None:
                    break
                assert time.monotonic() < deadline, "cache did not reconnect to the restarted Redis"
                await asyncio.sleep(0.05)
            _, hit_after = await cache.get_or_compute(recovered_key, compute)
        finally:
            await cache.close()
            second.stop()
        return during, errors_during_outage, hit_after

    during, errors_during_outage, hit_after = _run(main())
    assert [hit for _, hit in during] == [False] * 5
    for got, _ in during:
        _assert_same(got, value)
    assert errors_during_outage >= 1
    assert hit_after is True


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_usable_from_successive_event_loops(server):
    _use_from_successive_loops(server.url)
    gc.collect()  # the abandoned clients' sockets are collected here, under this test's filters


def _use_from_successive_loops(url: str) -> None:
    cache = EmbeddingCache(url)
    key, value = _key(), _features(8)

    async def write():
        await cache.put(key, value)  # no close(): the next loops must not reuse this loop's client

    async def read():
        return await cache.get(key)

    _run(write())
    for _ in range(3):
        _assert_same(_run(read()), value)
    assert cache.stats().errors == 0
    assert len(cache._loops) == 1  # ended loops (and their clients) are not kept alive


def test_pickles_as_configuration(server):
    cache = EmbeddingCache(server.url, ttl_s=42, socket_timeout_s=0.5, retry_after_s=2.0)
    clone = pickle.loads(pickle.dumps(cache))
    assert (clone.url, clone.ttl_s, clone.socket_timeout_s, clone.retry_after_s) == (server.url, 42, 0.5, 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "notaurl://x"},
        {"url": "redis://h/0", "ttl_s": 0},
        {"url": "redis://h/0", "socket_timeout_s": 0},
    ],
)
def test_bad_configuration_is_loud(kwargs):
    with pytest.raises(ValueError):
        EmbeddingCache(**kwargs)


def test_stats_are_frozen():
    stats = EmbeddingCache(None).stats()
    with pytest.raises(AttributeError):
        stats.hits = 5  # type: ignore[misc]


def test_url_found_on_first_use_and_a_failing_resolver_is_a_miss(server):
    """`resolve_url` (how replicas find the application's embedded Redis) is asked once; while it
    fails, lookups miss and count errors instead of raising."""
    asked = []

    async def resolve() -> str:
        asked.append(1)
        return server.url

    async def broken() -> str:
        raise RuntimeError("cache server not up yet")

    async def scenario():
        cache = EmbeddingCache(None, resolve_url=resolve)
        assert cache.enabled
        key, value = _key(), _features()
        await cache.put(key, value)
        _assert_same(await cache.get(key), value)
        assert len(asked) == 1 and cache.url == server.url
        failing = EmbeddingCache(None, resolve_url=broken, retry_after_s=0)
        assert await failing.get(key) is None
        assert failing.stats().errors == 1 and failing.stats().misses == 1

    _run(scenario())


def test_a_resolved_server_that_goes_away_is_looked_up_again():
    """The app's embedded Redis replica may be replaced (new port): after one failure the cache asks
    `resolve_url` again instead of missing forever."""
    first, second = EmbeddedRedis(maxmemory_mb=16).start(), EmbeddedRedis(maxmemory_mb=16).start()
    current = [first]

    async def resolve() -> str:
        return current[0].url

    async def scenario():
        cache = EmbeddingCache(None, resolve_url=resolve, retry_after_s=0)
        key, value = _key(), _features()
        await cache.put(key, value)
        assert cache.url == first.url
        first.stop()
        current[0] = second
        assert await cache.get(key) is None  # the old server is gone: a miss, and a new lookup next time
        await cache.put(key, value)
        _assert_same(await cache.get(key), value)
        assert cache.url == second.url

    try:
        _run(scenario())
    finally:
        first.stop()
        second.stop()
