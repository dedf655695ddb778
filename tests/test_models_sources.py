"""models: source detection, offline loading of both tiny checkpoints, LanguageModelParts, profiles."""

import dataclasses
import json

import pytest
import torch
from transformers import LlavaForConditionalGeneration

import models
from decoders.language_model import ChatTokenizer
from models.profiles import PROFILES, resolve_chat_model, resolve_image_model
from models.tiny import ensure_tiny_models


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def parts(model_dirs):
    return {name: models.load_language_model(path) for name, path in model_dirs.items()}


def test_detect_source(model_dirs, tmp_path):
    assert models.detect_source(model_dirs["tiny-open-clip-llava"]) == "open_clip_llava"
    assert models.detect_source(str(model_dirs["tiny-hf-llava"])) == "hf_llava"
    with pytest.raises(FileNotFoundError):
        models.detect_source(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a known checkpoint format"):
        models.detect_source(tmp_path)
    (tmp_path / "triptych_model.json").write_text(json.dumps({"source": "nope"}))
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        models.detect_source(tmp_path)


@pytest.mark.parametrize("name", ["tiny-open-clip-llava", "tiny-hf-llava"])
def test_language_model_parts(parts, name):
    p = parts[name]
    assert dataclasses.is_dataclass(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.model_id = "x"
    assert p.model_id == name
    assert (
        p.image_token == "<image>" and p.image_token_id == p.tokenizer.convert_tokens_to_ids("<image>") == 4
    )
    assert p.context_length == 512
    assert not p.model.training
    assert all(param.dtype == torch.float32 for param in p.model.parameters())
    assert p.embed_tokens is p.model.get_input_embeddings()

    ids = torch.tensor([[1, 10, 11, 12]])
    embeds = p.embed_tokens(ids)  # (1, 4, 64)
    with torch.inference_mode():
        full = p.model(inputs_embeds=embeds, use_cache=True)
        prefix = p.model(inputs_embeds=embeds[:, :3], use_cache=True)
        step = p.model(inputs_embeds=embeds[:, 3:], past_key_values=prefix.past_key_values, use_cache=True)
    assert full.logits.shape == (1, 4, len(p.tokenizer))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-open-clip-llava", "tiny-hf-llava"])
def test_chat_template(parts, name):
    tokenizer = parts[name].tokenizer
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "what colour is the square?"}],
        },
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "image"}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<s>system: You are a helpful assistant.</s>user:<image> what colour is the square?</s>"
        "assistant: red</s>user: and<image></s>assistant:"
    )
    assert not tokenizer.apply_chat_template(messages, tokenize=False).endswith("assistant:")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(parts[name].image_token_id) == 2 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids) == text  # byte-level BPE round-trips
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>" and tokenizer.unk_token == "<unk>"


def test_hf_llava_logits_equal_llava_own(parts, model_dirs):
    """The language half of hf_llava gives Llava's own logits for the same inputs_embeds."""
    full = LlavaForConditionalGeneration.from_pretrained(
        model_dirs["tiny-hf-llava"], dtype=torch.float32, local_files_only=True
    ).eval()
    p = parts["tiny-hf-llava"]
    assert not hasattr(p.model.model, "vision_tower")  # vision half dropped
    ids = torch.tensor([[1, 20, 4, 4, 21, 22]])
    image = torch.randn(1, 2, 64, generator=torch.Generator().manual_seed(0))
    embeds = p.embed_tokens(ids).clone()
    embeds[0, 2:4] = image[0]
    with torch.inference_mode():
        ours = p.model(inputs_embeds=embeds, use_cache=True).logits
        theirs = full(inputs_embeds=embeds, use_cache=True).logits
        by_ids = full(input_ids=ids[:, :2]).logits
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[:, :2], by_ids, atol=1e-5, rtol=1e-5)


def test_open_clip_llava_language_model_is_a_llama(parts):
    model = parts["tiny-open-clip-llava"].model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2


def test_profiles(model_dirs, tmp_path):
    root = model_dirs["tiny-hf-llava"].parent
    assert resolve_chat_model("tiny", root) == model_dirs["tiny-open-clip-llava"]
    assert resolve_chat_model("tiny", root, "tiny-hf-llava") == model_dirs["tiny-hf-llava"]
    assert resolve_chat_model("tiny", root, "tiny-open-clip-llava") == model_dirs["tiny-open-clip-llava"]
    assert set(PROFILES["tiny"].models) == {*model_dirs, "tiny-sd", "tiny-clip"}
    assert resolve_image_model("tiny", root).name == "tiny-sd"
    # any checkpoint directory: a path, or a name under the model root; nothing is generated for it
    custom = tmp_path / "my-llava"
    custom.mkdir()
    assert resolve_chat_model("tiny", tmp_path / "empty", str(custom)) == custom
    assert resolve_chat_model("tiny", tmp_path, "my-llava") == custom
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="unknown model profile 'nope'"):
        resolve_chat_model("nope", tmp_path)
    with pytest.raises(ValueError, match="unknown model 'missing'"):
        resolve_chat_model("tiny", tmp_path, "missing")


def test_load_chat_tokenizer_matches_language_model(model_dirs, parts):
    for name, path in model_dirs.items():
        chat = models.load_chat_tokenizer(path)
        assert isinstance(chat, ChatTokenizer)
        p = parts[name]
        assert (chat.image_token, chat.image_token_id, chat.context_length, chat.model_id) == (
            p.image_token,
            p.image_token_id,
            p.context_length,
            p.model_id,
        )
        assert chat.tokenizer.chat_template == p.tokenizer.chat_template
        assert chat.tokenizer.get_vocab() == p.tokenizer.get_vocab()


def test_import_models_is_light():
    import subprocess
    import sys

    code = "import sys, models, models.profiles; print(any(m in sys.modules for m in ('torch', 'open_clip')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
