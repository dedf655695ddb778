"""The toy world and the small models trained on it (shipped under ``toy/checkpoints/``).

- ``toy.world``: seeded scenes of coloured shapes, renders, captions, questions, prompts, datasets.
- ``toy.oracle``: grades answers (exact match) and images (from the pixels) against ground truth.
- ``toy.clip``: the toy CLIP (open_clip local-dir checkpoint ``toy-clip``), zero-shot scoring.
- ``toy.vlm``: the toy VLM (``open_clip_llava`` checkpoint ``toy-vlm``), answering and evaluation.
- ``python -m toy.train_clip`` / ``python -m toy.train_vlm``: the training commands.

Importing ``toy`` is cheap (no torch); the submodules import what they need.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
TOY_MODELS = ("toy-clip", "toy-vlm", "toy-sd")


def shipped_checkpoints() -> dict[str, Path]:
    """``{name: directory}`` of the toy checkpoints present under ``toy/checkpoints/``."""
    return {name: CHECKPOINTS / name for name in TOY_MODELS if (CHECKPOINTS / name).is_dir()}
