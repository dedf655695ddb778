"""DenoiserEngine on the tiny checkpoint: loading, reproducibility, pipeline parity, batching, cancellation, limits.

Prompt embeddings come from TextEncoderEngine (``prompts`` / ``text_engine`` in conftest.py)."""

import io
import shutil
from dataclasses import replace

import pytest
import torch
from diffusers import StableDiffusionPipeline

from denoisers import DenoiseCancelled, DenoiseJob, DenoiserEngine, batch_key, validate_image_params
from denoisers.samplers import make_scheduler
from triptych.errors import RequestError
from triptych.types import ImageParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = ImageParams(width=64, height=64, steps=4, sampler="dpmpp_2m", guidance_scale=7.5, seed=0, n=1)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- denoise + decode ------------------------------------------------------------------------------


def test_loads_without_the_text_encoder_and_tokenizer(engine, tiny_sd_dir, tmp_path, prompts):
    """UNet, VAE and scheduler config are all the denoiser reads: the other folders may be absent."""
    only = tmp_path / "tiny-sd"
    for sub in ("unet", "vae", "scheduler"):
        shutil.copytree(tiny_sd_dir / sub, only / sub)
    alone = DenoiserEngine.from_pretrained(only)
    assert not hasattr(alone, "text_encoder") and alone.scheduler_config == engine.scheduler_config
    assert torch.equal(alone.denoise(*prompts, BASE), engine.denoise(*prompts, BASE))


def test_unknown_scheduler_class_names_the_file_and_key(tiny_sd_dir, tmp_path):
    broken = tmp_path / "tiny-sd"
    shutil.copytree(tiny_sd_dir, broken)
    config = broken / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"PNDMScheduler"', '"NoSuchScheduler"'))
    with pytest.raises(ValueError, match=r"scheduler_config\.json: _class_name 'NoSuchScheduler'"):
        DenoiserEngine.from_pretrained(broken)


def test_same_seed_gives_identical_latents_and_pngs_across_engines(engine, tiny_sd_dir, prompts):
    params = replace(BASE, seed=1234, n=2)
    a = engine.denoise(*prompts, params)
    second = DenoiserEngine.from_pretrained(tiny_sd_dir)
    b = second.denoise(*prompts, params)
    assert a.shape == (2, 4, 8, 8)
    assert torch.equal(a, b)
    assert [png_bytes(i) for i in engine.decode(a)] == [png_bytes(i) for i in second.decode(b)]


def test_seeds_pick_the_images(engine, prompts):
    pair = engine.denoise(*prompts, replace(BASE, seed=10, n=2))
    assert not torch.allclose(pair[0], pair[1])
    alone = engine.denoise(*prompts, replace(BASE, seed=11))
    # image i of a request starts from seed + i; batching changes only float rounding
    torch.testing.assert_close(pair[1:], alone, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_matches_the_diffusers_pipeline_bit_for_bit(engine, text_engine, tiny_sd_dir, sampler):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    params = replace(BASE, sampler=sampler, seed=3)
    noise, _ = engine.initial_noise(params)
    expected = pipe(
        "a red circle", negative_prompt="blurry", num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale, latents=noise.clone(), output_type="latent",
    ).images  # fmt: skip
    cond = text_engine.encode_prompt("a red circle")
    uncond = text_engine.encode_prompt("blurry", field="negative_prompt", allow_empty=True)
    assert torch.equal(engine.denoise(cond, uncond, params), expected)


def test_guidance_one_uses_the_conditional_prediction_only(engine, prompts):
    cond, uncond = prompts
    params = replace(BASE, guidance_scale=1.0)
    assert torch.equal(
        engine.denoise(cond, uncond, params), engine.denoise(cond, torch.randn_like(uncond), params)
    )


def test_decode_gives_rgb_images_of_the_requested_size(engine, prompts):
    latents = engine.denoise(*prompts, replace(BASE, width=48, height=32, n=2))
    assert latents.shape == (2, 4, 4, 6)  # (n, C, height / 8, width / 8)
    images = engine.decode(latents)
    assert [(i.mode, i.size) for i in images] == [("RGB", (48, 32))] * 2


# -- cancellation ----------------------------------------------------------------------------------


def test_on_step_false_stops_the_loop_within_one_step(engine, prompts):
    calls = []

    def on_step(done, total):
        calls.append((done, total))
        return done < 2

    with pytest.raises(DenoiseCancelled) as err:
        engine.denoise(*prompts, replace(BASE, steps=20), on_step)
    assert (err.value.steps_run, err.value.total) == (2, 20)
    assert calls == [(1, 20), (2, 20)]


def test_on_step_returning_none_continues(engine, prompts):
    calls = []
    engine.denoise(*prompts, replace(BASE, steps=3), lambda done, total: calls.append(done))
    assert calls == [1, 2, 3]


def recording(seen: list[int], stop_after: int | None = None):
    """An on_step that records the steps it saw and cancels after ``stop_after`` (None: never)."""

    def on_step(done: int, total: int) -> bool:
        seen.append(done)
        return stop_after is None or done < stop_after

    return on_step


def test_batch_cancellation_is_per_job(engine, prompts):
    cond, uncond = prompts
    params = replace(BASE, steps=5)
    seen_a, seen_b = [], []
    stop_at_2 = DenoiseJob(cond, uncond, params, on_step=recording(seen_a, 2))
    keep_going = DenoiseJob(cond, uncond, replace(params, seed=7, n=2), on_step=recording(seen_b))
    cancelled, latents = engine.denoise_batch([stop_at_2, keep_going])
    assert isinstance(cancelled, DenoiseCancelled) and cancelled.steps_run == 2
    assert latents.shape == (2, 4, 8, 8)
    assert (seen_a, seen_b) == ([1, 2], [1, 2, 3, 4, 5])  # a cancelled job is not asked again

    unet_calls = []
    hook = engine.unet.register_forward_hook(lambda *_: unet_calls.append(1))
    try:
        both = engine.denoise_batch([stop_at_2, replace(keep_going, on_step=lambda done, total: False)])
    finally:
        hook.remove()
    assert [c.steps_run for c in both] == [2, 1]
    assert len(unet_calls) == 2  # every job cancelled after step 2: the loop stops there


@pytest.mark.parametrize(
    "change", [{"width": 32}, {"height": 32}, {"steps": 6}, {"sampler": "ddim"}, {"cache_interval": 2}]
)
def test_jobs_batch_together_only_when_their_batch_key_agrees(engine, prompts, change):
    cond, uncond = prompts
    other = replace(BASE, **change)
    assert batch_key(other) != batch_key(BASE)
    with pytest.raises(ValueError, match="share"):
        engine.denoise_batch([DenoiseJob(cond, uncond, BASE), DenoiseJob(cond, uncond, other)])
    free = replace(BASE, seed=9, n=2, guidance_scale=3.0)  # seeds, n and guidance may differ
    assert batch_key(free) == batch_key(BASE)
    assert len(engine.denoise_batch([DenoiseJob(cond, uncond, BASE), DenoiseJob(cond, uncond, free)])) == 2


# -- validation ------------------------------------------------------------------------------------

INVALID = [
    ("steps", {"steps": 0}),
    ("steps", {"steps": 151}),
    ("steps", {"steps": 2.5}),
    ("steps", {"sampler": "lcm", "steps": 51}),
    ("size", {"width": 60}),
    ("size", {"height": 520}),
    ("size", {"width": 0}),
    ("size", {"width": 1024, "height": 1024}),
    ("n", {"n": 0}),
    ("n", {"n": 9}),
    ("guidance_scale", {"guidance_scale": -0.5}),
    ("guidance_scale", {"guidance_scale": float("nan")}),
    ("sampler", {"sampler": "k_lms"}),
    ("seed", {"seed": -1}),
    ("cache_interval", {"cache_interval": 0}),
    ("cache_interval", {"cache_interval": 11}),
]


@pytest.mark.parametrize(("field", "change"), INVALID, ids=[f"{f}-{c}" for f, c in INVALID])
def test_invalid_params_name_their_field(engine, prompts, field, change):
    params = replace(BASE, **change)
    with pytest.raises(RequestError) as err:
        engine.validate(params)
    assert err.value.field == field
    with pytest.raises(RequestError):
        engine.denoise(*prompts, params)


def test_valid_edges_pass(engine):
    for change in ({"steps": 1}, {"steps": 150}, {"width": 8, "height": 512}, {"n": 8},
                   {"guidance_scale": 0.0}, {"sampler": "lcm", "steps": 50}):  # fmt: skip
        engine.validate(replace(BASE, **change))
    validate_image_params(replace(BASE, width=1024, height=1024), max_size=1024)  # the max is configurable
