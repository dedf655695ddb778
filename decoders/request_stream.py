"""RequestHandle: one submitted request's output, handed from the engine loop thread to its consumer.

The loop thread only ``put``s generated token ids and, at the end, a ``Finished`` record (or an
exception); it never detokenizes. The consumer (any thread via ``iter(handle)``, or an asyncio loop
via ``async for delta in handle.stream_async()``) turns them into ``TextDelta``s with
``IncrementalDetokenizer``. A consumer that lags gets every token that piled up in one delta
(coalescing), so per-token hand-offs never cap the engine's throughput.

A cancelled request's stream simply ends: no final delta (``finish_reason`` stays None); a failed
one re-raises the loop's exception in the consumer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from decoders.detokenizer import IncrementalDetokenizer
from triptych.types import TextDelta


@dataclass(frozen=True)
class Finished:
    """The last item of a stream: why it ended and what it cost."""

    reason: str  # "stop" (EOS), "length" (max_tokens) or "cancelled"
    timings_ms: dict[str, float] = field(default_factory=dict)  # "prefill", "decode"


class RequestHandle:
    """What ``BatchingEngine.submit`` returns: iterate it (or ``stream_async``) for the TextDeltas.

    ``request_id`` is unique per engine; ``prompt_len`` counts every prompt token, visual ones
    included. Consume it once, from one consumer.
    """

    def __init__(self, request_id: int, prompt_len: int, tokenizer):
        self.request_id = request_id
        self.prompt_len = prompt_len
        self.queue_ms = 0.0  # submit -> first prefill chunk, set by the engine loop
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._items: deque[int | Finished | BaseException] = deque()
        self._cond = threading.Condition()
        self._async_waker: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._done = False

    @property
    def token_ids(self) -> list[int]:
        """The generated ids the consumer has received so far (EOS excluded)."""
        return list(self._detokenizer.ids)

    @property
    def done(self) -> bool:
        """True once the engine has put the last item (finished, cancelled or failed)."""
        return self._done

    # ---- producer side (engine loop thread) -----------------------------------------------------

    def put(self, item: int | Finished | BaseException) -> None:
        """Hand over one generated token id, or the final Finished / exception."""
        with self._cond:
            self._items.append(item)
            if not isinstance(item, int):
                self._done = True
            self._cond.notify()
            waker = self._async_waker
        if waker is not None:
            loop, event = waker
            loop.call_soon_threadsafe(event.set)

    # ---- consumer side --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[TextDelta]:
        """Blocking stream of TextDeltas; each one carries every token that arrived since the last."""
        detokenizer = self._detokenizer
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items)
                items = self._drain()
            delta, finished = _to_delta(items, detokenizer)
            if delta is not None:
                yield delta
            if finished:
                return

    async def stream_async(self) -> AsyncIterator[TextDelta]:
        """The same stream for an asyncio consumer; the engine thread wakes the loop thread-safely."""
        event = asyncio.Event()
        with self._cond:
            self._async_waker = (asyncio.get_running_loop(), event)
        detokenizer = self._detokenizer
        while True:
            event.clear()  # clear before draining: a put after the drain sets it again
            with self._cond:
                items = self._drain()
            if not items:
                await event.wait()
                continue
            delta, finished = _to_delta(items, detokenizer)
            if delta is not None:
                yield delta
            if finished:
                return

    def _drain(self) -> list[int | Finished | BaseException]:
        items = list(self._items)
        self._items.clear()
        return items


def _to_delta(items: list, detokenizer: IncrementalDetokenizer) -> tuple[TextDelta | None, bool]:
    """Fold drained items into at most one delta; True when the stream has ended."""
    text = "".join(detokenizer.push(item) for item in items if isinstance(item, int))
    n = len(detokenizer.ids)
    last = items[-1]
    if isinstance(last, BaseException):
        raise last
    if isinstance(last, Finished):
        if last.reason == "cancelled":
            return None, True
        return TextDelta(text + detokenizer.flush(), last.reason, n, dict(last.timings_ms)), True
    return (TextDelta(text, completion_tokens=n) if text else None), False
