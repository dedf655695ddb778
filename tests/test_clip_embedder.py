"""ClipEmbedder on the tiny random CLIP (built from a config) and the shipped toy CLIP, in-process:
unit vectors, deterministic, a batch equals one-by-one, long texts and bad images rejected naming
the field, and the toy CLIP's text-to-image retrieval over the 30 single-object toy images."""

from __future__ import annotations

import io
import random

import pytest
import torch

from encoders.clip_embedder import ClipEmbedder
from models.tiny_clip import ensure_tiny_clip
from tests.serving import image_bytes
from toy import CHECKPOINTS, world
from triptych.errors import RequestError

TEXTS = ["a red circle", "a blue square at the top", "hello", "two green triangles and a cross"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread) -> ClipEmbedder:
    return ClipEmbedder.from_dir(ensure_tiny_clip(tmp_path_factory.mktemp("models")), batch_size=3)


@pytest.fixture(scope="module")
def toy(one_torch_thread) -> ClipEmbedder:
    return ClipEmbedder.from_dir(CHECKPOINTS / "toy-clip")


def _images() -> list[bytes]:
    return [image_bytes(colour, size=(40, 30)) for colour in ((255, 0, 0), (0, 0, 255), (20, 200, 20), (9, 9, 9))]


def test_info_describes_the_model(tiny, toy):
    info = tiny.info()
    assert (info.model_id, info.dimensions, info.context_length, info.image_tokens) == ("tiny-clip", 32, 16, 16)
    assert info.revision and info.preprocess["image"]["size"] == 32 and info.preprocess["dtype"] == "float32"
    assert (toy.info().model_id, toy.info().dimensions, toy.info().image_tokens) == ("toy-clip", 96, 64)


@pytest.mark.parametrize("kind", ["texts", "images"])
def test_unit_vectors_deterministic_and_a_batch_equals_one_by_one(tiny, kind):
    """batch_size 3 with 4 inputs: two chunks; each row equals the input embedded alone."""
    inputs, embed = (TEXTS, tiny.embed_texts) if kind == "texts" else (_images(), tiny.embed_images)
    batch = embed(inputs)
    assert batch.shape == (4, 32) and batch.dtype == torch.float32
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(embed(inputs), batch, rtol=0, atol=0)
    alone = torch.cat([embed([one]) for one in inputs])
    torch.testing.assert_close(alone, batch, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])  # different inputs, different vectors


def test_token_counts_and_texts_past_the_context_are_rejected(tiny, toy):
    assert toy.count_tokens(["a red circle"]) == [4]  # three words + </s>
    too_long = " ".join(["circle"] * 40)
    with pytest.raises(RequestError) as caught:
        toy.embed_texts(["a red circle", too_long], fields=["input[0]", "input[1]"])
    assert caught.value.field == "input[1]" and "at most 32" in caught.value.message
    for bad, message in (("", "must not be empty"), ("   ", "must not be empty"), (3, "must be a string")):
        with pytest.raises(RequestError, match=message) as caught:
            tiny.count_tokens([bad])
        assert caught.value.field == "texts[0]"


def test_bad_images_are_rejected_naming_the_field(tiny):
    png = _images()[0]
    with pytest.raises(RequestError) as caught:
        tiny.embed_images([png, png[: len(png) // 2]], fields=["a", "b"])
    assert caught.value.field == "b" and "truncated" in caught.value.message
    with pytest.raises(RequestError, match="not a recognised image"):
        tiny.embed_images([b"not an image"])
    assert tiny.embed_images([]).shape == (0, 32) and tiny.embed_texts([]).shape == (0, 32)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def single_object_images() -> tuple[list[str], list[bytes]]:
    """The 30 (colour, shape) toy classes: caption "a red circle" and one rendered image each."""
    captions, images = [], []
    for index, (shape, colour) in enumerate((s, c) for s in world.SHAPES for c in world.COLOURS):
        scene = world.single_object_scene(random.Random(index), shape=shape, colour=colour)
        captions.append(f"a {colour} {shape}")
        images.append(_png(world.render(scene)))
    return captions, images


def test_toy_clip_ranks_the_red_circle_first_for_a_red_circle(toy):
    captions, images = single_object_images()
    assert len(images) == 30
    image_vectors = toy.embed_images(images)  # (30, D)
    query = toy.embed_texts(["a red circle"])  # (1, D)
    ranking = (image_vectors @ query[0]).argsort(descending=True).tolist()
    assert captions[ranking[0]] == "a red circle"
    text_vectors = toy.embed_texts(captions)  # (30, D)
    top1 = (text_vectors @ image_vectors.T).argmax(dim=1)  # each caption's best image
    assert (top1 == torch.arange(30)).float().mean() >= 0.9  # measured: 30 / 30 (benchmarks.embeddings)


def test_counting_and_embedding_from_many_threads_at_once(toy):
    """The Embedder counts tokens in worker threads while a batch is embedded in another (the toy CLIP's
    HF tokenizer keeps its padding on shared state: without the engine's lock a batch lost its padding)."""
    from concurrent.futures import ThreadPoolExecutor

    expected = toy.embed_texts(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        counts = [pool.submit(lambda: [toy.count_tokens(TEXTS) for _ in range(50)]) for _ in range(2)]
        batches = [pool.submit(lambda: [toy.embed_texts(TEXTS) for _ in range(10)]) for _ in range(2)]
        for future in batches:
            for vectors in future.result():
                torch.testing.assert_close(vectors, expected, rtol=0, atol=1e-5)
        assert all(result == [toy.count_tokens(TEXTS)] * 50 for result in (f.result() for f in counts))
