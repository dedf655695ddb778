"""Split serving == unsplit transformers: vision tower -> visual tokens -> LLMEngine gives exactly the
tokens that ``LlavaForConditionalGeneration.generate(input_ids, pixel_values)`` gives (tiny-hf-llava)."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

import models
from decoders.engine import LLMEngine
from models.tiny import ensure_tiny_models
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

MAX_NEW = 16


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def model_dir(tiny_dirs):
    return tiny_dirs["tiny-hf-llava"]


@pytest.fixture(scope="module")
def split(model_dir):
    return models.load_vision_tower(model_dir), LLMEngine(models.load_language_model(model_dir))


@pytest.fixture(scope="module")
def llava(model_dir):
    return LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True
    ).eval()


def random_image(seed, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8), "RGB")


def unsplit_ids(llava, prompt, pixel_values, eos_ids):
    with torch.no_grad():
        out = llava.generate(
            input_ids=torch.tensor([prompt]),
            pixel_values=pixel_values,
            do_sample=False,
            max_new_tokens=MAX_NEW,
        )
    ids = out[0, len(prompt) :].tolist()
    stopped = bool(ids) and ids[-1] in eos_ids
    return (ids[:-1] if stopped else ids), ("stop" if stopped else "length")


CHATS = {
    "one_image": [ChatMessage("user", (ImagePart(b"0"), TextPart("what shape is in the image?")))],
    "two_images_multi_turn": [
        ChatMessage(
            "system", (TextPart("You are a helpful assistant that answers questions about images."),)
        ),
        ChatMessage("user", (ImagePart(b"0"), TextPart("describe the picture."))),
        ChatMessage("assistant", (TextPart("the image shows a red circle on a white background."),)),
        ChatMessage("user", (TextPart("and this one?"), ImagePart(b"1"))),
    ],
}


@pytest.mark.parametrize("chat", list(CHATS))
def test_split_generation_equals_unsplit_llava(split, llava, chat):
    tower, engine = split
    messages = CHATS[chat]
    n_images = sum(isinstance(p, ImagePart) for m in messages for p in m.parts)
    assert tower.num_patches == llava.config.image_seq_length  # strategy "default": patches, no [CLS]
    pixel_values = torch.stack([tower.preprocess(random_image(i)) for i in range(n_images)])  # (I, 3, H, W)
    with torch.no_grad():
        tokens, _ = tower(pixel_values)  # (I, N, D)
    prompt = engine.prompt_builder.build(messages, [tower.num_patches] * n_images)
    assert prompt.count(engine.image_token_id) == n_images * tower.num_patches

    expected, finish = unsplit_ids(llava, prompt, pixel_values, engine.eos_token_ids)
    assert list(engine.generate_ids(prompt, list(tokens), SamplingParams(max_tokens=MAX_NEW))) == expected
    deltas = list(engine.generate(prompt, list(tokens), SamplingParams(max_tokens=MAX_NEW)))
    assert "".join(d.text for d in deltas) == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == (finish, len(expected))


def test_prompt_expansion_matches_llava_processor(split, model_dir):
    _, engine = split
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    messages = CHATS["two_images_multi_turn"]
    hf_messages = [
        {
            "role": m.role,
            "content": [
                {"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
                for p in m.parts
            ],
        }
        for m in messages
    ]
    text = engine.tokenizer.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
    expected = processor(text=text, images=[random_image(0), random_image(1)], return_tensors="pt")[
        "input_ids"
    ]
    assert engine.prompt_builder.build(messages, [16, 16]) == expected[0].tolist()


def test_open_clip_source_matches_generate_on_the_same_inputs_embeds(tiny_dirs):
    model_dir = tiny_dirs["tiny-open-clip-llava"]
    tower = models.load_vision_tower(model_dir)
    parts = models.load_language_model(model_dir)
    engine = LLMEngine(parts)
    messages = CHATS["two_images_multi_turn"]
    pixel_values = torch.stack([tower.preprocess(random_image(i)) for i in range(2)])  # (2, 3, H, W)
    with torch.no_grad():
        tokens, _ = tower(pixel_values)  # (2, N, D)
    prompt = engine.prompt_builder.build(messages, [tower.num_patches] * 2)
    inputs_embeds = engine.embed_prompt(prompt, list(tokens)).clone()  # (1, T, D)
    with torch.no_grad():
        out = parts.model.generate(inputs_embeds=inputs_embeds, do_sample=False, max_new_tokens=MAX_NEW)
    expected = out[0].tolist()  # only the new tokens when generating from inputs_embeds
    if expected and expected[-1] in engine.eos_token_ids:
        expected = expected[:-1]
    assert list(engine.generate_ids(prompt, list(tokens), SamplingParams(max_tokens=MAX_NEW))) == expected
