"""The toy world's oracle: grades answers against the ground truth and images from their pixels alone.

Answers: ``grade_answer(predicted, expected)`` is exact match after ``normalize_answer`` (case,
surrounding whitespace and punctuation, "color"/"centre" spellings, digits vs number words, "top
left" vs "top-left").

Images: ``detect_objects(image)`` finds the shapes in any 64x64 RGB image (a rendering or a
generated one) without knowing the scene: foreground = pixels whose chroma (max - min channel) is
high (the background is always neutral grey, every palette colour is saturated), split into
4-connected components; per component the colour is the palette colour nearest to the median of its
most saturated pixels, the shape is the template (``world.shape_mask``) with the best IoU when
fitted to the component's bounding box, the position is the grid cell of the box centre.
``grade_image(image, description)`` grades an image against a single-object description ("a red
circle", "a large red circle at the top-left", a ``T2IItem``, an ``Obj``) and returns an
``ImageGrade`` with ``colour_ok``, ``shape_ok``, ``position_ok`` and ``both``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .world import (
    CELL,
    COLOURS,
    GRID,
    IMAGE_SIZE,
    NUMBERS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    T2IItem,
    shape_mask,
)

CHROMA_THRESHOLD = 64  # max-min channel above this = foreground (background chroma is ~0)
MIN_AREA = 6  # components smaller than this (px) are noise
_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)  # (6, 3)

# ---------------------------------------------------------------------------------------------
# Answers

_DIGITS = {str(i): w for i, w in enumerate(NUMBERS)}
_SYNONYMS = {"color": "colour", "centre": "center", "middle": "center", "grey": "gray"}


def normalize_answer(text: str) -> str:
    """Lower-case, trim whitespace and end punctuation, unify spellings/number forms/position hyphens."""
    text = text.strip().lower()
    text = re.sub(r"\s+", " ", text).strip(" .!?,;:'\"")
    words = [_SYNONYMS.get(w, _DIGITS.get(w, w)) for w in text.split(" ")]
    text = " ".join(words)
    # "top left" / "top - left" -> "top-left" (positions are one hyphenated word)
    text = re.sub(r"\b(top|bottom)\s*-?\s*(left|right)\b", r"\1-\2", text)
    return text


def grade_answer(predicted: str, expected: str) -> bool:
    """Exact match after ``normalize_answer``."""
    return normalize_answer(predicted) == normalize_answer(expected)


# ---------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class Detection:
    """One shape found in an image."""

    shape: str
    colour: str
    position: str
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive pixel indices
    area: int  # pixels
    shape_iou: float  # IoU of the mask with the chosen shape template (1.0 = perfect)
    rgb: tuple[int, int, int]  # median colour of the component's saturated pixels

    @property
    def size(self) -> str:
        """Nearest size name by the box's half-side."""
        x0, y0, x1, y1 = self.bbox
        half = max(x1 - x0 + 1, y1 - y0 + 1) / 2
        return min(SIZES, key=lambda s: abs(SIZES[s] - half))


@dataclass(frozen=True)
class ImageGrade:
    """Verdict on one image against a single-object description."""

    colour_ok: bool
    shape_ok: bool
    position_ok: bool | None  # None when the description names no position
    detected: Detection | None  # the largest shape found, None if the image has none
    n_objects: int  # shapes found

    @property
    def both(self) -> bool:
        """Colour and shape right (position not required)."""
        return self.colour_ok and self.shape_ok

    @property
    def all_ok(self) -> bool:
        """Colour, shape and (if named) position right."""
        return self.both and self.position_ok is not False


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
        return np.asarray(image, dtype=np.uint8)
    arr = np.asarray(image)
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) array, got {arr.shape}")
    return arr.astype(np.uint8)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean (H, W) mask, as arrays of (y, x) pixel coordinates."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pixels = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(np.array(pixels, dtype=np.int64))  # (P, 2)
    return out


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Best-fitting shape for a boolean mask cropped to its bounding box, and its IoU."""
    h, w = mask.shape
    u = ((np.arange(w) + 0.5) / w * 2 - 1)[None, :]  # (1, w) in [-1, 1]
    v = ((np.arange(h) + 0.5) / h * 2 - 1)[:, None]  # (h, 1)
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        template = shape_mask(shape, u, v)  # (h, w)
        iou = float((template & mask).sum() / max(1, (template | mask).sum()))
        if iou > best_iou:
            best, best_iou = shape, iou
    return best, best_iou


def nearest_colour(rgb: np.ndarray) -> str:
    """Palette colour nearest (Euclidean RGB) to ``rgb``."""
    d = ((_PALETTE_RGB - np.asarray(rgb, dtype=np.float32)[None, :]) ** 2).sum(axis=1)  # (6,)
    return COLOURS[int(d.argmin())]


def cell_of(x: float, y: float) -> str:
    """Position name of the grid cell containing pixel coordinates (x, y)."""
    col = min(GRID - 1, max(0, int(x // CELL)))
    row = min(GRID - 1, max(0, int(y // CELL)))
    return POSITIONS[row * GRID + col]


def detect_objects(image: Image.Image | np.ndarray, min_area: int = MIN_AREA) -> list[Detection]:
    """All shapes in a 64x64 RGB image (other sizes are box-resized), largest first."""
    arr = _as_array(image).astype(np.int16)  # (64, 64, 3)
    chroma = arr.max(axis=2) - arr.min(axis=2)  # (64, 64)
    detections = []
    for pixels in _components(chroma > CHROMA_THRESHOLD):
        if len(pixels) < min_area:
            continue
        ys, xs = pixels[:, 0], pixels[:, 1]
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        crop = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
        crop[ys - y0, xs - x0] = True
        shape, iou = classify_shape(crop)
        c = chroma[ys, xs]
        core = c >= np.quantile(c, 0.5)  # the most saturated half: interior, not anti-aliased edges
        rgb = np.median(arr[ys[core], xs[core]].astype(np.float32), axis=0)  # (3,)
        detections.append(
            Detection(
                shape=shape,
                colour=nearest_colour(rgb),
                position=cell_of((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2),
                bbox=(x0, y0, x1, y1),
                area=len(pixels),
                shape_iou=round(iou, 4),
                rgb=tuple(round(float(v)) for v in rgb),
            )
        )
    return sorted(detections, key=lambda d: -d.area)


@dataclass(frozen=True)
class Description:
    """What a single-object description asks for; None = not specified."""

    shape: str
    colour: str
    position: str | None = None
    size: str | None = None


_POSITION_RE = "|".join(sorted((re.escape(p) for p in POSITIONS), key=len, reverse=True))


def parse_description(text: str) -> Description:
    """Parse "a [small|large] <colour> <shape> [at the <position>]" (after ``normalize_answer``)."""
    norm = normalize_answer(text)
    m = re.fullmatch(
        rf"(?:an? )?(?:(?P<size>{'|'.join(SIZES)}) )?(?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)})"
        rf"(?: (?:at|in) the (?P<position>{_POSITION_RE}))?",
        norm,
    )
    if m is None:
        raise ValueError(
            f"cannot parse description {text!r}; expected 'a [size] <colour> <shape> [at the <position>]' "
            f"with colours {COLOURS}, shapes {SHAPES}, positions {POSITIONS}"
        )
    return Description(m["shape"], m["colour"], m["position"], m["size"])


def _description(expected: str | Description | T2IItem | Obj) -> Description:
    if isinstance(expected, str):
        return parse_description(expected)
    if isinstance(expected, T2IItem):
        return Description(expected.shape, expected.colour, expected.position, expected.size)
    if isinstance(expected, Obj):
        return Description(expected.shape, expected.colour, expected.position, expected.size)
    return expected


def grade_image(image: Image.Image | np.ndarray, expected: str | Description | T2IItem | Obj) -> ImageGrade:
    """Grade an image against a single-object description from its pixels alone.

    The largest detected shape is judged: colour and shape must match; position too when the
    description names one. An image with no shape gets all False.
    """
    want = _description(expected)
    found = detect_objects(image)
    if not found:
        return ImageGrade(False, False, False if want.position else None, None, 0)
    d = found[0]
    return ImageGrade(
        colour_ok=d.colour == want.colour,
        shape_ok=d.shape == want.shape,
        position_ok=None if want.position is None else d.position == want.position,
        detected=d,
        n_objects=len(found),
    )
