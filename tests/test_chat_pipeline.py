"""ChatPipeline + ChatDecoder in one process (tiny-hf-llava, an embedded Redis, no Ray): a hit sends the
decoder a cache key and the decoder prunes; a key the decoder cannot read falls back to tensors; no cache
at all still serves; CPU steps run off the event loop; the context check comes before any stage."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import models
from cache import EmbeddedRedis, EmbeddingCache
from decoders.engine import LLMEngine
from encoders.engine import VisionEncoderEngine
from encoders.image_io import load_image
from encoders.pruning import PRUNERS, keep_count
from models.tiny import ensure_tiny_models
from pipelines.chat import ChatPipeline
from pipelines.chat_decoder import ChatDecoder
from pipelines.chat_request import ChatRequest
from pipelines.local_stages import LocalVisionStage
from tests.serving import image_bytes
from triptych.errors import RequestError
from triptych.types import ChatMessage, ChatUsage, ImagePart, SamplingParams, TextPart, VisualInput


@pytest.fixture(scope="module")
def engines(tmp_path_factory, one_torch_thread):
    model_dir = ensure_tiny_models(tmp_path_factory.mktemp("models"))["tiny-hf-llava"]
    return VisionEncoderEngine(models.load_vision_tower(model_dir)), LLMEngine(models.load_language_model(model_dir))


@pytest.fixture(scope="module")
def redis_url():
    with EmbeddedRedis(maxmemory_mb=32) as server:
        yield server.url


class SpyDecoder:
    """A ChatDecoder that records what the pipeline sent it and on which thread each CPU step ran."""

    def __init__(self, engine: LLMEngine, cache: EmbeddingCache):
        self.inner = ChatDecoder(engine, cache)
        self.calls: list[list] = []

    async def info(self):
        return await self.inner.info()

    def generate(self, prompt_ids, images, params):
        self.calls.append(list(images))
        return self.inner.generate(prompt_ids, images, params)


def _pipeline(engines, ingress_cache: EmbeddingCache, decoder_cache: EmbeddingCache):
    vision_engine, llm = engines
    vision, decoder = LocalVisionStage(vision_engine), SpyDecoder(llm, decoder_cache)
    return ChatPipeline(vision, decoder, ingress_cache, llm.prompt_builder), vision, decoder


def _request(image: bytes, method="divprune", ratio=0.25, max_tokens=6, text="what is it?") -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("user", (ImagePart(image), TextPart(text))),),
        sampling=SamplingParams(max_tokens=max_tokens),
        pruning_method=method,
        visual_token_keep_ratio=ratio,
    )


def _run(pipeline: ChatPipeline, request: ChatRequest) -> tuple[str, ChatUsage]:
    async def go():
        events = [event async for event in pipeline.run(request)]
        return "".join(e.text for e in events[:-1]), events[-1]

    return asyncio.run(go())


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens once closed


def test_a_hit_sends_the_key_and_the_decoder_prunes(engines, redis_url):
    pipeline, vision, decoder = _pipeline(engines, EmbeddingCache(redis_url), EmbeddingCache(redis_url))
    request = _request(image_bytes((12, 34, 56)))
    miss_text, miss = _run(pipeline, request)
    hit_text, hit = _run(pipeline, request)

    assert (miss.cache_hit, hit.cache_hit, vision.images_encoded) == (False, True, 1)
    [sent_on_miss], [sent_on_hit] = decoder.calls
    assert sent_on_miss.features is not None  # just encoded: the cache may not hold it, so it travels
    assert sent_on_hit.features is None and sent_on_hit.key == sent_on_miss.key  # a reference only
    assert (decoder.inner.images_given, decoder.inner.images_by_key) == (1, 1)
    n = engines[0].num_visual_tokens
    assert sent_on_hit.keep == hit.visual_tokens_kept == keep_count(n, 0.25) < hit.visual_tokens_in == n
    assert hit_text == miss_text  # the features read back by key are the ones the encoder made
    assert {"prune", "cache", "prefill", "decode"} <= set(hit.timings_ms) and "encode" not in hit.timings_ms
    assert "encode" in miss.timings_ms


def test_a_key_the_decoder_cannot_read_is_sent_again_with_the_tensors(engines, redis_url):
    image = image_bytes((200, 1, 1))
    warm, _, _ = _pipeline(engines, EmbeddingCache(redis_url), EmbeddingCache(redis_url))
    expected, _ = _run(warm, _request(image))  # now cached
    # the decoder's Redis is gone (as if the key was evicted after the ingress found it)
    pipeline, vision, decoder = _pipeline(engines, EmbeddingCache(redis_url), EmbeddingCache(_closed_port_url()))
    text, usage = _run(pipeline, _request(image))

    assert text == expected and usage.cache_hit is True  # the ingress read the features from the cache
    assert vision.images_encoded == 0
    [by_key], [given] = decoder.calls
    assert by_key.features is None and given.features is not None and given.key == by_key.key


def test_without_a_cache_every_request_encodes_and_sends_tensors(engines):
    pipeline, vision, decoder = _pipeline(engines, EmbeddingCache(None), EmbeddingCache(None))
    request = _request(image_bytes((9, 8, 7)), method="cls_attention", ratio=0.5)
    first, usage_1 = _run(pipeline, request)
    second, usage_2 = _run(pipeline, request)
    assert first == second and (usage_1.cache_hit, usage_2.cache_hit) == (False, False)
    assert vision.images_encoded == 2 and all(call[0].features is not None for call in decoder.calls)


def test_concurrent_requests_for_a_new_image_encode_it_once(engines, redis_url):
    pipeline, vision, _ = _pipeline(engines, EmbeddingCache(redis_url), EmbeddingCache(redis_url))
    request = _request(image_bytes((3, 140, 3)), max_tokens=2)

    async def one():
        return [event async for event in pipeline.run(request)]

    async def go():
        return await asyncio.gather(*(one() for _ in range(4)))

    results = asyncio.run(go())
    assert vision.images_encoded == 1 and all(events[-1].cache_hit is False for events in results)


def test_templating_and_pruning_run_off_the_event_loop(engines, redis_url, monkeypatch):
    vision_engine, llm = engines
    threads: dict[str, threading.Thread] = {}
    real_prune = PRUNERS["tome"]

    class SpyBuilder:
        def build(self, *args, **kwargs):
            threads["build"] = threading.current_thread()
            return llm.prompt_builder.build(*args, **kwargs)

    def prune(features, keep):
        threads["prune"] = threading.current_thread()
        return real_prune(features, keep)

    monkeypatch.setitem(PRUNERS, "tome", prune)
    cache = EmbeddingCache(redis_url)
    pipeline = ChatPipeline(LocalVisionStage(vision_engine), ChatDecoder(llm, cache), cache, SpyBuilder())

    async def go():
        _ = [event async for event in pipeline.run(_request(image_bytes((1, 99, 250)), method="tome"))]
        return threading.current_thread()

    loop_thread = asyncio.run(go())
    assert set(threads) == {"build", "prune"}
    assert threads["build"] is not loop_thread and threads["prune"] is not loop_thread


def test_context_overflow_is_rejected_before_any_stage_runs(engines, redis_url):
    pipeline, vision, decoder = _pipeline(engines, EmbeddingCache(redis_url), EmbeddingCache(redis_url))
    with pytest.raises(RequestError) as info:
        _run(pipeline, _request(image_bytes((4, 4, 4)), text="word " * 3000))
    assert info.value.field == "messages"
    assert vision.images_encoded == 0 and decoder.calls == []


def test_a_consumer_that_stops_early_stops_the_decoder_worker(engines):
    vision_engine, llm = engines
    produced = []

    class CountingEngine:  # the real engine, counting the deltas its worker thread produced
        def info(self):
            return llm.info()

        def generate(self, *args):
            for delta in llm.generate(*args):
                produced.append(delta)
                yield delta

    decoder = ChatDecoder(CountingEngine(), EmbeddingCache(None))
    features = vision_engine.encode([load_image(image_bytes((7, 7, 70)), "image", 10**7, 10**7)])[0]
    n, max_tokens = features.tokens.shape[0], 400
    prompt_ids = llm.prompt_builder.build(_request(b"", text="go").messages, [n])

    async def first_delta_then_stop():
        stream = decoder.generate(prompt_ids, [VisualInput("k", "none", n, features)], SamplingParams(max_tokens))
        await anext(stream)
        await stream.aclose()

    asyncio.run(first_delta_then_stop())
    workers = [t for t in threading.enumerate() if t.name == "chat-decoder"]
    for worker in workers:
        worker.join(timeout=60)  # a bound only so that a runaway worker fails the test instead of hanging it
    assert not any(worker.is_alive() for worker in workers)
    assert 1 <= len(produced) < max_tokens  # it stopped at the next step, not at max_tokens
