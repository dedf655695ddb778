"""The shipped toy text-to-image checkpoint (toy/checkpoints/toy-sd): loads through TextEncoderEngine and
DenoiserEngine, draws what the prompt asks for (graded by the oracle from the pixels), reproducibly."""

import io
import json

import pytest

from denoisers.samplers.base import MODEL_KEYS
from toy import world
from toy.diffusion_eval import TOY_SD_DIR, SamplerSetting, evaluate, generate, load_toy_engine
from toy.train_diffusion import SD_SCHEDULE
from triptych.types import ImageParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small UNet: per-op overhead dominates


@pytest.fixture(scope="module")
def engine():
    assert (TOY_SD_DIR / "model_index.json").is_file(), f"missing shipped checkpoint {TOY_SD_DIR}"
    return load_toy_engine(TOY_SD_DIR)  # T2IEngines: .text and .denoiser


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_shipped_checkpoint_is_a_stable_diffusion_directory(engine):
    index = json.loads((TOY_SD_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    # The scheduler records the noise schedule the UNet was trained on.
    denoiser = engine.denoiser
    assert {k: denoiser.scheduler_config[k] for k in MODEL_KEYS if k in SD_SCHEDULE} == SD_SCHEDULE
    assert denoiser.vae_scale_factor == 4 and denoiser.latent_channels == 4  # 16x16x4 latents (toy.train_diffusion)
    assert denoiser.vae.config.scaling_factor != 0.18215  # measured from the trained VAE's latents
    files = [p for p in TOY_SD_DIR.rglob("*") if p.is_file()]
    assert all(p.suffix != ".bin" for p in files)  # safetensors only
    assert sum(p.stat().st_size for p in files) < 12 * 2**20


def test_prompts_are_drawn_as_asked(engine):
    """8 held-out prompts over all 5 shapes and 6 colours at the server's default sampler setting.

    The benchmark measures the real accuracy on 200 prompts (see toy/checkpoints/toy-sd/training.json);
    this bound is loose enough to stay robust, tight enough to catch a broken model or loader.
    """
    items = world.t2i_items(40, split="test")[::5]  # 8 items; pairs cycle colour-fastest
    assert len({i.shape for i in items}) == 5 and len({i.colour for i in items}) >= 4
    score = evaluate(engine, SamplerSetting("dpmpp_2m", 8, 5.0), items=items, seed=0)
    assert score.both >= 0.6, score


def test_same_seed_gives_identical_png(engine):
    setting = SamplerSetting("ddim", 10, 5.0)
    first = generate(engine, ["a yellow triangle", "a large blue square at the top-left"], setting, seed=7)
    again = generate(engine, ["a yellow triangle", "a large blue square at the top-left"], setting, seed=7)
    assert [png_bytes(i) for i in first] == [png_bytes(i) for i in again]
    other = generate(engine, ["a yellow triangle"], setting, seed=8)
    assert png_bytes(other[0]) != png_bytes(first[0])


def test_engine_request_path(engine):
    """The path the server takes: encode_prompt -> denoise -> decode, n images from seed..seed+n-1."""
    params = ImageParams(width=64, height=64, steps=8, sampler="dpmpp_2m", guidance_scale=5.0, seed=3, n=2)
    cond, uncond = engine.text.encode_prompt("a red circle"), engine.text.encode_prompt("", allow_empty=True)
    images = engine.denoiser.decode(engine.denoiser.denoise(cond, uncond, params))
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert png_bytes(images[0]) != png_bytes(images[1])  # seeds 3 and 4
