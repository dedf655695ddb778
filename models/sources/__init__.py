"""Registry of model sources: on-disk checkpoint formats, one module per format.

Each source module provides ``NAME``, ``detect(model_dir) -> bool``,
``load_vision_tower(model_dir) -> VisionTower``,
``load_chat_tokenizer(model_dir) -> ChatTokenizer`` (no weights) and
``load_language_model(model_dir) -> LanguageModelParts``. Adding a format is one new file plus one
line here. Detection tries sources in this order.
"""

from __future__ import annotations

from types import ModuleType

from . import hf_llava, open_clip_llava

SOURCES: dict[str, ModuleType] = {
    open_clip_llava.NAME: open_clip_llava,
    hf_llava.NAME: hf_llava,
}
