"""The tiny Stable Diffusion checkpoint: deterministic, reused, reloadable offline, CLIP's real BPE."""

import hashlib
import os

import pytest
import torch
from diffusers import StableDiffusionPipeline

from models.tiny_diffusion import IMAGE_SIZE, MAX_TEXT_TOKENS, NUM_MERGES, ensure_tiny_diffusion


def file_digests(path):
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ensure_tiny_diffusion(tmp_path_factory.mktemp("models"))


def test_building_is_deterministic_and_atomic(model_dir, tmp_path):
    other = ensure_tiny_diffusion(tmp_path)
    assert other.name == model_dir.name == "tiny-sd"
    assert file_digests(other) == file_digests(model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-sd"]  # no temporary directory left behind


def test_an_existing_checkpoint_is_reused(model_dir):
    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    before = os.stat(weights)
    assert ensure_tiny_diffusion(model_dir.parent) == model_dir
    after = os.stat(weights)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_reloads_offline_with_the_real_pipeline_loader(model_dir):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    assert pipe.safety_checker is None
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == IMAGE_SIZE
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    for name in ("vocab.json", "merges.txt"):
        assert (model_dir / "tokenizer" / name).is_file()
    assert pipe.tokenizer.model_max_length == MAX_TEXT_TOKENS
    assert len(pipe.tokenizer) == 256 * 2 + NUM_MERGES + 2


def test_tokenizer_is_clips_bpe(model_dir):
    """Words made of the kept merges get the same ids as open_clip's full CLIP tokenizer."""
    from open_clip.tokenizer import SimpleTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    text = "a photo of a red car on the left"  # every word within the first 4,000 merges
    ids = pipe.tokenizer(text).input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert ids[1:-1] == SimpleTokenizer().encode(text)
    assert pipe.tokenizer.decode(ids, skip_special_tokens=True) == text
    # a word beyond the kept merges still encodes (into smaller pieces), never to <unk>
    rare = pipe.tokenizer("pneumonoultramicroscopic").input_ids
    assert len(rare) > 3 and pipe.tokenizer.unk_token_id not in rare[1:-1]
    with torch.inference_mode():
        hidden = pipe.text_encoder(torch.tensor([ids])).last_hidden_state
    assert hidden.shape == (1, len(ids), pipe.text_encoder.config.hidden_size)
