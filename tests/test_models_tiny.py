"""models.tiny: deterministic, reused, race-safe generation of the tiny checkpoints."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from models import tiny
from models.checkpoint_dir import MARKER, build_and_publish
from models.tiny import RECIPE_VERSION, TINY_HF_LLAVA, TINY_OPEN_CLIP_LLAVA, ensure_tiny_models


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return ensure_tiny_models(tmp_path_factory.mktemp("a"))


def test_layout(built):
    assert set(built) == {TINY_OPEN_CLIP_LLAVA, TINY_HF_LLAVA}
    oc = built[TINY_OPEN_CLIP_LLAVA]
    for name in ("triptych_model.json", "vision_tower.safetensors", "projector.safetensors",
                 "language_model/config.json", "language_model/model.safetensors",
                 "language_model/tokenizer.json"):  # fmt: skip
        assert (oc / name).is_file(), name
    manifest = json.loads((oc / "triptych_model.json").read_text())
    assert manifest["source"] == "open_clip_llava" and manifest["num_patches"] == 16
    hf = built[TINY_HF_LLAVA]
    assert json.loads((hf / "config.json").read_text())["model_type"] == "llava"
    assert (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").is_file()
    assert not [p for p in hf.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_deterministic_bytes(built, tmp_path):
    again = ensure_tiny_models(tmp_path)
    for name in built:
        first, second = tree(built[name]), tree(again[name])
        assert first.keys() == second.keys()
        assert [k for k in first if first[k] != second[k]] == []
        assert any(k.endswith(".safetensors") for k in first)


def test_reused_not_rebuilt(built):
    path = built[TINY_HF_LLAVA] / "model.safetensors"
    before = path.stat().st_mtime_ns
    assert ensure_tiny_models(built[TINY_HF_LLAVA].parent) == built
    assert path.stat().st_mtime_ns == before


def test_stale_recipe_is_rebuilt(built, tmp_path):
    root = tmp_path / "models"
    paths = ensure_tiny_models(root)
    marker = paths[TINY_OPEN_CLIP_LLAVA] / MARKER
    marker.write_text(json.dumps({"name": TINY_OPEN_CLIP_LLAVA, "recipe_version": -1}))
    (paths[TINY_OPEN_CLIP_LLAVA] / "leftover.txt").write_text("old")
    ensure_tiny_models(root)
    assert tree(paths[TINY_OPEN_CLIP_LLAVA]) == tree(built[TINY_OPEN_CLIP_LLAVA])
    assert sorted(p.name for p in root.iterdir()) == [TINY_HF_LLAVA, TINY_OPEN_CLIP_LLAVA]


def test_concurrent_builders(built, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(ensure_tiny_models, tmp_path) for _ in range(2)]]
    assert results[0] == results[1]
    for name in built:
        assert tree(results[0][name]) == tree(built[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == [TINY_HF_LLAVA, TINY_OPEN_CLIP_LLAVA]


def test_losing_a_race_to_another_process_is_fine(built, tmp_path):
    """Two builders that both missed the finished directory: the second rename fails, its copy is dropped."""
    build = tiny._BUILDERS[TINY_OPEN_CLIP_LLAVA]
    build_and_publish(tmp_path, TINY_OPEN_CLIP_LLAVA, build, RECIPE_VERSION)  # the other process wins
    winner = tree(tmp_path / TINY_OPEN_CLIP_LLAVA)
    build_and_publish(tmp_path, TINY_OPEN_CLIP_LLAVA, build, RECIPE_VERSION)  # we finish second
    assert tree(tmp_path / TINY_OPEN_CLIP_LLAVA) == winner == tree(built[TINY_OPEN_CLIP_LLAVA])
    assert [p.name for p in tmp_path.iterdir()] == [TINY_OPEN_CLIP_LLAVA]


def test_building_leaves_the_callers_rng_alone(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ensure_tiny_models(tmp_path)
    torch.testing.assert_close(torch.rand(3), expected)
