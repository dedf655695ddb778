"""The toy world: seeded scenes of coloured shapes on a 3x3 grid, their captions, questions and prompts.

A scene is a 64x64 RGB image with one to three shapes, each of a *different* shape kind (so "the
circle" is always unambiguous), each in its own cell of a 3x3 grid, on a neutral grey background
with an optional faint noise texture. Everything is a pure function of a seed:

    scene = sample_scene(random.Random(7))      # or make_scene("train", 7)
    image = render(scene)                       # PIL.Image, 64x64 RGB, same bytes every time
    caption(scene)                              # "a large red circle at the top-left and a small ..."
    questions(scene)                            # [QA(question, answer, qtype), ...]

Vocabulary (every word is in ``models.tokenizer_training``'s corpus):

- shapes ``SHAPES``: circle, square, triangle, diamond, cross
- colours ``COLOURS``: red, green, blue, yellow, purple, cyan (RGB in ``PALETTE``)
- sizes ``SIZES``: small, large
- positions ``POSITIONS``: top-left, top, top-right, left, center, right, bottom-left, bottom,
  bottom-right (one hyphenated word each, so every answer but "describe" is one word)

Splits: ``"train"``, ``"val"`` and ``"test"`` draw scenes from disjoint seed streams (the split name
is part of the seed), so held-out data never shares a random stream with training data.

Text-to-image uses single-object scenes (``single_object_scene``) and ``prompt_for(scene)``
("a red circle", optionally "a large red circle at the top-left"); ``t2i_items`` gives held-out
prompts with their ground truth, ``vqa_items`` held-out (image, question, answer, qtype) items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

IMAGE_SIZE = 64  # pixels per side
GRID = 3  # cells per side
CELL = IMAGE_SIZE / GRID  # 21.33 px
SUPERSAMPLE = 4  # render at 4x and box-downsample: exact anti-aliasing, deterministic

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 205, 30),
    "purple": (150, 60, 200),
    "cyan": (30, 200, 210),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SIZES: dict[str, float] = {"small": 6.0, "large": 8.5}  # "radius": half the side of the shape's box, px
POSITIONS: tuple[str, ...] = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)  # fmt: skip  # index = row * 3 + col
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three")
QTYPES: tuple[str, ...] = ("colour", "shape", "count", "exists", "position", "describe")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_JITTER = 1.5  # px a shape's centre may move off its cell centre (shapes never cross cells)
BACKGROUND_RANGE = (160, 240)  # grey level of the background
TEXTURE_LEVELS = (0, 0, 2, 4, 6)  # amplitude (+-) of the background's uniform noise, grey levels

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Obj:
    """One shape: kind, colour name, size name, grid cell (row, col) and sub-cell jitter in pixels."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    dx: float = 0.0
    dy: float = 0.0

    @property
    def cell(self) -> int:
        """Cell index 0..8, row-major."""
        return self.row * GRID + self.col

    @property
    def position(self) -> str:
        """Position name of the cell, e.g. "top-left"."""
        return POSITIONS[self.cell]

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) of the shape's box centre in pixels."""
        return ((self.col + 0.5) * CELL + self.dx, (self.row + 0.5) * CELL + self.dy)

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the shape's box in pixels (the shape touches all four sides)."""
        (x, y), r = self.center, self.radius
        return (x - r, y - r, x + r, y + r)

    def describe(self, with_size: bool = True, with_position: bool = True) -> str:
        words = ["a"] + ([self.size] if with_size else []) + [self.colour, self.shape]
        if with_position:
            words += ["at", "the", self.position]
        return " ".join(words)


@dataclass(frozen=True)
class Scene:
    """A whole image: its objects (sorted by cell), background grey level and noise texture."""

    objects: tuple[Obj, ...]
    background: int = 220
    texture: int = 0  # noise amplitude in grey levels (0 = plain background)
    texture_seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= GRID * GRID:
            raise ValueError(f"a scene has 1..9 objects, got {len(self.objects)}")
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {cells}")
        if cells != sorted(cells):
            raise ValueError("objects must be sorted by cell (use make_objects_order)")
        for o in self.objects:
            if o.shape not in SHAPES or o.colour not in PALETTE or o.size not in SIZES:
                raise ValueError(f"unknown shape/colour/size in {o}")
            if abs(o.dx) > MAX_JITTER or abs(o.dy) > MAX_JITTER:
                raise ValueError(f"jitter beyond {MAX_JITTER}px in {o}")

    def find(self, shape: str) -> Obj | None:
        """The object of kind ``shape``, or None (kinds are unique within a scene when sampled)."""
        return next((o for o in self.objects if o.shape == shape), None)

    def at(self, position: str) -> Obj | None:
        return next((o for o in self.objects if o.position == position), None)


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    qtype: str  # one of QTYPES


@dataclass(frozen=True)
class VQAItem:
    """A held-out visual question: the image, the question, the exact expected answer, its type."""

    image: Image.Image
    question: str
    answer: str
    qtype: str
    scene: Scene


@dataclass(frozen=True)
class T2IItem:
    """A held-out text-to-image prompt with its single object's ground truth."""

    prompt: str
    shape: str
    colour: str
    position: str | None  # None when the prompt does not name a position
    size: str | None  # None when the prompt does not name a size
    scene: Scene  # a reference rendering of the prompt (``render(scene)``)


# ---------------------------------------------------------------------------------------------
# Sampling


def scene_rng(split: str, seed: int, index: int, stream: str = "scene") -> random.Random:
    """The RNG of item ``index`` of a split; split and stream names in the seed keep streams disjoint."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return random.Random(
        f"triptych-toy/{stream}/{split}/{seed}/{index}"
    )  # str seeds hash with sha512: stable


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """A random scene: 1-3 objects of distinct shape kinds in distinct cells, random colours/sizes."""
    n = rng.randint(1, 3) if n_objects is None else n_objects
    if not 1 <= n <= len(SHAPES):
        raise ValueError(f"n_objects must be 1..{len(SHAPES)}, got {n}")
    shapes = rng.sample(SHAPES, n)
    cells = rng.sample(range(GRID * GRID), n)
    objects = [
        Obj(
            shape=shape,
            colour=rng.choice(COLOURS),
            size=rng.choice(tuple(SIZES)),
            row=cell // GRID,
            col=cell % GRID,
            dx=round(rng.uniform(-MAX_JITTER, MAX_JITTER), 2),
            dy=round(rng.uniform(-MAX_JITTER, MAX_JITTER), 2),
        )
        for shape, cell in zip(shapes, cells)
    ]
    return Scene(
        objects=tuple(sorted(objects, key=lambda o: o.cell)),
        background=rng.randint(*BACKGROUND_RANGE),
        texture=rng.choice(TEXTURE_LEVELS),
        texture_seed=rng.getrandbits(31),
    )


def single_object_scene(
    rng: random.Random,
    shape: str | None = None,
    colour: str | None = None,
    size: str | None = "large",
    position: str | None = "center",
    texture: bool = False,
) -> Scene:
    """A one-object scene for text-to-image; ``None`` for an attribute means "draw it at random".

    Defaults: a large shape at the center on a plain background (the easiest target to generate).
    """
    shape = rng.choice(SHAPES) if shape is None else shape
    colour = rng.choice(COLOURS) if colour is None else colour
    size = rng.choice(tuple(SIZES)) if size is None else size
    cell = rng.randrange(GRID * GRID) if position is None else POSITIONS.index(position)
    obj = Obj(
        shape, colour, size, cell // GRID, cell % GRID,
        dx=round(rng.uniform(-MAX_JITTER, MAX_JITTER), 2), dy=round(rng.uniform(-MAX_JITTER, MAX_JITTER), 2),
    )  # fmt: skip
    return Scene(
        objects=(obj,),
        background=rng.randint(*BACKGROUND_RANGE),
        texture=rng.choice(TEXTURE_LEVELS) if texture else 0,
        texture_seed=rng.getrandbits(31),
    )


def make_scene(split: Split, index: int, seed: int = 0) -> Scene:
    """Scene ``index`` of ``split`` (deterministic)."""
    return sample_scene(scene_rng(split, seed, index))


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape in its own box coordinates u, v in [-1, 1] (v down). Boolean array.

    The oracle fits these same templates to a detected object's bounding box.
    """
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex at the top middle, base along the bottom
        return (np.abs(u) <= (v + 1.0) / 2.0) & (v <= 1.0) & (v >= -1.0)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":  # a plus sign, arms one third of the box wide
        return ((np.abs(u) <= 1 / 3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 1 / 3) & (np.abs(u) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def coverage(obj: Obj) -> np.ndarray:
    """(64, 64) float32 in [0, 1]: fraction of each pixel the object covers (4x4 supersampled)."""
    n = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float64) + 0.5) / SUPERSAMPLE  # sub-pixel centres in pixel units
    (cx, cy), r = obj.center, obj.radius
    u = ((coords - cx) / r)[None, :]  # (1, n)
    v = ((coords - cy) / r)[:, None]  # (n, 1)
    inside = shape_mask(obj.shape, u, v).astype(np.float32)  # (n, n)
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))  # (64, 64)


def render_array(scene: Scene) -> np.ndarray:
    """(64, 64, 3) uint8 rendering of ``scene``."""
    img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), float(scene.background), dtype=np.float32)
    if scene.texture:
        noise = np.random.default_rng(scene.texture_seed).integers(
            -scene.texture, scene.texture + 1, size=(IMAGE_SIZE, IMAGE_SIZE, 1)
        )  # grey noise, same on all channels: stays neutral
        img += noise.astype(np.float32)
    for obj in scene.objects:
        a = coverage(obj)[..., None]  # (64, 64, 1)
        img = img * (1.0 - a) + np.asarray(PALETTE[obj.colour], dtype=np.float32) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene) -> Image.Image:
    """The scene as a 64x64 RGB PIL image (deterministic bytes)."""
    return Image.fromarray(render_array(scene), mode="RGB")


# ---------------------------------------------------------------------------------------------
# Text


def caption(scene: Scene) -> str:
    """Canonical caption, objects in reading order (row-major cells):

    "a large red circle at the top-left, a small blue square at the center and a large green cross
    at the bottom"
    """
    parts = [o.describe() for o in scene.objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def prompt_for(scene: Scene, with_position: bool = False, with_size: bool = False) -> str:
    """Text-to-image prompt for a single-object scene: "a red circle" (+ size / "at the top-left")."""
    if len(scene.objects) != 1:
        raise ValueError(f"prompt_for needs a single-object scene, got {len(scene.objects)} objects")
    return scene.objects[0].describe(with_size=with_size, with_position=with_position)


_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("what colour is the {shape}?", "what color is the {shape}?", "which colour is the {shape}?"),
    "shape": ("what shape is at the {position}?", "which shape is at the {position}?"),
    "count": ("how many shapes are there?", "how many objects are in the image?"),
    "exists": ("is there a {colour} {shape}?", "is there a {colour} {shape} in the image?"),
    "position": ("where is the {colour} {shape}?", "where is the {shape}?"),
    "describe": ("describe the image.", "describe the picture."),
}


def _negative(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A (colour, shape) pair absent from the scene; usually a near miss (right shape or colour)."""
    present = {(o.colour, o.shape) for o in scene.objects}
    obj = rng.choice(scene.objects)
    mode = rng.random()
    for _ in range(100):
        if mode < 0.4:  # same shape, other colour
            pair = (rng.choice(COLOURS), obj.shape)
        elif mode < 0.8:  # same colour, other shape
            pair = (obj.colour, rng.choice(SHAPES))
        else:
            pair = (rng.choice(COLOURS), rng.choice(SHAPES))
        if pair not in present:
            return pair
    raise AssertionError("no negative found")  # impossible: at most 3 of 30 pairs are present


def questions(scene: Scene, rng: random.Random | None = None) -> list[QA]:
    """Question/answer pairs for a scene, covering every qtype.

    Per object: colour, shape (by position) and position questions; per scene: one count, two
    exists (one yes, one no) and one describe. ``rng`` picks the phrasing and the negatives; by
    default it is seeded from the scene, so the list is deterministic.
    """
    if rng is None:
        rng = random.Random(f"qa/{scene!r}")  # the repr holds every field: stable across runs
    t = lambda qtype: rng.choice(_TEMPLATES[qtype])
    out: list[QA] = []
    for o in scene.objects:
        out.append(QA(t("colour").format(shape=o.shape), o.colour, "colour"))
        out.append(QA(t("shape").format(position=o.position), o.shape, "shape"))
        out.append(QA(t("position").format(colour=o.colour, shape=o.shape), o.position, "position"))
    out.append(QA(t("count"), NUMBERS[len(scene.objects)], "count"))
    o = rng.choice(scene.objects)
    out.append(QA(t("exists").format(colour=o.colour, shape=o.shape), "yes", "exists"))
    colour, shape = _negative(scene, rng)
    out.append(QA(t("exists").format(colour=colour, shape=shape), "no", "exists"))
    out.append(QA(t("describe"), caption(scene), "describe"))
    return out


# ---------------------------------------------------------------------------------------------
# Datasets


def dataset(split: Split, n: int, seed: int = 0) -> list[tuple[Scene, list[QA]]]:
    """``n`` scenes of ``split`` with their questions (scene i is ``make_scene(split, i, seed)``)."""
    return [(scene := make_scene(split, i, seed), questions(scene)) for i in range(n)]


def vqa_items(
    n: int = 500, split: Split = "test", seed: int = 0, qtypes: tuple[str, ...] = QTYPES
) -> list[VQAItem]:
    """``n`` held-out visual questions, qtypes balanced round-robin (each item from its own scene).

    Item i uses scene i of the split and a question of type ``qtypes[i % len(qtypes)]`` drawn from
    ``questions(scene)``. Deterministic for (n, split, seed, qtypes); a prefix of a longer list.
    """
    for q in qtypes:
        if q not in QTYPES:
            raise ValueError(f"unknown qtype {q!r}; expected some of {QTYPES}")
    items = []
    for i in range(n):
        scene = make_scene(split, i, seed)
        qtype = qtypes[i % len(qtypes)]
        rng = scene_rng(split, seed, i, stream="vqa")
        qa = rng.choice([qa for qa in questions(scene) if qa.qtype == qtype])
        items.append(VQAItem(render(scene), qa.question, qa.answer, qa.qtype, scene))
    return items


def t2i_items(
    n: int = 200,
    split: Split = "test",
    seed: int = 0,
    with_position: bool = False,
    with_size: bool = False,
) -> list[T2IItem]:
    """``n`` held-out text-to-image prompts, cycling through all 30 colour x shape pairs.

    With ``with_position`` the object sits in a random cell and the prompt names it; otherwise it is
    at the center. With ``with_size`` the size is random and named; otherwise it is "large".
    """
    pairs = [(c, s) for s in SHAPES for c in COLOURS]
    items = []
    for i in range(n):
        rng = scene_rng(split, seed, i, stream="t2i")  # its own stream, disjoint from the VQA scenes
        colour, shape = pairs[i % len(pairs)]
        scene = single_object_scene(
            rng, shape=shape, colour=colour,
            size=None if with_size else "large", position=None if with_position else "center",
        )  # fmt: skip
        obj = scene.objects[0]
        items.append(
            T2IItem(
                prompt=prompt_for(scene, with_position=with_position, with_size=with_size),
                shape=shape,
                colour=colour,
                position=obj.position if with_position else None,
                size=obj.size if with_size else None,
                scene=scene,
            )
        )
    return items
