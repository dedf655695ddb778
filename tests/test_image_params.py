"""validate_image_params, the one rule for text-to-image knobs (edge and engine), at its boundaries."""

from dataclasses import replace

import pytest

from denoisers.params import DEFAULT_MAX_SIZE, MAX_SEED, validate_image_params
from triptych.config import ImageDefaults
from triptych.errors import RequestError
from triptych.types import ImageParams

BASE = ImageParams(width=64, height=64, steps=4, sampler="dpmpp_2m", guidance_scale=5.0, seed=0, n=1)
NAN, INF = float("nan"), float("inf")


def test_the_default_max_size_is_the_configs():
    assert DEFAULT_MAX_SIZE == ImageDefaults().max_size


@pytest.mark.parametrize("change", [
    {"steps": 1}, {"steps": 150},
    {"width": 8, "height": 8}, {"width": 512, "height": 512},
    {"n": 1}, {"n": 8},
    {"guidance_scale": 0}, {"guidance_scale": 0.0}, {"guidance_scale": 1e6},
    {"seed": 0}, {"seed": MAX_SEED}, {"seed": MAX_SEED - 7, "n": 8},  # seeds seed..seed+n-1 fit int64
    {"cache_interval": 1}, {"cache_interval": 10},
])
def test_both_ends_are_accepted(change):
    validate_image_params(replace(BASE, **change))


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps: must be an integer in 1..150, got 0"),
    ({"steps": 151}, "steps: must be an integer in 1..150, got 151"),
    ({"steps": 4.0}, "steps: must be an integer in 1..150, got 4.0"),
    ({"steps": True}, "steps: must be an integer in 1..150, got True"),
    ({"width": 7}, "size: width and height must be multiples of 8 in 8..512, got 7x64"),
    ({"height": 520}, "size: width and height must be multiples of 8 in 8..512, got 64x520"),
    ({"width": 60}, "size: width and height must be multiples of 8 in 8..512, got 60x64"),
    ({"width": 0}, "size: width and height must be multiples of 8 in 8..512, got 0x64"),
    ({"n": 0}, "n: must be an integer in 1..8, got 0"),
    ({"n": 9}, "n: must be an integer in 1..8, got 9"),
    ({"guidance_scale": -1e-9}, "guidance_scale: must be a finite number >= 0, got -1e-09"),
    ({"guidance_scale": NAN}, "guidance_scale: must be a finite number >= 0, got nan"),
    ({"guidance_scale": INF}, "guidance_scale: must be a finite number >= 0, got inf"),
    ({"guidance_scale": "7"}, "guidance_scale: must be a finite number >= 0, got '7'"),
    ({"seed": -1}, f"seed: must be an integer in 0..{MAX_SEED} for n=1, got -1"),
    ({"seed": MAX_SEED + 1}, f"seed: must be an integer in 0..{MAX_SEED} for n=1, got {MAX_SEED + 1}"),
    ({"seed": MAX_SEED - 6, "n": 8}, f"seed: must be an integer in 0..{MAX_SEED - 7} for n=8, got {MAX_SEED - 6}"),
    ({"cache_interval": 0}, "cache_interval: must be an integer in 1..10 (1 = no feature caching), got 0"),
    ({"cache_interval": 11}, "cache_interval: must be an integer in 1..10 (1 = no feature caching), got 11"),
])
def test_just_outside_is_rejected_stating_the_rule(change, message):
    with pytest.raises(RequestError) as info:
        validate_image_params(replace(BASE, **change))
    assert str(info.value) == message


def test_limits_are_the_callers():
    validate_image_params(replace(BASE, width=1024, height=1024), max_size=1024)
    with pytest.raises(RequestError, match="in 8..256"):
        validate_image_params(replace(BASE, width=264), max_size=256)
    validate_image_params(replace(BASE, steps=500, sampler="ddim"), max_steps=500)
    with pytest.raises(RequestError, match="sampler 'lcm' supports at most"):
        validate_image_params(replace(BASE, steps=51, sampler="lcm"))


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(RequestError) as info:
        validate_image_params(replace(BASE, sampler="magic"))
    assert info.value.field == "sampler" and "dpmpp_2m" in info.value.message
