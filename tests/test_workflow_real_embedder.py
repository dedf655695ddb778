"""The embedding built-ins over the real embeddings path in one process (tiny CLIP, EmbeddingPipeline,
no Redis, no Ray): unit vectors of the model's width, and an image query finds itself first."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cache import EmbeddingCache
from encoders.clip_embedder import ClipEmbedder
from models.tiny_clip import ensure_tiny_clip
from pipelines.embeddings import EmbeddingPipeline
from pipelines.local_embedder import LocalEmbedderStage
from pipelines.workflow import load_workflows, run_to_result
from pipelines.workflow.ops import OpContext
from tests.serving import image_bytes
from triptych.errors import RequestError

WORKFLOWS = load_workflows()
IMAGES = [image_bytes(colour) for colour in ((220, 20, 20), (20, 220, 20), (20, 20, 220))]


@pytest.fixture(scope="module")
def context(tmp_path_factory, one_torch_thread) -> OpContext:
    engine = ClipEmbedder.from_dir(ensure_tiny_clip(tmp_path_factory.mktemp("models")))
    return OpContext(embeddings=EmbeddingPipeline(LocalEmbedderStage(engine), EmbeddingCache(None)))


def test_embed_returns_one_unit_vector_per_item_in_order(context):
    result = asyncio.run(run_to_result(WORKFLOWS["embed"], {"items": ["a red circle", IMAGES[0]]}, context))
    vectors = result.outputs["embeddings"]  # (2, D)
    assert vectors.shape[0] == 2
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert result.steps[0].cache_hit is False  # no Redis: every item computed


def test_image_search_with_an_image_query_ranks_that_image_first(context):
    result = asyncio.run(run_to_result(WORKFLOWS["image_search"], {"query": IMAGES[1], "images": IMAGES}, context))
    assert result.outputs["ranking"][0] == 1
    assert sorted(result.outputs["ranking"]) == [0, 1, 2]
    assert result.outputs["scores"][1] == pytest.approx(1.0, abs=1e-5)


def test_image_search_with_a_text_query_scores_every_image(context):
    result = asyncio.run(run_to_result(WORKFLOWS["image_search"], {"query": "a green square", "images": IMAGES},
                                       context))  # fmt: skip
    scores = result.outputs["scores"]
    assert len(scores) == 3 and all(-1.0 <= s <= 1.0 for s in scores)
    assert result.outputs["ranking"] == sorted(range(3), key=lambda i: -scores[i])


def test_a_bad_image_in_the_list_is_a_request_error_naming_the_step_and_item(context):
    with pytest.raises(RequestError) as info:
        asyncio.run(run_to_result(WORKFLOWS["image_search"], {"query": "x", "images": [IMAGES[0], b"junk"]}, context))
    assert info.value.field == "images[1]" and info.value.message.startswith("step 'embed_images': ")
