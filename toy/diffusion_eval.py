"""Grade a text-to-image checkpoint on held-out toy-world prompts with the oracle, per sampler setting.

Images are sampled through ``TextEncoderEngine`` + ``DenoiserEngine`` exactly as the server samples
them (same noise per seed, same samplers), then ``toy.oracle.grade_image`` judges each from its pixels::

    engine = load_toy_engine()                                     # toy/checkpoints/toy-sd: T2IEngines
    score = evaluate(engine, SamplerSetting("ddim", 50, 5.0), n=200)
    score.both, score.colour, score.shape                          # fractions in [0, 1]

``python -m toy.diffusion_eval [--sampler ddim --steps 50 ...]`` prints a table (default: the
settings of ``DEFAULT_SETTINGS``). Item ``i`` is ``world.t2i_items(n, split, ...)[i]`` sampled from
seed ``seed + i``, so a score is a pure function of (checkpoint, setting, n, split, seed, prompt form).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import CHECKPOINTS, world

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from denoisers import DenoiserEngine, TextEncoderEngine

TOY_SD_DIR = CHECKPOINTS / "toy-sd"
DEFAULT_GUIDANCE = 5.0  # the server's default guidance_scale (triptych.config.ImageDefaults)


@dataclass(frozen=True)
class SamplerSetting:
    """One way of sampling: sampler name, steps, classifier-free guidance scale, DeepCache interval."""

    sampler: str
    steps: int
    guidance_scale: float = DEFAULT_GUIDANCE
    cache_interval: int = 1

    def __str__(self) -> str:
        cache = f" cache{self.cache_interval}" if self.cache_interval != 1 else ""
        return f"{self.sampler}@{self.steps} g{self.guidance_scale:g}{cache}"

    def params(self, seed: int):
        """``ImageParams`` for one 64x64 image of this setting from ``seed``."""
        from triptych.types import ImageParams

        return ImageParams(
            width=world.IMAGE_SIZE, height=world.IMAGE_SIZE, steps=self.steps, sampler=self.sampler,
            guidance_scale=self.guidance_scale, seed=seed, n=1, cache_interval=self.cache_interval,
        )  # fmt: skip


# The reference (50-step DDIM) and the server's default (8-step DPM-Solver++ 2M).
DEFAULT_SETTINGS: tuple[SamplerSetting, ...] = (SamplerSetting("ddim", 50), SamplerSetting("dpmpp_2m", 8))


@dataclass(frozen=True)
class T2IScore:
    """Oracle accuracies of one setting over ``n`` prompts (fractions in [0, 1])."""

    setting: SamplerSetting
    n: int
    colour: float
    shape: float
    both: float  # colour and shape right: the headline number
    position: float | None  # None when the prompts name no position
    seconds: float  # wall time of denoising (not decoding, not grading)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "setting": str(self.setting)}


@dataclass(frozen=True)
class T2IEngines:
    """A text-to-image checkpoint loaded in one process: its text encoder and its denoiser."""

    text: TextEncoderEngine
    denoiser: DenoiserEngine


def load_toy_engine(model_dir: Path | str = TOY_SD_DIR, **options: Any) -> T2IEngines:
    """Both engines on the shipped (or another) toy checkpoint; ``options`` go to ``DenoiserEngine``."""
    from denoisers import DenoiserEngine, TextEncoderEngine

    return T2IEngines(
        TextEncoderEngine.from_pretrained(model_dir), DenoiserEngine.from_pretrained(model_dir, **options)
    )


def sample_latents(
    engine: T2IEngines,
    prompts: Sequence[str],
    setting: SamplerSetting,
    seed: int = 0,
    batch: int = 50,
) -> torch.Tensor:
    """(n, C, h, w) latents, one per prompt; prompt ``i`` is sampled from seed ``seed + i``, ``batch`` at a time."""
    import torch

    from denoisers import DenoiseJob

    uncond = engine.text.encode_prompt("", allow_empty=True)  # (T, D)
    latents: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch):
        jobs = [
            DenoiseJob(engine.text.encode_prompt(prompt), uncond, setting.params(seed + start + k))
            for k, prompt in enumerate(prompts[start : start + batch])
        ]
        latents += engine.denoiser.denoise_batch(jobs)  # per job (1, C, h, w)
    return torch.cat(latents)


def generate(
    engine: T2IEngines,
    prompts: Sequence[str],
    setting: SamplerSetting,
    seed: int = 0,
    batch: int = 50,
) -> list[Image.Image]:
    """One 64x64 image per prompt, as ``sample_latents`` samples them."""
    return engine.denoiser.decode(sample_latents(engine, prompts, setting, seed, batch))


def evaluate(
    engine: T2IEngines,
    setting: SamplerSetting,
    n: int = 200,
    split: world.Split = "test",
    seed: int = 0,
    with_position: bool = False,
    with_size: bool = False,
    items: Sequence[world.T2IItem] | None = None,
    batch: int = 50,
) -> T2IScore:
    """Sample the held-out prompts (``world.t2i_items``) with ``setting`` and grade them with the oracle."""
    from .oracle import grade_image

    if items is None:
        items = world.t2i_items(n, split=split, seed=seed, with_position=with_position, with_size=with_size)
    t0 = time.perf_counter()
    latents = sample_latents(engine, [item.prompt for item in items], setting, seed=seed, batch=batch)
    seconds = time.perf_counter() - t0
    images = engine.denoiser.decode(latents)
    grades = [grade_image(image, item) for image, item in zip(images, items)]
    named = [g.position_ok for g in grades if g.position_ok is not None]
    return T2IScore(
        setting=setting,
        n=len(items),
        colour=sum(g.colour_ok for g in grades) / len(grades),
        shape=sum(g.shape_ok for g in grades) / len(grades),
        both=sum(g.both for g in grades) / len(grades),
        position=sum(named) / len(named) if named else None,
        seconds=round(seconds, 2),
    )


def evaluate_settings(
    model_dir: Path | str, settings: Sequence[SamplerSetting] = DEFAULT_SETTINGS, n: int = 200, **kwargs: Any
) -> list[dict[str, Any]]:
    """Load ``model_dir`` once and ``evaluate`` every setting; prints and returns one dict per setting."""
    engine = load_toy_engine(model_dir)
    out = []
    for setting in settings:
        score = evaluate(engine, setting, n=n, **kwargs)
        print(format_score(score), flush=True)
        out.append(score.as_dict())
    return out


def format_score(score: T2IScore) -> str:
    pos = "" if score.position is None else f"  position {score.position:6.1%}"
    return (
        f"{score.setting!s:<18} n={score.n:<4} colour {score.colour:6.1%}  shape {score.shape:6.1%}  "
        f"both {score.both:6.1%}{pos}  ({score.seconds:.1f}s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=TOY_SD_DIR)
    parser.add_argument("--sampler", action="append", help="repeatable; pairs with --steps in order")
    parser.add_argument("--steps", type=int, action="append")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--split", default="test", choices=world.SPLITS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-position", action="store_true")
    parser.add_argument("--with-size", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.sampler:
        steps = args.steps or [50] * len(args.sampler)
        if len(steps) != len(args.sampler):
            parser.error("give one --steps per --sampler")
        settings = [SamplerSetting(s, k, args.guidance) for s, k in zip(args.sampler, steps)]
    else:
        settings = [SamplerSetting(s.sampler, s.steps, args.guidance) for s in DEFAULT_SETTINGS]
    evaluate_settings(
        args.model_dir, settings, n=args.n, split=args.split, seed=args.seed,
        with_position=args.with_position, with_size=args.with_size,
    )  # fmt: skip


if __name__ == "__main__":
    main()
