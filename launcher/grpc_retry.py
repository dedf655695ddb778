"""Retries for gRPC server-streaming calls: start again (with backoff) while a call fails with
UNAVAILABLE or RESOURCE_EXHAUSTED before its first message; never once a message has arrived."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import grpc

from launcher.retry import OnRetry, RetryPolicy, call_with_retries

# Refused before any work the client saw (overloaded, draining, a replica gone): safe to send again.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def retryable_rpc_error(exc: BaseException) -> bool:
    """Refused for now (overload, no replica yet), not for good: a message over the server's size limit
    is RESOURCE_EXHAUSTED too ("larger than max"), and would be refused again."""
    if not isinstance(exc, grpc.RpcError) or exc.code() not in RETRYABLE_CODES:
        return False
    return "larger than max" not in (exc.details() or "")


class _CancelledBeforeStart(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "cancelled by the client before the call started"


class RetryingStream:
    """A server-streaming call that is started again while it fails with a retryable code before its
    first message; once a message has arrived every error is the caller's. Iterate it; ``cancel()``
    stops the call in flight; ``retries`` counts the attempts after the first. Other attributes
    (``code()``, ``details()``, ``trailing_metadata()``) are the current attempt's."""

    def __init__(self, start: Callable[[], Any], policy: RetryPolicy, on_retry: OnRetry | None = None):
        self._start, self._policy, self._on_retry = start, policy, on_retry
        self._call: Any = None  # the attempt whose first message arrived (or that ended empty)
        self._current: Any = None  # the attempt in flight
        self._cancelled = False
        self.retries = 0

    def __iter__(self) -> Self:
        return self

    def __next__(self):
        if self._call is not None:
            return next(self._call)
        return call_with_retries(self._first, retryable_rpc_error, self._policy, self._retried)

    def cancel(self) -> bool:
        self._cancelled = True
        return self._current.cancel() if self._current is not None else True

    def __getattr__(self, name: str):
        current = self.__dict__.get("_current")
        if current is None:
            raise AttributeError(name)
        return getattr(current, name)

    def _first(self):
        if self._cancelled:
            raise _CancelledBeforeStart()
        self._current = call = self._start()
        try:
            first = next(call)
        except StopIteration:
            self._call = call
            raise
        self._call = call
        return first

    def _retried(self, retry: int, exc: BaseException) -> None:
        self.retries = retry
        if self._on_retry is not None:
            self._on_retry(retry, exc)
