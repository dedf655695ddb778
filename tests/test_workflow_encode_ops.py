"""`encode_image` and `encode_text` store what they compute under the keys the chat and text-to-image
pipelines read (an embedded Redis, fake stages, no Ray): a workflow that encodes warms the cache
for the requests that follow."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cache import EmbeddedRedis, EmbeddingCache
from pipelines.chat import ChatPipeline
from pipelines.chat_request import ChatRequest
from pipelines.image_request import ImageRequest
from pipelines.text_to_image import TextToImagePipeline
from pipelines.workflow import load_workflows, run_to_result
from pipelines.workflow.ops import OpContext
from tests.serving import image_bytes
from tests.workflow_fakes import workflow_of
from triptych.types import (
    ChatMessage,
    DecoderInfo,
    GeneratedImages,
    ImageParams,
    ImagePart,
    SamplingParams,
    TextDelta,
    TextEncoderInfo,
    TextPart,
    VisionFeatures,
    VisionInfo,
)

ENCODE = """
name: warm
inputs: {image: image}
steps:
  - {name: vision, op: encode_image, with: {image: $inputs.image}}
outputs: {tokens: $vision.tokens}
"""


class FakeVision:
    def __init__(self):
        self.encoded = 0

    async def info(self):
        return VisionInfo("fake-vision", "r1", {"size": 8}, num_visual_tokens=4)

    async def encode(self, image):
        self.encoded += 1
        return VisionFeatures(torch.ones(4, 8), torch.full((4,), 0.25))


class FakeDecoder:
    async def info(self):
        return DecoderInfo("fake-llm", context_length=512)

    async def generate(self, prompt_ids, images, params):
        yield TextDelta("ok", finish_reason="stop", completion_tokens=1)


class FakePromptBuilder:
    def build(self, messages, visual_tokens):
        return [1, 2, 3] + [0] * sum(visual_tokens)


class FakeTextEncoder:
    def __init__(self):
        self.encoded: list[str] = []

    async def info(self):
        return TextEncoderInfo("fake-clip-text", "r1", "fake-tokenizer")

    async def encode(self, text, field):
        self.encoded.append(text)
        return torch.ones(3, 8)  # (T, D)


class FakeDenoiser:
    async def generate(self, cond, uncond, params):
        yield GeneratedImages((b"png",), (params.seed,))


@pytest.fixture(scope="module")
def redis_url():
    with EmbeddedRedis(maxmemory_mb=16) as server:
        yield server.url


def test_encode_image_warms_the_cache_the_chat_pipeline_reads(redis_url):
    vision, cache = FakeVision(), EmbeddingCache(redis_url)
    chat = ChatPipeline(vision, FakeDecoder(), cache, FakePromptBuilder())
    context = OpContext(chat=chat, vision=vision, cache=cache)
    picture = image_bytes((10, 200, 30))
    warm = workflow_of(ENCODE)

    async def scenario():
        first = await run_to_result(warm, {"image": picture}, context)
        again = await run_to_result(warm, {"image": picture}, context)
        request = ChatRequest((ChatMessage("user", (ImagePart(picture), TextPart("what?"))),), SamplingParams(),
                              "none", 1.0)  # fmt: skip
        chatted = await run_to_result(load_workflows()["chat"], {"request": request}, context)
        return first, again, chatted

    first, again, chatted = asyncio.run(scenario())
    assert (first.outputs, first.steps[0].cache_hit) == ({"tokens": 4}, False)
    assert again.steps[0].cache_hit is True
    assert chatted.steps[0].cache_hit is True  # the chat found the features encode_image stored
    assert vision.encoded == 1


def test_encode_text_warms_the_cache_the_text_to_image_pipeline_reads(redis_url):
    encoder, cache = FakeTextEncoder(), EmbeddingCache(redis_url)
    images = TextToImagePipeline(encoder, FakeDenoiser(), cache)
    context = OpContext(text_to_image=images, text_encoder=encoder, cache=cache)
    warm = workflow_of("""
name: warm_text
inputs: {prompt: text, negative: text}
steps:
  - {name: positive, op: encode_text, with: {text: $inputs.prompt}}
  - {name: negative, op: encode_text, with: {text: $inputs.negative}}
outputs: {tokens: $positive.tokens}
""")
    request = ImageRequest("a tiny blue star", "blurry", ImageParams(64, 64, 2, "ddim", 5.0, seed=3, n=1))

    async def scenario():
        warmed = await run_to_result(warm, {"prompt": request.prompt, "negative": request.negative_prompt}, context)
        painted = await run_to_result(load_workflows()["text_to_image"], {"request": request}, context)
        return warmed, painted

    warmed, painted = asyncio.run(scenario())
    assert warmed.outputs == {"tokens": 3} and [s.cache_hit for s in warmed.steps] == [False, False]
    assert painted.steps[0].cache_hit is True and painted.outputs["seeds"] == [3]
    assert sorted(encoder.encoded) == ["a tiny blue star", "blurry"]  # each once: the pipeline hit both
