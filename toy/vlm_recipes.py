"""Named training recipes of the toy VLM and the object-count curriculum they can use.

``python -m toy.train_vlm --recipe NAME`` takes a recipe's values as the defaults of its flags (a
flag given on the command line still wins), so every run that was measured is one command:

- ``shipped``: the flags' own defaults, what ``toy/checkpoints/toy-vlm`` was first trained with.
- ``curriculum``: one-object scenes first, then two, then the held-out mix of one to three
  (``--curriculum``); at most 6 turns per image, no question repeated within a chat (a repeat
  is answered by copying the earlier answer, which teaches nothing about the image); 75% of the
  chats put the image before the question, as the benchmark and the demo do; warm-up + cosine.
- ``curriculum-deep``: the same with a deeper LM (6 layers, 4 heads of width 32 instead of 8 of
  16): wider heads give the rotary attention more slowly turning dimensions to match a question
  word against visual tokens by content.

- ``curriculum-key-answer``: 1,500 more steps from ``curriculum``'s weights (``--init-from``) with
  ``--key-answer-loss``: the residual at the question's key word must name the answer through the
  LM's own head (the lookup's value path; its attention was already right).
- ``curriculum-relay``: 1,000 more steps from those with ``--relay-loss`` as well: a layer-2 head
  at the answer position is told to look at the key word (the hop that copies the answer out).
  The three commands ``--recipe curriculum``, ``--recipe curriculum-key-answer``,
  ``--recipe curriculum-relay`` reproduce the shipped weights.

The training scenes are the world's own (``world.sample_scene`` with a chosen object count); the
held-out set, its question balance and the oracle are untouched by any recipe.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from . import world

_CURRICULUM = {"curriculum": "1:0.08,2:0.3", "max_turns": 6, "distinct_turns": True, "image_first_fraction": 0.75,
               "eval_every": 250}  # fmt: skip

RUNS = Path(tempfile.gettempdir()) / "toy-vlm-runs"  # default --run-dir parent: RUNS / <recipe>
_FINE_TUNE = {**_CURRICULUM, "curriculum": "", "lr": 1e-3, "warmup_fraction": 0.02, "eval_every": 125}

RECIPES: dict[str, dict] = {
    "shipped": {},
    "curriculum": {**_CURRICULUM, "steps": 7000},
    "curriculum-deep": {**_CURRICULUM, "steps": 5000, "layers": 6, "heads": 4},
    "curriculum-key-answer": {**_FINE_TUNE, "steps": 1500, "key_answer_loss": 1.0, "init_from": RUNS / "curriculum"},
    "curriculum-relay": {**_FINE_TUNE, "steps": 1000, "key_answer_loss": 1.0, "relay_loss": 1.0,
                         "init_from": RUNS / "curriculum-key-answer"},
}


def parse_curriculum(spec: str) -> list[tuple[int, float]]:
    """``"1:0.08,2:0.3"`` -> [(1, 0.08), (2, 0.3)]: at most N objects until that fraction of the steps.

    After the last stage the scenes are the held-out mix (1..3 objects). An empty spec: no curriculum.
    """
    stages = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        n, _, until = part.partition(":")
        try:
            stage = (int(n), float(until))
        except ValueError:
            raise ValueError(f"--curriculum stage {part!r}: expected <max objects>:<fraction of steps>") from None
        if not 1 <= stage[0] <= 3 or not 0.0 < stage[1] <= 1.0:
            raise ValueError(f"--curriculum stage {part!r}: objects 1..3, fraction in (0, 1]")
        stages.append(stage)
    if [u for _, u in stages] != sorted(u for _, u in stages):
        raise ValueError(f"--curriculum {spec!r}: stage fractions must increase")
    return stages


def max_objects(stages: list[tuple[int, float]], progress: float) -> int | None:
    """Most objects per scene at ``progress`` (fraction of the steps done); None = the held-out mix."""
    return next((n for n, until in stages if progress < until), None)


def curriculum_scene(rng: random.Random, most: int | None) -> world.Scene:
    """A training scene with at most ``most`` objects, mostly exactly ``most`` (the new difficulty);
    ``None``: ``world.sample_scene``'s own mix of one to three."""
    if most is None:
        return world.sample_scene(rng)
    n = most if most == 1 or rng.random() < 0.7 else rng.randint(1, most - 1)
    return world.sample_scene(rng, n_objects=n)
