"""Training data of the toy text-to-image model: single-object toy-world scenes and their prompts.

The prompt distribution mirrors ``world.t2i_items``: a prompt names colour and shape, and optionally
the size and/or the position; what it leaves out takes ``single_object_scene``'s defaults (large,
at the center). So "a red circle" is trained on -- and should generate -- a large red circle in
the middle cell, which is exactly what the held-out t2i items expect. Backgrounds are plain grey
(160..240), as in the reference renderings.

    images, prompts = render_training_set(n=8000, seed=0)   # (N, 64, 64, 3) uint8, N strings
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from . import world

# (with_size, with_position) -> share of the training prompts. The bare "a red circle" form is
# what the headline metric uses, so it gets the largest share.
PROMPT_FORMS: dict[tuple[bool, bool], float] = {
    (False, False): 0.4,
    (True, False): 0.15,
    (False, True): 0.2,
    (True, True): 0.25,
}


def training_scene(split: world.Split, seed: int, index: int) -> tuple[world.Scene, str]:
    """Training item ``index``: a single-object scene and its prompt (deterministic)."""
    rng = world.scene_rng(split, seed, index, stream="t2i-train")
    r, acc = rng.random(), 0.0
    forms = list(PROMPT_FORMS.items())
    with_size, with_position = forms[-1][0]
    for form, share in forms:
        acc += share
        if r < acc:
            with_size, with_position = form
            break
    scene = world.single_object_scene(
        rng, size=None if with_size else "large", position=None if with_position else "center"
    )
    return scene, world.prompt_for(scene, with_position=with_position, with_size=with_size)


def render_training_set(n: int, seed: int = 0, split: world.Split = "train") -> tuple[np.ndarray, list[str]]:
    """``n`` training items: (n, 64, 64, 3) uint8 renderings and their prompts."""
    images = np.empty((n, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), dtype=np.uint8)
    prompts = []
    for i in tqdm(range(n), desc="render", leave=False):
        scene, prompt = training_scene(split, seed, i)
        images[i] = world.render_array(scene)
        prompts.append(prompt)
    return images, prompts
