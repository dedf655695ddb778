"""Each request's deadline, set by the ingress when the request arrives and honoured by the stage clients:
a decoder or denoiser stream still running at the deadline is cancelled (its loop stops at the next step,
its KV slot or batch place is freed) and the request fails with `DeadlineExceeded` (408 / DEADLINE_EXCEEDED).

Why the stages need it: a client that cancels a gRPC stream through Ray Serve's gRPC proxy is not always
heard. When the cancel lands while the proxy's task is suspended in grpc's ``write`` of a message (rather
than waiting on the replica for the next one), grpc.aio unwinds the call without closing the proxy's
async generator; when that generator is finalised later, Serve's ``send_request_to_replica`` catches the
``GeneratorExit`` as a ``BaseException`` and never calls ``cancel()`` on the replica's response. Nothing
reaches the ingress replica, which streams on to the end (measured here: 2 of 12 cancels after the first
message). That is Ray's proxy, not Triptych, so Triptych bounds it: the deadline is the config's
``request_timeout_s`` or, sooner, the client's own (metadata ``triptych-timeout-s``, which
``launcher.client.TriptychClient`` sends with its gRPC timeout). HTTP disconnects reach the replica
(Serve's HTTP proxy watches the connection) and need no deadline to stop work, but get the same bound.

The deadline travels in a context variable: the ingress sets it in the request's task, and the asyncio
tasks the pipeline starts (workflow steps) copy it. Times are ``time.monotonic()`` of the ingress process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar

from triptych.errors import DeadlineExceeded

TIMEOUT_METADATA = "triptych-timeout-s"  # gRPC metadata: the client's own time limit, in seconds
_DEADLINE: ContextVar[float | None] = ContextVar("triptych_request_deadline", default=None)


def client_timeout_s(grpc_context) -> float | None:
    """The ``triptych-timeout-s`` a gRPC client sent (None when absent or not a positive number)."""
    for key, value in grpc_context.invocation_metadata() or ():
        if key == TIMEOUT_METADATA:
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if seconds > 0 else None
    return None


def start_deadline(request_timeout_s: float | None, client_s: float | None = None) -> float | None:
    """Set the current request's deadline to the sooner of the two limits (None: no limit); returns it."""
    limits = [s for s in (request_timeout_s, client_s) if s is not None]
    deadline = time.monotonic() + min(limits) if limits else None
    _DEADLINE.set(deadline)
    return deadline


def current_deadline() -> float | None:
    return _DEADLINE.get()


async def until_deadline(stream: AsyncIterator, stage: str) -> AsyncIterator:
    """``stream``'s items until the current request's deadline; past it, `DeadlineExceeded` (the caller
    cancels the stream on the way out)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        async for item in stream:
            yield item
        return
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            item = await asyncio.wait_for(anext(stream), remaining)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DeadlineExceeded(f"the {stage} stage was still running at the request's deadline; stopped") from None
        yield item
