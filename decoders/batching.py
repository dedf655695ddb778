"""BatchingEngine: continuous (iteration-level) batching for the LLM decoder, one loop per replica.

One background thread runs steps. Each step (Orca's iteration-level scheduling):

1. takes in cancellations and newly submitted requests (``submit`` only queues them);
2. runs **one batched decode forward** for every sequence past its prompt: (n, 1) new tokens over
   a preallocated ``SlotKVCache``, each row at its own position under its own mask row;
3. spends what is left of the step's token budget (``max_tokens_per_step - n``) on **prefill**:
   the oldest admitted prompt gets the next chunk (chunked prefill), then the next waiting
   request gets a free slot and starts, until the budget or the slots run out. Each chunk is one
   (1, c) forward; a prompt's last chunk samples its first token and the sequence joins the decode
   batch at the next step.

A sequence that finishes (EOS, ``max_tokens``) or is cancelled leaves at once: its slot is free for
the next request in the same step. Decoding sequences always sit in slots ``0..n-1`` (a leaving
sequence's slot is refilled by moving the last one down), so the decode forward reads a view of the
cache, never a gathered copy.

Sampling is per sequence with ``decoders.sampling.next_token`` and the request's own seeded
generator (greedy rows share one argmax), so a seeded request draws the same tokens alone or in any
batch. Requests are validated and embedded in the caller's thread (``LLMEngine.prepare_prompt``:
visual tokens spliced into ``inputs_embeds``), so the loop only runs the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import torch

from decoders.engine import LLMEngine
from decoders.request_stream import Finished, RequestHandle
from decoders.sampling import make_generator, next_token
from decoders.slot_cache import SlotKVCache
from triptych.errors import OverloadedError
from triptych.types import DecoderInfo, SamplingParams, TextDelta

if TYPE_CHECKING:
    from decoders.language_model import LanguageModelParts

logger = logging.getLogger("triptych.decoder.batching")


@dataclass(frozen=True)
class BatchingConfig:
    """Scheduler knobs of one decoder replica.

    max_batch_size: sequences in the KV cache at once (decoding or prefilling); each owns one
        preallocated slot of ``max_seq_len`` positions.
    max_tokens_per_step: token budget of one step: the decode rows plus the prefill chunks; a
        prompt longer than what is left is split over steps (chunked prefill). ``None``: no
        budget, every admitted prompt prefills whole in one forward.
    max_waiting: requests queued beyond ``max_batch_size``; ``submit`` past it raises
        ``OverloadedError`` (503 / RESOURCE_EXHAUSTED at the edge).
    max_seq_len: positions per slot (prompt + max_tokens); ``None``: the model's context length.
    """

    max_batch_size: int = 8
    max_tokens_per_step: int | None = 256
    max_waiting: int = 64
    max_seq_len: int | None = None

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_tokens_per_step is not None and self.max_tokens_per_step <= self.max_batch_size:
            raise ValueError(
                f"max_tokens_per_step must exceed max_batch_size ({self.max_batch_size}) so prefill always "
                f"gets part of a step, got {self.max_tokens_per_step}"
            )
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {self.max_seq_len}")


@dataclass(frozen=True)
class BatchingStats:
    """Counters of one engine (read with ``BatchingEngine.stats()``)."""

    waiting: int  # submitted, no slot yet
    running: int  # holding a KV slot (prefilling or decoding)
    kv_slots_in_use: int
    kv_slots_total: int
    kv_cache_bytes: int  # the preallocated storage (0 before the first request)
    steps: int  # engine steps
    decode_steps: int  # batched decode forwards
    decode_rows: int  # sum over decode forwards of their batch size
    prefill_forwards: int  # prompt chunks run (> requests when prompts were split)
    prefill_tokens: int
    generated_tokens: int
    finished: int  # ended with "stop" or "length"
    cancelled: int


_COUNTERS = (
    "steps",
    "decode_steps",
    "decode_rows",
    "prefill_forwards",
    "prefill_tokens",
    "generated_tokens",
    "finished",
    "cancelled",
)  # fmt: skip  (the BatchingStats counters)


@dataclass(eq=False)
class _Sequence:
    handle: RequestHandle
    params: SamplingParams
    embeds: torch.Tensor | None  # (T, D) prompt embeddings; dropped once prefilled
    generator: torch.Generator | None
    submitted_at: float
    slot: int | None = None
    n_prefilled: int = 0  # prompt positions in the KV cache
    n_cached: int = 0  # all positions in the KV cache (prompt + fed-back tokens)
    last_token: int | None = None  # sampled, not yet fed back
    n_generated: int = 0
    started_at: float = 0.0
    first_token_at: float = 0.0

    @property
    def prompt_len(self) -> int:
        return self.handle.prompt_len


class BatchingEngine:
    """A thread-safe continuous-batching decoder: ``submit`` from any thread, one loop thread computes.

    Args:
        parts: ``decoders.language_model.LanguageModelParts`` (either model source).
        config: ``BatchingConfig``.

    Use as a context manager, or call ``close()`` to stop the loop thread.
    """

    def __init__(
        self,
        parts: LanguageModelParts,
        config: BatchingConfig | None = None,
        on_admit: Callable[[float], None] | None = None,
    ):
        """`on_admit(queue_seconds)` is called from the loop thread when a request gets its slot."""
        self.config = config or BatchingConfig()
        self._on_admit = on_admit
        self._single = LLMEngine(parts)  # validation, embedding, EOS ids: shared with the per-request engine
        self.model = parts.model
        self.embed_tokens = parts.embed_tokens
        self.tokenizer = parts.tokenizer
        self.max_seq_len = self.config.max_seq_len or self._single.context_length
        device = parts.embed_tokens.weight.device
        self._cache = SlotKVCache(self.config.max_batch_size, self.max_seq_len, device)
        self._slots: list[_Sequence | None] = [None] * self.config.max_batch_size
        self._n_decoding = 0  # decoding sequences own slots 0..n-1
        self._prefilling: deque[_Sequence] = deque()  # admitted (have a slot), prompt not done, FIFO
        self._lock = threading.Condition()  # guards everything below; the loop waits on it when idle
        self._waiting: deque[_Sequence] = deque()
        self._cancel_ids: set[int] = set()
        self._n_running = 0
        self._next_id = 0
        self._closed = False
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._thread = threading.Thread(target=self._run, name="triptych-decoder-loop", daemon=True)
        self._thread.start()

    # ---- public API (any thread) ----------------------------------------------------------------

    @property
    def prompt_builder(self):
        """Builds prompt ids (visual placeholders expanded) from ChatMessages with this tokenizer."""
        return self._single.prompt_builder

    @property
    def context_length(self) -> int:
        return self._single.context_length

    def info(self) -> DecoderInfo:
        """Model id and context length (``decoders.protocol.DecoderEngineProtocol``)."""
        return self._single.info()

    @property
    def model_id(self) -> str:
        return self._single.model_id

    def submit(
        self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> RequestHandle:
        """Queue one request; it joins the running batch at the next step. Returns its handle.

        Validates like ``LLMEngine.generate`` (RequestError / ContextLengthError / ValueError, with
        ``max_seq_len`` as the context) and raises ``OverloadedError`` when ``max_batch_size +
        max_waiting`` requests are already in the engine.
        """
        embeds = self._single.prepare_prompt(prompt_ids, image_embeds, params, self.max_seq_len)[0]  # (T, D)
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            capacity = self.config.max_batch_size + self.config.max_waiting
            if self._n_running + len(self._waiting) >= capacity:
                raise OverloadedError(
                    f"decoder {self.model_id!r} holds {capacity} requests (max_batch_size "
                    f"{self.config.max_batch_size} + max_waiting {self.config.max_waiting})"
                )
            handle = RequestHandle(self._next_id, len(prompt_ids), self.tokenizer)
            self._next_id += 1
            generator = make_generator(params, embeds.device)
            self._waiting.append(_Sequence(handle, params, embeds, generator, time.perf_counter()))
            self._lock.notify()
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Stop a request: it leaves the batch (freeing its slot) before the next step; its stream ends."""
        with self._lock:
            if not handle.done:
                self._cancel_ids.add(handle.request_id)
                self._lock.notify()

    def generate(
        self, prompt_ids: Sequence[int], image_embeds: Sequence[torch.Tensor], params: SamplingParams
    ) -> Iterator[TextDelta]:
        """``LLMEngine.generate``'s contract on the shared batch: submits now (errors raise here), then
        streams; closing the iterator early cancels the request."""
        handle = self.submit(prompt_ids, image_embeds, params)
        return self._follow(handle)

    def stats(self) -> BatchingStats:
        with self._lock:
            return BatchingStats(
                waiting=len(self._waiting),
                running=self._n_running,
                kv_slots_in_use=sum(s is not None for s in self._slots),
                kv_slots_total=len(self._slots),
                kv_cache_bytes=self._cache.nbytes,
                **self._counts,
            )

    def close(self) -> None:
        """Stop the loop thread; requests still in the engine end with a RuntimeError in their streams."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _follow(self, handle: RequestHandle) -> Iterator[TextDelta]:
        try:
            yield from handle
        finally:
            self.cancel(handle)  # no-op once finished

    # ---- the loop thread ------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while self._wait_for_work():
                try:
                    self._step()
                except Exception as exc:  # a failed forward fails the requests in it, not the replica
                    logger.exception("decoder step failed")
                    self._fail_all(exc)
        self._fail_all(RuntimeError("the decoder engine was closed"))

    def _wait_for_work(self) -> bool:
        with self._lock:
            self._lock.wait_for(lambda: self._closed or self._waiting or self._n_running or self._cancel_ids)
            return not self._closed

    def _step(self) -> None:
        self._apply_cancellations()
        n_decode = self._n_decoding
        if n_decode:
            self._decode()
        budget = (
            None if self.config.max_tokens_per_step is None else self.config.max_tokens_per_step - n_decode
        )
        while budget is None or budget > 0:
            seq = self._next_prefill()
            if seq is None:
                break
            budget = self._prefill_chunk(seq, budget)
        self._counts["steps"] += 1

    def _apply_cancellations(self) -> None:
        with self._lock:
            ids, self._cancel_ids = self._cancel_ids, set()
            dropped = [s for s in self._waiting if s.handle.request_id in ids]
            for seq in dropped:
                self._waiting.remove(seq)
        for seq in dropped:
            self._end(seq, "cancelled")
        for seq in [s for s in self._slots if s is not None and s.handle.request_id in ids]:
            self._end(seq, "cancelled")

    def _decode(self) -> None:
        rows = self._slots[: self._n_decoding]
        tokens = torch.tensor([[s.last_token] for s in rows], device=self._cache.device)  # (n, 1)
        self._cache.plan_decode([s.n_cached for s in rows])  # each row writes at its own next position
        logits = self._forward(self.embed_tokens(tokens))  # embeds (n, 1, D) -> logits (n, V)
        for seq in rows:
            seq.n_cached += 1
        self._counts["decode_steps"] += 1
        self._counts["decode_rows"] += len(rows)
        for seq, token in zip(rows, self._sample(rows, logits)):
            self._emit(seq, token)

    def _next_prefill(self) -> _Sequence | None:
        """The oldest admitted prompt, else the next waiting request if a slot is free."""
        if self._prefilling:
            return self._prefilling[0]
        free = next((i for i, s in enumerate(self._slots) if s is None), None)
        if free is None:
            return None
        with self._lock:
            if not self._waiting:
                return None
            seq = self._waiting.popleft()
            self._n_running += 1
        seq.slot = free
        seq.started_at = time.perf_counter()
        seq.handle.queue_ms = (seq.started_at - seq.submitted_at) * 1000
        if self._on_admit is not None:
            self._on_admit(seq.started_at - seq.submitted_at)
        self._slots[free] = seq
        self._prefilling.append(seq)
        return seq

    def _prefill_chunk(self, seq: _Sequence, budget: int | None) -> int | None:
        """Run the next chunk of ``seq``'s prompt within ``budget``; return the budget left."""
        start = seq.n_prefilled
        length = seq.prompt_len - start if budget is None else min(seq.prompt_len - start, budget)
        self._cache.plan_prefill(seq.slot, start, length)
        chunk = seq.embeds[None, start : start + length]  # (1, c, D)
        logits = self._forward(chunk, last_only=True)  # (1, V)
        seq.n_prefilled += length
        seq.n_cached += length
        self._counts["prefill_forwards"] += 1
        self._counts["prefill_tokens"] += length
        if seq.n_prefilled == seq.prompt_len:
            self._prefilling.popleft()
            seq.embeds = None
            self._join_decode(seq)
            self._emit(seq, self._sample([seq], logits)[0])
        return None if budget is None else budget - length

    def _forward(self, inputs_embeds: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """One model forward over the planned cache rows; logits of each row's last position (B, V)."""
        kwargs = {"logits_to_keep": 1} if last_only and self._single.accepts_logits_to_keep else {}
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=self._cache.mask,
            position_ids=self._cache.position_ids,
            past_key_values=self._cache,
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1]  # (B, V)

    def _sample(self, rows: list[_Sequence], logits: torch.Tensor) -> list[int]:
        """Per-row next tokens: one argmax for every greedy row, each sampled row with its own generator."""
        tokens = logits.argmax(dim=-1).tolist()  # (B,) first index on ties, like next_token
        for i, seq in enumerate(rows):
            if seq.params.temperature > 0:
                tokens[i] = next_token(logits[i], seq.params, seq.generator)
        return tokens

    def _emit(self, seq: _Sequence, token: int) -> None:
        if seq.n_generated == 0:
            seq.first_token_at = time.perf_counter()
        if token in self._single.eos_token_ids:
            self._end(seq, "stop")
            return
        seq.n_generated += 1
        seq.last_token = token
        self._counts["generated_tokens"] += 1
        seq.handle.put(token)
        if seq.n_generated >= seq.params.max_tokens:
            self._end(seq, "length")

    def _join_decode(self, seq: _Sequence) -> None:
        """A prefilled sequence moves to slot ``n_decoding``, the first after the decoding rows.

        That slot is free: only one prompt prefills at a time (``_next_prefill``), and it is ``seq``.
        """
        target = self._n_decoding
        if seq.slot != target:
            self._cache.move(seq.slot, target, seq.n_cached)
            self._slots[seq.slot], self._slots[target], seq.slot = None, seq, target
        self._n_decoding += 1

    def _end(self, seq: _Sequence, reason: str) -> None:
        """Take ``seq`` out of the engine now (freeing its slot) and close its stream."""
        now = time.perf_counter()
        if seq.slot is not None:
            self._release_slot(seq)
            with self._lock:
                self._n_running -= 1
        first = seq.first_token_at or now
        timings = (
            {"prefill": (first - seq.started_at) * 1000, "decode": (now - first) * 1000}
            if seq.started_at
            else {}
        )
        self._counts["cancelled" if reason == "cancelled" else "finished"] += 1
        seq.handle.put(Finished(reason, timings))

    def _release_slot(self, seq: _Sequence) -> None:
        slot = seq.slot
        seq.slot = None
        if seq in self._prefilling:
            self._prefilling.remove(seq)
            self._slots[slot] = None
            return
        last = self._n_decoding - 1  # keep decoding rows packed: the last one moves into the hole
        if slot != last:
            mover = self._slots[last]
            self._cache.move(last, slot, mover.n_cached)
            self._slots[slot], mover.slot = mover, slot
        self._slots[last] = None
        self._n_decoding -= 1

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            seqs = list(self._waiting) + [s for s in self._slots if s is not None]
            self._waiting.clear()
            self._n_running = 0
        self._slots = [None] * len(self._slots)
        self._prefilling.clear()
        self._n_decoding = 0
        for seq in seqs:
            seq.handle.put(exc)
