"""DenoiserEngine on the tiny checkpoint: prompts, reproducibility, pipeline parity, cancellation, limits."""

import io
from dataclasses import replace

import pytest
import torch
from diffusers import StableDiffusionPipeline

from denoisers import DenoiseCancelled, DenoiseJob, DenoiserEngine, validate_image_params
from denoisers.samplers import make_scheduler
from triptych.errors import RequestError
from triptych.types import ImageParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = ImageParams(width=64, height=64, steps=4, sampler="dpmpp_2m", guidance_scale=7.5, seed=0, n=1)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- text_encode -----------------------------------------------------------------------------------


def test_encode_prompt_shape_and_cache_identity(engine, tiny_sd_dir):
    emb = engine.encode_prompt("a red circle")
    assert emb.shape == (77, 32) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.equal(emb, engine.encode_prompt("a red circle"))
    assert not torch.equal(emb, engine.encode_prompt("a blue square"))
    assert engine.model_id == "tiny-sd"
    assert len(engine.revision) == 16 and len(engine.tokenizer_id) == 16
    other = DenoiserEngine.from_pretrained(tiny_sd_dir)
    assert (other.revision, other.tokenizer_id) == (engine.revision, engine.tokenizer_id)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_prompt_is_rejected(engine, text):
    with pytest.raises(RequestError) as err:
        engine.encode_prompt(text)
    assert err.value.field == "prompt"
    assert engine.encode_prompt(text, field="negative_prompt", allow_empty=True).shape == (77, 32)


def test_prompt_longer_than_the_text_encoder_is_rejected_not_truncated(engine):
    assert engine.max_prompt_tokens == 75
    assert engine.encode_prompt("a " * 75).shape == (77, 32)  # "a" is one token: exactly the limit
    with pytest.raises(RequestError) as err:
        engine.encode_prompt("a " * 76)
    assert err.value.field == "prompt"
    assert "76 tokens" in err.value.message and "at most 75" in err.value.message
    assert "not truncated" in err.value.message
    with pytest.raises(RequestError) as err:
        engine.encode_prompt("a " * 80, field="negative_prompt", allow_empty=True)
    assert err.value.field == "negative_prompt"


# -- denoise + decode ------------------------------------------------------------------------------


def test_same_seed_gives_identical_latents_and_pngs_across_engines(engine, tiny_sd_dir, prompts):
    params = replace(BASE, seed=1234, n=2)
    a = engine.denoise(*prompts, params)
    second = DenoiserEngine.from_pretrained(tiny_sd_dir)
    b = second.denoise(
        second.encode_prompt("a red circle"), second.encode_prompt("", allow_empty=True), params
    )
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
def test_matches_the_diffusers_pipeline_bit_for_bit(engine, tiny_sd_dir, sampler):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    params = replace(BASE, sampler=sampler, seed=3)
    noise, _ = engine.initial_noise(params)
    expected = pipe(
        "a red circle", negative_prompt="blurry", num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale, latents=noise.clone(), output_type="latent",
    ).images  # fmt: skip
    cond = engine.encode_prompt("a red circle")
    uncond = engine.encode_prompt("blurry", field="negative_prompt", allow_empty=True)
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
    assert engine.steps_run == 2
    assert (err.value.steps_run, err.value.total) == (2, 20)
    assert calls == [(1, 20), (2, 20)]


def test_on_step_returning_none_continues(engine, prompts):
    calls = []
    engine.denoise(*prompts, replace(BASE, steps=3), lambda done, total: calls.append(done))
    assert calls == [1, 2, 3] and engine.steps_run == 3


def test_batch_cancellation_is_per_job(engine, prompts):
    cond, uncond = prompts
    params = replace(BASE, steps=5)
    stop_at_2 = DenoiseJob(cond, uncond, params, on_step=lambda done, total: done < 2)
    keep_going = DenoiseJob(cond, uncond, replace(params, seed=7, n=2))
    cancelled, latents = engine.denoise_batch([stop_at_2, keep_going])
    assert isinstance(cancelled, DenoiseCancelled) and cancelled.steps_run == 2
    assert latents.shape == (2, 4, 8, 8) and engine.steps_run == 5
    engine.denoise_batch([stop_at_2, replace(keep_going, on_step=lambda done, total: False)])
    assert engine.steps_run == 2  # every job cancelled: the loop stops
    with pytest.raises(ValueError):
        engine.denoise_batch([stop_at_2, replace(keep_going, params=replace(params, steps=6))])


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
