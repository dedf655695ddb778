"""Model loading: find a checkpoint's format (its *source*) and load its vision or language half.

Heavy libraries (torch, transformers, open_clip) are imported only when something is loaded, so
importing ``models`` (e.g. for ``models.profiles``) stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decoders.language_model import ChatTokenizer, LanguageModelParts
    from encoders.vision_tower import VisionTower

__all__ = [
    "detect_source",
    "load_chat_tokenizer",
    "load_language_model",
    "load_vision_tower",
]


def detect_source(model_dir: Path | str) -> str:
    """Name of the source (format) of the checkpoint in ``model_dir``, e.g. ``"open_clip_llava"``."""
    from .sources import SOURCES

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    manifest = model_dir / "triptych_model.json"
    if manifest.is_file():
        source = json.loads(manifest.read_text()).get("source")
        if source not in SOURCES:
            raise ValueError(f"{manifest}: unknown source {source!r}; known: {sorted(SOURCES)}")
        return source
    for name, module in SOURCES.items():
        if module.detect(model_dir):
            return name
    raise ValueError(
        f"{model_dir}: not a known checkpoint format; expected triptych_model.json or a Hugging Face "
        f"config.json of a supported model_type (sources: {sorted(SOURCES)})"
    )


def load_vision_tower(model_dir: Path | str) -> VisionTower:
    """Load the vision tower + projector of the checkpoint in ``model_dir`` (eval, float32, CPU)."""
    from .sources import SOURCES

    return SOURCES[detect_source(model_dir)].load_vision_tower(Path(model_dir))


def load_language_model(model_dir: Path | str) -> LanguageModelParts:
    """Load tokenizer + language model of the checkpoint in ``model_dir`` (eval, float32, CPU)."""
    from .sources import SOURCES

    return SOURCES[detect_source(model_dir)].load_language_model(Path(model_dir))


def load_chat_tokenizer(model_dir: Path | str) -> ChatTokenizer:
    """Load only the tokenizer side (chat template, image token, context length); no weights."""
    from .sources import SOURCES

    return SOURCES[detect_source(model_dir)].load_chat_tokenizer(Path(model_dir))
