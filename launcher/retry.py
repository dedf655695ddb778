"""Client-side retries: exponential backoff with full jitter on overload and unavailability, and never
once a response has started to stream.

What is retried: HTTP 503 and a connection that failed before any response (the server restarting),
gRPC UNAVAILABLE and RESOURCE_EXHAUSTED. Each of these means the request did no work the client saw:
the server refused it at admission or could not be reached. A failure after the first streamed byte
(an in-band SSE error, a gRPC error mid-stream) is never retried: the caller already holds part of an
answer, and a second attempt would send it another. `RetryPolicy(retries=0)` turns retries off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
OnRetry = Callable[[int, BaseException], None]  # (retry number from 1, the error that caused it)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a refused request.

    retries: attempts after the first (3: up to four attempts in all).
    base_delay_s, multiplier, max_delay_s: the n-th retry (from 0) waits a uniformly drawn time in
        ``[0, min(max_delay_s, base_delay_s * multiplier**n)]`` ("full jitter", so clients refused
        together do not come back together).
    """

    retries: int = 3
    base_delay_s: float = 0.1
    multiplier: float = 2.0
    max_delay_s: float = 2.0

    def __post_init__(self):
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (from 0)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * self.multiplier**retry)
        return (rng or random).uniform(0.0, ceiling)


NO_RETRIES = RetryPolicy(retries=0)


def call_with_retries(
    attempt: Callable[[], T],
    retryable: Callable[[BaseException], bool],
    policy: RetryPolicy,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``'s result; a ``retryable`` error is retried up to ``policy.retries`` times with
    backoff (``on_retry`` hears of each), any other error and the last one are raised."""
    retry = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            if retry >= policy.retries or not retryable(exc):
                raise
            retry += 1
            if on_retry is not None:
                on_retry(retry, exc)
            sleep(policy.delay_s(retry - 1))
