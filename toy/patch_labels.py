"""Per-patch ground truth of a toy scene, from the generator's own geometry (training-time only).

The toy VLM's vision tower sees a 64x64 image as an 8x8 grid of 8x8-pixel patches. Besides the
question/answer loss, ``toy.train_vlm`` supervises each patch token directly with what lies under it
(a dense auxiliary loss, as in detection-style pre-training): the colour, the shape and the grid cell
(top-left .. bottom-right) of the object covering most of the patch (or background), and whether an
object's centre falls in the patch (one such patch per object, which makes "how many shapes?" a
count of marked tokens). The cell matters because the LM cannot tell a token's place in the image
from its place in the sequence once a pruner has dropped tokens. Patch tokens that
carry their object this explicitly are what lets a small LM answer in a few minutes of training.
"""

from __future__ import annotations

import numpy as np

from . import world

PATCH = 8  # pixels per patch side (the toy CLIP's patch_size)
GRID = world.IMAGE_SIZE // PATCH  # 8 patches per side
MIN_COVERAGE = 0.15  # an object must cover this fraction of a patch to label it
BACKGROUND = 0  # label of "no object" in the colour and shape targets (classes are 1 + index)
N_COLOUR_CLASSES = 1 + len(world.COLOURS)
N_SHAPE_CLASSES = 1 + len(world.SHAPES)
N_CELL_CLASSES = 1 + len(world.POSITIONS)
N_TARGETS = 4  # colour, shape, cell, centre flag


def patch_coverage(obj: world.Obj) -> np.ndarray:
    """(64,) fraction of each patch (row-major) that ``obj`` covers."""
    pixels = world.coverage(obj)  # (64, 64) per-pixel coverage
    return pixels.reshape(GRID, PATCH, GRID, PATCH).mean(axis=(1, 3)).reshape(-1)  # (64,)


def patch_targets(scene: world.Scene) -> np.ndarray:
    """(4, 64) int64: per patch, colour, shape and cell class (0 = background) and centre flag (0/1)."""
    targets = np.zeros((N_TARGETS, GRID * GRID), dtype=np.int64)
    if not scene.objects:
        return targets
    coverage = np.stack([patch_coverage(o) for o in scene.objects])  # (n_obj, 64)
    owner = coverage.argmax(axis=0)  # (64,) object index covering most of each patch
    covered = coverage.max(axis=0) >= MIN_COVERAGE  # (64,)
    colours = np.array([1 + world.COLOURS.index(o.colour) for o in scene.objects])  # (n_obj,)
    shapes = np.array([1 + world.SHAPES.index(o.shape) for o in scene.objects])  # (n_obj,)
    cells = np.array([1 + o.cell for o in scene.objects])  # (n_obj,)
    targets[0] = np.where(covered, colours[owner], BACKGROUND)
    targets[1] = np.where(covered, shapes[owner], BACKGROUND)
    targets[2] = np.where(covered, cells[owner], BACKGROUND)
    for o in scene.objects:
        x, y = o.center
        col = min(GRID - 1, int(x // PATCH))
        row = min(GRID - 1, int(y // PATCH))
        targets[3, row * GRID + col] = 1
    return targets


def object_attention_target(targets: np.ndarray) -> np.ndarray:
    """(..., 64) float32: uniform over the patches an object covers (from (..., 4, 64) ``targets``).

    What the [CLS] token's attention is trained towards, so that attention-based pruners
    (``cls_attention``, ``visionzip``) keep the objects, as a real CLIP's [CLS] attention keeps the
    salient regions of a photo. All-background images get a uniform target.
    """
    on_object = (targets[..., 1, :] != BACKGROUND).astype(np.float32)  # (..., 64)
    on_object = np.where(on_object.sum(axis=-1, keepdims=True) > 0, on_object, 1.0)
    return on_object / on_object.sum(axis=-1, keepdims=True)
