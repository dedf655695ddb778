"""Vision towers on the tiny checkpoints: shapes, [CLS] attention against reference attention weights,
HF tokens against Llava's own get_image_features, and the batched VisionEncoderEngine."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

import models
from encoders.engine import VisionEncoderEngine
from encoders.vision_tower import VisionTower
from models.tiny import ensure_tiny_models
from triptych.types import VisionFeatures

SOURCES = ["tiny-open-clip-llava", "tiny-hf-llava"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def towers(model_dirs):
    return {name: models.load_vision_tower(model_dirs[name]) for name in SOURCES}


def random_image(seed: int, size=(40, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


def pixels(tower, n=3) -> torch.Tensor:
    return torch.stack(
        [tower.preprocess(random_image(i, (40 + 8 * i, 56))) for i in range(n)]
    )  # (B, 3, H, W)


@pytest.mark.parametrize("name", SOURCES)
def test_tower_shapes_and_attention(towers, name):
    tower = towers[name]
    assert isinstance(tower, VisionTower)
    assert tower.num_patches == 16
    pv = pixels(tower)
    assert pv.shape == (3, 3, 32, 32) and pv.dtype == torch.float32
    with torch.inference_mode():
        tokens, attn = tower(pv)
    assert tokens.shape == (3, 16, 64)  # (B, N, D_lm)
    assert attn.shape == (3, 16) and attn.dtype == torch.float32  # (B, N)
    assert torch.isfinite(tokens).all() and torch.isfinite(attn).all()
    assert (attn > 0).all()
    assert (attn.sum(-1) < 1).all()  # softmax over [CLS] + patches, [CLS] column dropped


@pytest.mark.parametrize("name", SOURCES)
def test_fingerprint(towers, name):
    fp = towers[name].fingerprint
    assert fp["model_id"] == name
    assert len(fp["revision"]) == 16 and int(fp["revision"], 16) >= 0
    assert "preprocess" in fp
    import json

    json.dumps(fp)  # goes into cache keys


def test_open_clip_fingerprint_has_preprocess_config(towers):
    pre = towers["tiny-open-clip-llava"].fingerprint["preprocess"]
    assert (
        pre["size"] == [32, 32]
        and pre["resize_mode"] == "squash"
        and len(pre["mean"]) == len(pre["std"]) == 3
    )


@pytest.mark.parametrize("name", SOURCES)
def test_batch_invariance(towers, name):
    tower = towers[name]
    pv = pixels(tower)
    with torch.inference_mode():
        tokens, attn = tower(pv)
        one_tokens, one_attn = tower(pv[1:2])
    torch.testing.assert_close(one_tokens[0], tokens[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one_attn[0], attn[1], atol=1e-6, rtol=1e-5)


def test_open_clip_cls_attention_matches_multihead_attention_weights(towers):
    """Reference: rerun the last block's nn.MultiheadAttention with need_weights=True."""
    tower = towers["tiny-open-clip-llava"]
    visual = tower.visual
    pv = pixels(tower)
    with torch.inference_mode():
        tokens, attn = tower(pv)
        x = visual._embeds(pv)  # (B, L, W)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(x)
        _, weights = last.attn(h, h, h, need_weights=True, average_attn_weights=True)  # (B, L, L)
        reference = weights[:, 0, 1:]  # (B, N)
        _, patch_tokens = visual(pv)  # (B, N, W) after ln_post
        reference_tokens = tower.projector(patch_tokens)
    torch.testing.assert_close(attn, reference, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tokens, reference_tokens)
    assert visual.output_tokens and len(visual.transformer.resblocks) == 2


def test_open_clip_attention_differs_per_image(towers):
    tower = towers["tiny-open-clip-llava"]
    with torch.inference_mode():
        _, attn = tower(pixels(tower))
    assert not torch.allclose(attn[0], attn[1])


@pytest.fixture(scope="module")
def full_llava(model_dirs):
    return LlavaForConditionalGeneration.from_pretrained(
        model_dirs["tiny-hf-llava"], dtype=torch.float32, local_files_only=True, attn_implementation="eager"
    ).eval()


def test_hf_tokens_equal_llava_get_image_features(towers, full_llava):
    tower = towers["tiny-hf-llava"]
    pv = pixels(tower)
    with torch.inference_mode():
        tokens, _ = tower(pv)
        expected = torch.stack(
            list(full_llava.get_image_features(pixel_values=pv, return_dict=True).pooler_output)
        )
    assert expected.shape == tokens.shape == (3, 16, 64)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)


def test_hf_cls_attention_equals_eager_output_attentions_of_feature_layer(towers, full_llava):
    tower = towers["tiny-hf-llava"]
    config = full_llava.config
    assert config.vision_feature_layer == -2 and config.vision_config.num_hidden_layers == 3
    assert tower.feature_layer_index == 1  # hidden_states[-2] is the output of layer 1 of 0..2
    pv = pixels(tower)
    with torch.inference_mode():
        _, attn = tower(pv)
        out = full_llava.model.vision_tower(
            pv, output_attentions=True, output_hidden_states=True, return_dict=True
        )
    reference = out.attentions[tower.feature_layer_index][:, :, 0, 1:].mean(dim=1)  # (B, N)
    torch.testing.assert_close(attn, reference, atol=1e-6, rtol=1e-5)
    other = out.attentions[2][:, :, 0, 1:].mean(dim=1)
    assert not torch.allclose(attn, other)  # a different layer would be detected


def test_hf_preprocess_matches_llava_processor(towers, model_dirs):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dirs["tiny-hf-llava"], local_files_only=True)
    image = random_image(7)
    expected = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(towers["tiny-hf-llava"].preprocess(image), expected)


@pytest.mark.parametrize("name", SOURCES)
def test_engine_encode(towers, name):
    tower = towers[name]
    engine = VisionEncoderEngine(tower)
    assert engine.num_visual_tokens == 16
    assert engine.fingerprint == {**tower.fingerprint, "dtype": "float32"}
    images = [random_image(i, (40 + 8 * i, 56)) for i in range(3)]
    features = engine.encode(images)
    assert len(features) == 3 and all(isinstance(f, VisionFeatures) for f in features)
    with torch.inference_mode():
        tokens, attn = tower(pixels(tower))
    for i, f in enumerate(features):
        assert f.tokens.shape == (16, 64) and f.cls_attention.shape == (16,)
        assert f.tokens.untyped_storage().nbytes() == 16 * 64 * 4  # own storage, not a view of the batch
        assert not f.tokens.is_inference()
        torch.testing.assert_close(f.tokens, tokens[i])
        torch.testing.assert_close(f.cls_attention, attn[i])
    assert engine.encode([]) == []
