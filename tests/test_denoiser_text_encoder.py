"""TextEncoderEngine on the tiny SD checkpoint: the pipeline's embeddings, loading only its own folders,
cache identity that follows the weights, and prompts rejected by name (empty, too long)."""

import shutil

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from denoisers import TextEncoderEngine
from triptych.errors import RequestError
from triptych.types import TextEncoderInfo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_only_copy(tiny_sd_dir, root):
    """``root/tiny-sd`` with only the text encoder and tokenizer folders of the checkpoint."""
    out = root / "tiny-sd"
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(tiny_sd_dir / sub, out / sub)
    return out


@pytest.mark.parametrize("text", ["a red circle", "blurry", ""])
def test_embeddings_are_the_diffusers_pipelines(text_engine, tiny_sd_dir, text):
    """What the replicas computed before, when they loaded the whole pipeline: bit for bit."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, local_files_only=True)
    expected, _ = pipe.encode_prompt(text, "cpu", 1, do_classifier_free_guidance=False)  # (1, T, D)
    got = text_engine.encode_prompt(text, field="negative_prompt", allow_empty=True)
    assert got.shape == (77, 32) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert torch.equal(got, expected[0])


def test_loads_only_the_text_encoder_and_tokenizer(text_engine, tiny_sd_dir, tmp_path):
    alone = TextEncoderEngine.from_pretrained(text_only_copy(tiny_sd_dir, tmp_path))  # no unet/, vae/
    assert alone.info() == text_engine.info()
    assert torch.equal(alone.encode_prompt("a red circle"), text_engine.encode_prompt("a red circle"))


def test_info_names_the_model_and_its_files(text_engine, tiny_sd_dir):
    info = text_engine.info()
    assert isinstance(info, TextEncoderInfo) and info.model_id == "tiny-sd"
    assert len(info.revision) == 16 and len(info.tokenizer_id) == 16 and info.revision != info.tokenizer_id
    assert TextEncoderEngine.from_pretrained(tiny_sd_dir).info() == info  # a pure function of the files


def test_revision_changes_with_the_text_encoder_weights(text_engine, tiny_sd_dir, tmp_path):
    changed = text_only_copy(tiny_sd_dir, tmp_path)
    weights = changed / "text_encoder" / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in sorted(tensors) if k.endswith("final_layer_norm.bias"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    other = TextEncoderEngine.from_pretrained(changed)
    assert other.info().revision != text_engine.info().revision
    assert other.info().tokenizer_id == text_engine.info().tokenizer_id
    assert not torch.equal(other.encode_prompt("a red circle"), text_engine.encode_prompt("a red circle"))


def test_different_prompts_give_different_embeddings(text_engine):
    emb = text_engine.encode_prompt("a red circle")
    assert torch.equal(emb, text_engine.encode_prompt("a red circle"))
    assert not torch.equal(emb, text_engine.encode_prompt("a blue square"))


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_prompt_is_rejected(text_engine, text):
    with pytest.raises(RequestError) as err:
        text_engine.encode_prompt(text)
    assert err.value.field == "prompt"
    assert text_engine.encode_prompt(text, field="negative_prompt", allow_empty=True).shape == (77, 32)


def test_non_string_prompt_is_rejected(text_engine):
    with pytest.raises(RequestError) as err:
        text_engine.encode_prompt(["a red circle"])
    assert err.value.field == "prompt" and "string" in err.value.message


def test_prompt_longer_than_the_text_encoder_is_rejected_not_truncated(text_engine):
    assert text_engine.max_prompt_tokens == 75
    assert text_engine.encode_prompt("a " * 75).shape == (77, 32)  # "a" is one token: exactly the limit
    with pytest.raises(RequestError) as err:
        text_engine.encode_prompt("a " * 76)
    assert err.value.field == "prompt"
    assert "76 tokens" in err.value.message and "at most 75" in err.value.message
    assert "not truncated" in err.value.message
    with pytest.raises(RequestError) as err:
        text_engine.encode_prompt("a " * 80, field="negative_prompt", allow_empty=True)
    assert err.value.field == "negative_prompt"
