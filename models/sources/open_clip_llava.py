"""Model source ``open_clip_llava``: Triptych's own LLaVA-style format, one directory.

    triptych_model.json        {"source": "open_clip_llava", "format_version": 1, "model_id": ...,
                                "open_clip_config": {open_clip model cfg: embed_dim, vision_cfg, text_cfg, ...},
                                "preprocess_cfg": {open_clip PreprocessCfg: size, mean, std,
                                                   interpolation, resize_mode, fill_color},
                                "image_size": 32, "num_patches": 16,
                                "projector": {"type": "mlp2x_gelu", "in_features": D_v, "out_features": D_lm},
                                "language_model": "language_model", "image_token": "<image>"}
    vision_tower.safetensors   state dict of the open_clip ``VisionTransformer`` (``model.visual``)
    projector.safetensors      linear_1.{weight,bias}, linear_2.{weight,bias}
    language_model/            transformers causal LM ``save_pretrained`` dir + tokenizer (chat template)

The vision tower is built by ``open_clip.create_model`` from the custom config (through open_clip's
``local-dir:`` schema), then loaded strictly from ``vision_tower.safetensors``. Only the visual part
is used; the config's text tower is replaced by a stub before building so it costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from decoders.language_model import ChatTokenizer, LanguageModelParts
from encoders.open_clip_tower import OpenClipTower, ProjectorMLP
from encoders.vision_tower import weights_revision

NAME = "open_clip_llava"
MANIFEST = "triptych_model.json"
VISION_WEIGHTS = "vision_tower.safetensors"
PROJECTOR_WEIGHTS = "projector.safetensors"
FORMAT_VERSION = 1

# The text tower is never used here; build a minimal one instead of the configured one.
_TEXT_STUB = {"context_length": 2, "vocab_size": 2, "width": 8, "heads": 1, "layers": 1}


def detect(model_dir: Path) -> bool:
    path = Path(model_dir) / MANIFEST
    return path.is_file() and json.loads(path.read_text()).get("source") == NAME


def read_manifest(model_dir: Path) -> dict[str, Any]:
    manifest = json.loads((Path(model_dir) / MANIFEST).read_text())
    if manifest.get("source") != NAME:
        raise ValueError(f"{model_dir / MANIFEST}: source is {manifest.get('source')!r}, expected {NAME!r}")
    if manifest.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"{model_dir / MANIFEST}: unsupported format_version {manifest['format_version']}")
    return manifest


def create_visual(
    open_clip_config: dict[str, Any], preprocess_cfg: dict[str, Any]
) -> tuple[open_clip.transformer.VisionTransformer, dict[str, Any]]:
    """Build a randomly initialised open_clip visual tower (``output_tokens=True``) from a model cfg.

    Returns the tower (eval mode, float32, CPU) and open_clip's resolved preprocess cfg.
    """
    model_cfg = dict(open_clip_config)
    model_cfg["vision_cfg"] = {**model_cfg["vision_cfg"], "output_tokens": True}
    model_cfg["text_cfg"] = dict(_TEXT_STUB)
    with tempfile.TemporaryDirectory(prefix="triptych-open-clip-") as tmp:
        # open_clip's own local format: open_clip_config.json {"model_cfg", "preprocess_cfg"}.
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        (Path(tmp) / "open_clip_config.json").write_text(json.dumps(config))
        with _quiet_open_clip_weight_warnings():  # weights are loaded by the caller, on purpose
            model = open_clip.create_model(
                f"local-dir:{tmp}", load_weights=False, precision="fp32", device="cpu"
            )
    resolved = open_clip.get_model_preprocess_cfg(model)
    visual = model.visual.eval()
    return visual, _jsonable(resolved)


@contextlib.contextmanager
def _quiet_open_clip_weight_warnings() -> Iterator[None]:
    """Drop open_clip's "no pretrained weights loaded" root-logger warnings while building."""

    def keep(record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and "open_clip" in record.pathname
            and "weights" in record.getMessage()
        )

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_vision_tower(model_dir: Path) -> OpenClipTower:
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    visual, preprocess_cfg = create_visual(manifest["open_clip_config"], manifest["preprocess_cfg"])
    visual.load_state_dict(load_file(model_dir / VISION_WEIGHTS), strict=True)

    spec = manifest["projector"]
    if spec.get("type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"{model_dir / MANIFEST}: unsupported projector type {spec['type']!r}")
    projector = ProjectorMLP(spec["in_features"], spec["out_features"])
    projector.load_state_dict(load_file(model_dir / PROJECTOR_WEIGHTS), strict=True)

    revision = weights_revision([model_dir / VISION_WEIGHTS, model_dir / PROJECTOR_WEIGHTS])
    tower = OpenClipTower(
        visual, projector, preprocess_cfg, model_id=_model_id(model_dir, manifest), revision=revision
    )
    if manifest.get("num_patches", tower.num_patches) != tower.num_patches:
        raise ValueError(
            f"{model_dir / MANIFEST}: num_patches {manifest['num_patches']} but the config gives {tower.num_patches}"
        )
    return tower.float().eval()


def load_chat_tokenizer(model_dir: Path) -> ChatTokenizer:
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    lm_dir = _language_model_dir(model_dir, manifest)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    image_token = manifest.get("image_token", "<image>")
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"{lm_dir}: tokenizer has no {image_token!r} token")
    config = AutoConfig.from_pretrained(lm_dir, local_files_only=True)
    return ChatTokenizer(
        tokenizer=tokenizer,
        image_token=image_token,
        image_token_id=image_token_id,
        context_length=config.max_position_embeddings,
        model_id=_model_id(model_dir, manifest),
    )


def load_language_model(model_dir: Path) -> LanguageModelParts:
    model_dir = Path(model_dir)
    chat = load_chat_tokenizer(model_dir)
    lm_dir = _language_model_dir(model_dir, read_manifest(model_dir))
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32, local_files_only=True).eval()
    return LanguageModelParts.from_model(model, chat)


def _language_model_dir(model_dir: Path, manifest: dict[str, Any]) -> Path:
    return model_dir / manifest.get("language_model", "language_model")


def _model_id(model_dir: Path, manifest: dict[str, Any]) -> str:
    return manifest.get("model_id") or model_dir.resolve().name


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
