"""DeepCache (``cache_interval``) on the tiny checkpoint: identity at 1, exact shallow path, full-UNet
call counts, closeness to no caching, batching and validation."""

import math
from dataclasses import replace

import pytest
import torch
from diffusers import StableDiffusionPipeline

from denoisers import DenoiseCancelled, DenoiseJob
from denoisers.deep_cache import DeepCacheUNet, cache_schedule, full_forward, shallow_forward
from denoisers.params import MAX_CACHE_INTERVAL
from denoisers.samplers import make_scheduler
from triptych.errors import RequestError
from triptych.types import ImageParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = ImageParams(width=64, height=64, steps=8, sampler="dpmpp_2m", guidance_scale=7.5, seed=0, n=2)


@pytest.fixture
def unet_inputs(engine, prompts):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(4, 4, 8, 8, generator=generator)  # (2B, C, h, w), CFG-sized
    context = torch.cat([prompts[1].expand(2, -1, -1), prompts[0].expand(2, -1, -1)])  # (2B, T, D)
    return x, context


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def full_unet_calls(engine):
    """Counts full UNet forwards (hooked on the UNet module and on its mid block, the deep path)."""
    counts = {"unet": 0, "mid_block": 0}

    def counter(name):
        def hook(module, args, output):
            counts[name] += 1

        return hook

    handles = [
        engine.unet.register_forward_hook(counter("unet")),
        engine.unet.mid_block.register_forward_hook(counter("mid_block")),
    ]
    yield counts
    for handle in handles:
        handle.remove()


# -- exactness -------------------------------------------------------------------------------------


def test_interval_one_is_the_plain_unet_bit_for_bit(engine, unet_inputs):
    x, context = unet_inputs
    cached = DeepCacheUNet(engine.unet, 1)
    with torch.inference_mode():
        for t in (999, 500, 1):
            expected = engine.unet(x, torch.tensor(t), encoder_hidden_states=context).sample
            assert torch.equal(cached(x, torch.tensor(t), context), expected)
    assert (cached.full_steps, cached.cached_steps) == (3, 0)


def test_interval_one_denoise_matches_the_diffusers_pipeline_bit_for_bit(engine, tiny_sd_dir, prompts):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("dpmpp_2m", pipe.scheduler.config)
    params = replace(BASE, n=1, steps=4, cache_interval=1)
    engine.denoise(*prompts, replace(params, cache_interval=3))  # installs DeepCache's (idle) hook first
    noise, _ = engine.initial_noise(params)
    expected = pipe(
        "a red circle",
        negative_prompt="",
        num_inference_steps=4,
        guidance_scale=7.5,
        latents=noise.clone(),
        output_type="latent",
    ).images
    assert torch.equal(engine.denoise(*prompts, params), expected)


def test_full_step_keeps_the_plain_output_and_the_shallow_path_reproduces_it(engine, unet_inputs):
    """Fed the deep feature of the same step, the cached path equals the full UNet exactly: it runs
    the same blocks in the same order, so caching changes only *which* deep feature is used."""
    x, context = unet_inputs
    t = torch.tensor(700)
    with torch.inference_mode():
        plain = engine.unet(x, t, encoder_hidden_states=context).sample
        out, deep = full_forward(engine.unet, x, t, context)
        assert torch.equal(out, plain)
        assert deep.shape == (4, engine.unet.config.block_out_channels[1], 8, 8)  # up_blocks[-2]'s output
        assert torch.equal(shallow_forward(engine.unet, x, t, context, deep), plain)
        # with a stale deep feature (from another timestep) the result is close but not equal
        _, stale = full_forward(engine.unet, x, torch.tensor(800), context)
        approx = shallow_forward(engine.unet, x, t, context, stale)
    assert not torch.equal(approx, plain) and relative_error(approx, plain) < 0.5


# -- how often the full UNet runs ------------------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 2, 3, 5])
def test_full_unet_runs_ceil_steps_over_interval_times(engine, prompts, full_unet_calls, interval):
    steps = 7
    engine.denoise(*prompts, replace(BASE, steps=steps, cache_interval=interval, sampler="ddim"))
    expected = math.ceil(steps / interval)
    assert full_unet_calls == {"unet": expected, "mid_block": expected}
    assert sum(cache_schedule(steps, interval)) == expected and cache_schedule(steps, interval)[0]


# -- quality -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "ddim"])
def test_cached_latents_stay_close_to_no_caching(engine, prompts, sampler):
    """Measured on this tiny model (8 steps, 2 images): interval 2 -> 2.8% (dpmpp_2m) / 2.2% (ddim)
    relative latent error against interval 1, interval 3 -> 3.6% / 2.9%; halving the steps instead
    (4 steps, the same 4 full UNet calls as interval 2) -> 5.2% / 4.6%."""
    params = replace(BASE, sampler=sampler)
    exact = engine.denoise(*prompts, params)
    errors = {
        k: relative_error(engine.denoise(*prompts, replace(params, cache_interval=k)), exact) for k in (2, 3)
    }
    assert 0 < errors[2] < 0.08 and 0 < errors[3] < 0.08
    half_steps = relative_error(engine.denoise(*prompts, replace(params, steps=4)), exact)
    assert errors[2] < half_steps  # same full-UNet budget: caching beats dropping steps


# -- batching, cancellation, validation --------------------------------------------------------------


def test_batched_jobs_share_the_interval(engine, prompts):
    cond, uncond = prompts
    params = replace(BASE, n=1, cache_interval=3)
    other = replace(params, seed=4, guidance_scale=3.0)
    first, second = engine.denoise_batch([DenoiseJob(cond, uncond, params), DenoiseJob(cond, uncond, other)])
    # as if alone, up to float rounding of the batched kernels
    torch.testing.assert_close(first, engine.denoise(cond, uncond, params), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(second, engine.denoise(cond, uncond, other), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="cache_interval"):
        engine.denoise_batch(
            [DenoiseJob(cond, uncond, params), DenoiseJob(cond, uncond, replace(params, cache_interval=2))]
        )


def test_cancellation_still_stops_within_one_step(engine, prompts):
    steps_seen: list[int] = []

    def on_step(done: int, total: int) -> bool:
        steps_seen.append(done)
        return done < 4

    with pytest.raises(DenoiseCancelled) as err:
        engine.denoise(*prompts, replace(BASE, steps=10, cache_interval=3), on_step)
    assert err.value.steps_run == 4 and steps_seen == [1, 2, 3, 4]


@pytest.mark.parametrize("value", [0, -1, MAX_CACHE_INTERVAL + 1, 2.5, True, "3"])
def test_invalid_cache_interval_names_the_field(engine, value):
    with pytest.raises(RequestError) as err:
        engine.validate(replace(BASE, cache_interval=value))
    assert err.value.field == "cache_interval" and f"1..{MAX_CACHE_INTERVAL}" in err.value.message


def test_valid_intervals_pass(engine):
    for value in (1, 2, MAX_CACHE_INTERVAL):
        engine.validate(replace(BASE, cache_interval=value))
    engine.validate(replace(BASE, steps=2, cache_interval=5))  # larger than steps: only step 0 is full
