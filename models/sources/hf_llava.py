"""Model source ``hf_llava``: a plain Hugging Face ``LlavaForConditionalGeneration`` checkpoint dir.

Detected by ``config.json`` with ``model_type == "llava"``; expects the usual files next to it
(``model*.safetensors``, tokenizer files, ``preprocessor_config.json``, optionally
``processor_config.json`` / ``chat_template.*``). Everything is loaded with ``from_pretrained``
offline. Each side drops the half it does not use: the vision tower keeps ``vision_tower`` +
``multi_modal_projector``; the language model keeps Llava with those two removed, so its logits
are Llava's own for the same ``inputs_embeds``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

from decoders.language_model import ChatTokenizer, LanguageModelParts
from encoders.hf_llava_tower import HFLlavaTower
from encoders.vision_tower import weights_revision

NAME = "hf_llava"


def detect(model_dir: Path) -> bool:
    path = Path(model_dir) / "config.json"
    return path.is_file() and json.loads(path.read_text()).get("model_type") == "llava"


def _load_llava(model_dir: Path) -> LlavaForConditionalGeneration:
    return LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True
    ).eval()


def load_vision_tower(model_dir: Path) -> HFLlavaTower:
    model_dir = Path(model_dir)
    llava = _load_llava(model_dir).model  # LlavaModel; drop the LM head with the outer model
    del llava.language_model  # get_image_features only needs vision_tower + multi_modal_projector
    image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    tower = HFLlavaTower(
        llava, image_processor, model_id=model_dir.resolve().name, revision=_revision(model_dir)
    )
    return tower.float().eval()


def load_chat_tokenizer(model_dir: Path) -> ChatTokenizer:
    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = _processor_chat_template(model_dir)
    image_token_id = config.image_token_id
    return ChatTokenizer(
        tokenizer=tokenizer,
        image_token=tokenizer.convert_ids_to_tokens(image_token_id),
        image_token_id=image_token_id,
        context_length=config.text_config.max_position_embeddings,
        model_id=model_dir.resolve().name,
    )


def load_language_model(model_dir: Path) -> LanguageModelParts:
    model_dir = Path(model_dir)
    chat = load_chat_tokenizer(model_dir)
    llava = _load_llava(model_dir)
    del llava.model.vision_tower  # text-only forward (pixel_values=None) never touches them
    del llava.model.multi_modal_projector
    return LanguageModelParts.from_model(llava, chat)


def _revision(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors or *.bin weights")
    return weights_revision(files)


def _processor_chat_template(model_dir: Path) -> str | None:
    """Llava checkpoints often keep the chat template with the processor, not the tokenizer."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        path = model_dir / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if template:
                return template
    return None
