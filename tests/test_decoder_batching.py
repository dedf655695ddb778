"""BatchingEngine (continuous batching) on both tiny model sources: batched == alone token for token,
cancellation mid-batch frees the slot, seeded sampling is batch-independent, the waiting limit rejects.

"Alone" is the per-request ``LLMEngine`` (itself proven equal to transformers' ``generate``). Where a
test needs the loop at a known point it wraps the model in ``GatedModel``, which lets the engine run
exactly N forwards and then holds it, so no test waits on time.
"""

import asyncio
import contextlib
import dataclasses
import threading

import pytest
import torch

import models
from decoders.batching import BatchingConfig, BatchingEngine
from decoders.engine import LLMEngine
from models.tiny import TINY_HF_LLAVA, TINY_OPEN_CLIP_LLAVA, ensure_tiny_models
from triptych.errors import ContextLengthError, OverloadedError, RequestError
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

GREEDY = SamplingParams(max_tokens=24)


@pytest.fixture(scope="module", params=[TINY_OPEN_CLIP_LLAVA, TINY_HF_LLAVA])
def parts(request, tmp_path_factory, one_torch_thread):
    model_dir = ensure_tiny_models(tmp_path_factory.getbasetemp() / "models")[request.param]
    return models.load_language_model(model_dir)


@pytest.fixture(scope="module")
def alone(parts):
    return LLMEngine(parts)


class GatedModel(torch.nn.Module):
    """Runs the wrapped model's forwards only while ``done < limit`` (None: no limit); else holds."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.generation_config = model.generation_config
        self.arrived = 0  # forwards started (the one waiting at the gate included)
        self.done = 0  # forwards finished
        self.limit: int | None = 0
        self._cond = threading.Condition()

    def forward(self, **kwargs):
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.limit is None or self.done < self.limit)
        out = self.model(**kwargs)
        with self._cond:
            self.done += 1
            self._cond.notify_all()
        return out

    def allow(self, limit: int | None) -> None:
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def wait_held(self, done: int) -> None:
        """Block until exactly ``done`` forwards ran and the engine waits at the gate with the next one."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.done == done and self.arrived == done + 1, timeout=30)


@contextlib.contextmanager
def gated_engine(parts, config):
    """A BatchingEngine over a GatedModel; the gate opens on exit, so a failing test never strands the loop."""
    gate = GatedModel(parts.model)
    engine = BatchingEngine(dataclasses.replace(parts, model=gate), config)
    try:
        yield engine, gate
    finally:
        gate.allow(None)
        engine.close()


def request(alone, i, n_images=1, **params):
    """A chat with ``i``-dependent text length, ``n_images`` images of ``3 + 2i`` visual tokens each."""
    parts = [TextPart("describe " + "the colours " * i)] + [ImagePart(b"x")] * n_images
    prompt = alone.prompt_builder.build([ChatMessage("user", tuple(parts))], [3 + 2 * i] * n_images)
    generator = torch.Generator().manual_seed(100 + i)
    width = alone.embed_tokens.weight.shape[1]
    images = [torch.randn(3 + 2 * i, width, generator=generator) for _ in range(n_images)]  # (K_i, D)
    return prompt, images, SamplingParams(**params)


def collect(handle):
    deltas = list(handle)
    assert all(d.finish_reason is None for d in deltas[:-1])
    return deltas


def test_eight_requests_joining_at_different_steps_equal_each_alone(parts, alone):
    requests = [request(alone, i, n_images=i % 3, max_tokens=10 + 5 * i) for i in range(8)]
    expected = [list(alone.generate_ids(*r)) for r in requests]
    # 4 slots for 8 requests: later ones wait for a slot; 32-token steps split the longer prompts
    config = BatchingConfig(max_batch_size=4, max_tokens_per_step=32)
    with BatchingEngine(parts, config) as engine:
        handles, streams = [], []
        for r in requests:  # each joins once the one before it has streamed (so at a later step)
            handles.append(engine.submit(*r))
            streams.append(iter(handles[-1]))
            streams[-1] = (next(streams[-1]), streams[-1])
        deltas = [[first, *rest] for first, rest in streams]
        stats = engine.stats()
    for r, handle, ds, ids in zip(requests, handles, deltas, expected):
        assert handle.token_ids == ids
        assert "".join(d.text for d in ds) == parts.tokenizer.decode(ids, skip_special_tokens=True)
        finish = "length" if len(ids) == r[2].max_tokens else "stop"
        assert (ds[-1].finish_reason, ds[-1].completion_tokens) == (finish, len(ids))
        assert set(ds[-1].timings_ms) == {"prefill", "decode"}
    assert stats.decode_rows > stats.decode_steps  # sequences really shared decode steps
    assert stats.prefill_forwards > len(requests)  # and some prompts were chunked
    assert (stats.finished, stats.running, stats.kv_slots_in_use) == (8, 0, 0)
    assert stats.generated_tokens == sum(len(ids) for ids in expected)


def test_unchunked_prefill_gives_the_same_tokens(parts, alone):
    requests = [request(alone, i, n_images=1, max_tokens=12) for i in range(5)]
    expected = [list(alone.generate_ids(*r)) for r in requests]
    with BatchingEngine(parts, BatchingConfig(max_batch_size=3, max_tokens_per_step=None)) as engine:
        handles = [engine.submit(*r) for r in requests]
        for h in handles:
            collect(h)
        assert engine.stats().prefill_forwards == len(requests)
    assert [h.token_ids for h in handles] == expected


def test_cancel_mid_batch_frees_the_slot_and_the_others_finish(parts, alone):
    requests = [request(alone, i, n_images=1, max_tokens=40) for i in range(4)]
    expected = [list(alone.generate_ids(*r)) for r in requests]
    assert all(len(ids) > 8 for ids in expected)  # every request is still running when B is cancelled
    with gated_engine(parts, BatchingConfig(max_batch_size=4, max_tokens_per_step=None)) as (engine, gate):
        handles = [engine.submit(*requests[0])]
        gate.wait_held(0)  # A's prefill waits at the gate; B, C, D queue meanwhile
        handles += [engine.submit(*r) for r in requests[1:]]
        gate.allow(6)  # 4 prefills (one step), then 2 decode steps of all 4
        gate.wait_held(6)
        b = handles[1]
        engine.cancel(b)
        gate.allow(7)  # one more decode step; the next step drops B before its forward
        gate.wait_held(7)
        assert all(d.finish_reason is None for d in collect(b))  # the stream just ends
        assert b.done and b.token_ids == expected[1][:4]  # 1 from prefill + 3 decode steps
        stats = engine.stats()
        assert (stats.cancelled, stats.running, stats.kv_slots_in_use) == (1, 3, 3)
        gate.allow(None)
        others = [collect(h) for h in (handles[0], *handles[2:])]
        final = engine.stats()
    assert [handles[0].token_ids, handles[2].token_ids, handles[3].token_ids] == [
        expected[0],
        expected[2],
        expected[3],
    ]
    assert all(ds[-1].finish_reason is not None for ds in others)
    assert (final.cancelled, final.finished, final.kv_slots_in_use) == (1, 3, 0)


def test_seeded_sampling_is_the_same_alone_and_batched(parts, alone):
    sampled = [request(alone, i, max_tokens=20, temperature=1.0, top_p=0.9, seed=7 + i) for i in (1, 2)]
    greedy = [request(alone, i, max_tokens=20) for i in (3, 4)]
    expected = [list(alone.generate_ids(*r)) for r in sampled]
    prompt, images, params = sampled[0]
    assert expected[0] != list(alone.generate_ids(prompt, images, dataclasses.replace(params, seed=1)))
    with BatchingEngine(parts, BatchingConfig(max_batch_size=4)) as engine:
        handles = [engine.submit(*r) for r in (greedy[0], sampled[0], greedy[1], sampled[1])]
        for h in handles:
            collect(h)
    assert [handles[1].token_ids, handles[3].token_ids] == expected


def test_waiting_limit_rejects_with_overloaded_error(parts, alone):
    config = BatchingConfig(max_batch_size=1, max_tokens_per_step=None, max_waiting=1)
    prompt, images, params = request(alone, 0, max_tokens=3)
    with gated_engine(parts, config) as (engine, gate):
        running = engine.submit(prompt, images, params)
        gate.wait_held(0)
        waiting = engine.submit(prompt, images, params)
        with pytest.raises(OverloadedError, match="max_batch_size 1 \\+ max_waiting 1"):
            engine.submit(prompt, images, params)
        assert (engine.stats().running, engine.stats().waiting) == (1, 1)
        gate.allow(None)
        assert collect(running)[-1].finish_reason is not None
        assert collect(waiting)[-1].finish_reason is not None
        collect(engine.submit(prompt, images, params))  # room again


def test_async_consumer_gets_the_same_stream(parts, alone):
    prompt, images, params = request(alone, 2, max_tokens=16)
    expected = list(alone.generate(prompt, images, params))

    async def consume(engine):
        handle = engine.submit(prompt, images, params)
        return [d async for d in handle.stream_async()]

    with BatchingEngine(parts) as engine:
        deltas = asyncio.run(consume(engine))
    assert "".join(d.text for d in deltas) == "".join(d.text for d in expected)
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == (
        expected[-1].finish_reason,
        expected[-1].completion_tokens,
    )


def test_bad_requests_and_config_fail_at_submit(parts, alone):
    prompt, images, _ = request(alone, 1)
    with BatchingEngine(parts, BatchingConfig(max_batch_size=2, max_seq_len=64)) as engine:
        with pytest.raises(RequestError) as info:
            engine.submit(prompt, images, SamplingParams(top_p=0.0))
        assert info.value.field == "top_p"
        with pytest.raises(ContextLengthError, match="context of 64 tokens"):
            engine.submit(prompt, images, SamplingParams(max_tokens=64))
        with pytest.raises(ValueError, match="image-token slots"):
            engine.submit(prompt, [], GREEDY)
        assert engine.stats().waiting == 0
    with pytest.raises(ValueError, match="max_tokens_per_step"):
        BatchingConfig(max_batch_size=8, max_tokens_per_step=8)
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingConfig(max_batch_size=0)
