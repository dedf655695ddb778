"""The asyncio embedding cache between stages: Redis-backed, fail-open, single-flight per key.

The cache is never the source of truth. Every Redis problem (refused, timed out, full, a value
that fails to decode) becomes a miss, a counter in `CacheStats.errors` and a rate-limited log
line, never an exception for the caller. After a connection failure Redis is skipped for
`retry_after_s`, so a dead Redis costs nothing per request; the next attempt after that window
finds out whether it is back.

One instance per process (each Ray replica builds its own). An instance may be used from more
than one event loop: each loop gets its own Redis client and its own in-flight table, while the
counters and the up/down state are shared.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import torch
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.codec import CodecError, decode_tensors, encode_tensors

logger = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]

# Errors that mean "Redis is unreachable right now": trip the breaker and skip Redis for a while.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
RESOLVE_TIMEOUT_S = 10.0  # how long a first lookup may wait for `resolve_url` (a replica starting up)
_FAILED = object()  # sentinel: the Redis call did not happen or did not succeed


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made.

    hits:      lookups answered from Redis.
    misses:    lookups not answered from Redis (absent, disabled, skipped while down, or failed).
    errors:    Redis failures and undecodable values (each also counts as a miss when on a lookup).
    coalesced: `get_or_compute` callers that waited on another caller's in-flight lookup/compute
               for the same key instead of doing their own (counted neither as hit nor miss).
    """

    hits: int = 0
    misses: int = 0
    errors: int = 0
    coalesced: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for metrics and JSON)."""
        return asdict(self)


@dataclass
class _LoopState:
    """What is bound to one event loop: a Redis client and the in-flight single-flight tasks."""

    client: aioredis.Redis | None = None
    client_url: str | None = None  # the URL `client` was made for
    inflight: dict[tuple[str, str], asyncio.Task] = field(default_factory=dict)  # (kind, key) -> task


class EmbeddingCache:
    """Named-tensor cache over Redis with TTL, fail-open errors and per-key single flight.

    url:              ``redis://host:port/db``; None or "" disables caching (every lookup misses),
                      unless `resolve_url` is given.
    resolve_url:      an async callable that finds the URL on first use (e.g. asks the application's
                      embedded Redis deployment where it listens), and again after the server was
                      found unreachable (it may have been replaced); while it fails, lookups miss.
    ttl_s:            expiry of each stored value (SET ... EX ttl_s).
    socket_timeout_s: connect and read timeout; a whole Redis call is also capped at 4x this.
    retry_after_s:    how long to skip Redis after it was found unreachable.
    observer:         called as ``observer(counter, key)`` on every counted event (e.g. to export
                      metrics); it must be cheap and must not raise.

    Values are shared between coalesced callers: treat returned tensors as read-only.
    A malformed url raises ValueError here (configuration errors are loud; runtime errors are not).
    """

    def __init__(
        self,
        url: str | None,
        ttl_s: int = 3600,
        socket_timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
        resolve_url: Callable[[], Awaitable[str]] | None = None,
        observer: Callable[[str, str], None] | None = None,
    ):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if socket_timeout_s <= 0:
            raise ValueError(f"socket_timeout_s must be > 0, got {socket_timeout_s}")
        if retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        self.url = url or None
        self.ttl_s = int(ttl_s)
        self.socket_timeout_s = float(socket_timeout_s)
        self.retry_after_s = float(retry_after_s)
        self._resolve_url = None if self.url is not None else resolve_url
        if self.url is not None:
            aioredis.ConnectionPool.from_url(self.url)  # parse only (no I/O): a bad URL fails here
        self._observer = observer
        self._lock = threading.Lock()
        self._counts = {"hits": 0, "misses": 0, "errors": 0, "coalesced": 0}
        self._down_until = 0.0  # time.monotonic() before which Redis is skipped
        self._down = False
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._log = _RateLimitedLog(logger, interval_s=60.0)

    @property
    def enabled(self) -> bool:
        """False when the cache was built without a URL or a way to find one."""
        return self.url is not None or self._resolve_url is not None

    def __repr__(self) -> str:
        target = _redact(self.url) if self.url else "disabled"
        return f"EmbeddingCache({target}, ttl_s={self.ttl_s})"

    def __reduce__(self):  # picklable as its configuration; clients and counters start fresh
        return (type(self), (self.url, self.ttl_s, self.socket_timeout_s, self.retry_after_s, self._resolve_url,
                            self._observer))

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return CacheStats(**self._counts)

    async def get(self, key: str) -> Tensors | None:
        """The tensors stored under `key`, or None on a miss (including any Redis or decode failure)."""
        blob = await self._call("GET", key, lambda client: client.get(key))
        tensors = None
        if blob is not _FAILED and blob is not None:
            try:
                tensors = await asyncio.to_thread(decode_tensors, blob)  # a copy of the value: off the loop
            except CodecError as exc:
                self._count("errors", key)
                self._log.warning(
                    "decode", "cache value under %r failed to decode, treated as a miss: %s", key, exc
                )
        self._count("hits" if tensors is not None else "misses", key)
        return tensors

    async def put(self, key: str, tensors: Tensors) -> None:
        """Store `tensors` under `key` with the TTL. Failures are counted and logged, never raised.

        Tensors are copied to CPU bytes for encoding, in a worker thread (the event loop stays free).
        """
        if not self.enabled:
            return
        try:
            blob = await asyncio.to_thread(encode_tensors, tensors)  # a copy of the value: off the loop
        except CodecError as exc:
            self._count("errors", key)
            self._log.warning("encode", "cache value for %r not stored: %s", key, exc)
            return
        await self._call("SET", key, lambda client: client.set(key, blob, ex=self.ttl_s))

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[Tensors]]
    ) -> tuple[Tensors, bool]:
        """Return ``(tensors, hit)``: the cached value, or ``compute()``'s result after storing it.

        Single flight: concurrent callers in this event loop asking for the same key share one
        lookup and at most one `compute` call; the first counts as a hit or miss, the others as
        `coalesced`, and every caller gets the same `hit` flag (False when compute ran). An
        exception from `compute` reaches every waiting caller. Cancelling one caller does not
        cancel the shared work, so the others (and the cache) still get the result.
        """
        tensors, hit = await self._single_flight(("get", key), lambda: self._lookup_or_compute(key, compute))
        return dict(tensors), hit

    async def ensure(
        self, key: str, compute: Callable[[], Awaitable[Tensors]]
    ) -> tuple[Tensors | None, bool]:
        """Make sure Redis holds `key` without reading its value back, for a caller that passes the
        key on (another replica reads the value).

        Returns ``(None, True)`` when Redis has the key (EXISTS), else ``(compute()'s result, False)``
        after storing it (also when Redis is disabled or down: the caller then passes the tensors on).
        Same single flight, counters and cancellation rules as `get_or_compute`.
        """
        tensors, hit = await self._single_flight(("ensure", key), lambda: self._exists_or_compute(key, compute))
        return (None if tensors is None else dict(tensors)), hit

    async def _single_flight(self, flight: tuple[str, str], work: Callable[[], Awaitable[Any]]) -> Any:
        """`work()`'s result, shared with every concurrent caller of this loop asking for `flight`."""
        state = self._state()
        task = state.inflight.get(flight)
        if task is not None:
            self._count("coalesced", flight[1])
        else:
            task = asyncio.ensure_future(work())
            state.inflight[flight] = task
            task.add_done_callback(functools.partial(_forget, state.inflight, flight))
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Close this event loop's Redis client. Later calls reconnect lazily; other loops are untouched."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.pop(loop, None)
        if state is not None and state.client is not None:
            try:
                await state.client.aclose()
            except (RedisError, OSError) as exc:
                logger.debug("closing Redis client: %s", exc)

    async def _lookup_or_compute(
        self, key: str, compute: Callable[[], Awaitable[Tensors]]
    ) -> tuple[Tensors, bool]:
        cached = await self.get(key)
        if cached is not None:
            return cached, True
        tensors = await compute()
        await self.put(key, tensors)
        return tensors, False

    async def _exists_or_compute(
        self, key: str, compute: Callable[[], Awaitable[Tensors]]
    ) -> tuple[Tensors | None, bool]:
        found = await self._call("EXISTS", key, lambda client: client.exists(key))
        if found is not _FAILED and found:
            self._count("hits", key)
            return None, True
        self._count("misses", key)
        tensors = await compute()
        await self.put(key, tensors)
        return tensors, False

    async def _call(self, what: str, key: str, op: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        """Run one Redis command, or return _FAILED when disabled, skipped while down, or failed."""
        if not self.enabled or time.monotonic() < self._down_until:
            return _FAILED
        if self.url is None and not await self._found_url(what, key):
            return _FAILED
        try:
            async with asyncio.timeout(4 * self.socket_timeout_s):
                result = await op(self._client())
        except _UNREACHABLE as exc:
            self._count("errors", key)
            self._mark_down(what, exc)
            if self._resolve_url is not None:  # the server may have moved (a replaced replica): ask again
                self.url = None
            return _FAILED
        except RedisError as exc:  # e.g. OOM on a full noeviction server: Redis is up, this call failed
            self._count("errors", key)
            self._log.warning(
                "command", "Redis %s failed, treated as a miss: %s: %s", what, type(exc).__name__, exc
            )
            return _FAILED
        self._mark_up()
        return result

    async def _found_url(self, what: str, key: str) -> bool:
        """Ask `resolve_url` for the URL (first use only); a failure counts and trips the breaker."""
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                self.url = await self._resolve_url()
        except Exception as exc:  # noqa: BLE001  whatever the resolver raised: fail open
            self._count("errors", key)
            self._mark_down(what, exc)
            return False
        return True

    def _mark_down(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.retry_after_s
            first = not self._down
            self._down = True
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if first:
            self._log.warning(
                "down",
                "Redis cache at %s unreachable on %s (%s); serving without cache, retrying every %.1fs",
                _redact(self.url),
                what,
                reason,
                self.retry_after_s,
            )
        else:
            self._log.warning("down", "Redis cache at %s still unreachable (%s)", _redact(self.url), reason)

    def _mark_up(self) -> None:
        if not self._down:
            return
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            self._log.warning("up", "Redis cache at %s reachable again", _redact(self.url))

    def _count(self, name: str, key: str) -> None:
        with self._lock:
            self._counts[name] += 1
        if self._observer is not None:
            self._observer(name, key)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                # Forget loops that have ended (their clients cannot be closed any more); an
                # unclosed one only costs a ResourceWarning when its sockets are collected.
                for old in [old for old in self._loops if old.is_closed()]:
                    del self._loops[old]
                state = self._loops[loop] = _LoopState()
        return state

    def _client(self) -> aioredis.Redis:
        state = self._state()
        if state.client is None or state.client_url != self.url:
            state.client_url = self.url
            state.client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=self.socket_timeout_s,
                retry=Retry(NoBackoff(), 0),  # no retries: one failure trips the breaker instead
            )
        return state.client


def _forget(inflight: dict[tuple[str, str], asyncio.Task], key: tuple[str, str], task: asyncio.Task) -> None:
    """Done-callback: drop the finished task and mark its exception as retrieved."""
    if inflight.get(key) is task:
        del inflight[key]
    if not task.cancelled():
        task.exception()


def _redact(url: str | None) -> str:
    """The URL without its password, for logs."""
    if not url:
        return "(none)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class _RateLimitedLog:
    """Log at most one warning per topic per `interval_s`, reporting how many were suppressed."""

    def __init__(self, log: logging.Logger, interval_s: float):
        self._log = log
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, topic: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval_s:
                self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
                return
            self._last[topic] = now
            suppressed = self._suppressed.pop(topic, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._log.warning(msg, *args)
